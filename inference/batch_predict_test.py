"""batch_predict's check before the job reads a CSV header as the job does
(prediction.read_csv, both by formats.csv_rules)."""

import bz2
import gzip

import pytest

from tfx_e2e.formats import csv_rules
from tfx_e2e.inference import batch_predict
from tfx_e2e.inference import prediction

# pylint: disable=protected-access
_csv_header = batch_predict._csv_header
_HEADER_BYTES = batch_predict._HEADER_BYTES

FILES = {
    'plain.csv': b'a,b,c\n1,2,3\n',
    'crlf.csv': b'a,b,c\r\n1,2,3\r\n',
    'cr.csv': b'a;b;c\r1;2;3\r',
    'bom.csv': b'\xef\xbb\xbfa,b,c\n1,2,3\n',
    # More semicolons than commas on the header, but only commas split the
    # next lines as the header: detected on the first lines, not the header
    # alone.
    'detected.csv': b'x;y;z,w\n1,2\n3,4\n',
    'quoted.csv': b'"a,1",b,"c ""x"""\n1,2,3\n',
    'tab.csv': b'a\tb\tc\n1\t2\t3\n',
    'header-only.csv': b'a,b,c',
    'empty.csv': b'',
}


@pytest.mark.parametrize('name', sorted(FILES))
def test_the_header_is_the_one_the_job_reads(tmp_path, name):
  path = tmp_path / name
  path.write_bytes(FILES[name])
  expected = prediction.read_csv(FILES[name]).header
  assert _csv_header(str(path)) == expected


def test_a_configured_delimiter_wins(tmp_path):
  path = tmp_path / 'a.csv'
  path.write_bytes(b'a,b;c\n1,2;3\n')
  assert _csv_header(str(path), ';') == ['a,b', 'c']
  assert prediction.read_csv(path.read_bytes(), csv_rules.CsvRules(
      delimiter=';')).header == ['a,b', 'c']


@pytest.mark.parametrize('compress, suffix', [(gzip.compress, '.gz'),
                                              (bz2.compress, '.bz2')])
def test_compressed_files(tmp_path, compress, suffix):
  path = tmp_path / f'a.csv{suffix}'
  path.write_bytes(compress(b'a;b\n1;2\n'))
  assert _csv_header(str(path)) == ['a', 'b']


def test_what_cannot_be_told_before_the_job_is_none(tmp_path):
  latin1 = tmp_path / 'latin1.csv'
  latin1.write_bytes('caf\xe9,b\n1,2\n'.encode('latin-1'))
  long = tmp_path / 'long.csv'
  # (Short names: a cut header line, not a name too long for csv.)
  long.write_bytes(b'a,' * (_HEADER_BYTES // 2 + 10) + b'b\n1,2\n')
  assert _csv_header(str(latin1)) is None
  assert _csv_header(str(long)) is None


def test_a_long_file_is_read_only_to_its_first_lines(tmp_path):
  path = tmp_path / 'big.csv'
  row = b'1,2,3\n'
  path.write_bytes(b'a,b,c\n' + row * (_HEADER_BYTES // len(row) + 5))
  assert _csv_header(str(path)) == ['a', 'b', 'c']
