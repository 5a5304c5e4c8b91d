"""`tfx-e2e predict` over a glob in which some files cannot be read as CSV:
each such file is one dead letter naming it and why, and the job goes on
to predict every row of the good files."""

from pathlib import Path

import pytest

from tests.conftest import (dead_letters_written, predictions_written,
                            read_csv, run_cli, write_csv)

pytestmark = pytest.mark.e2e

GOOD_ROWS = 50
RAGGED_GOOD_ROWS = 10


@pytest.fixture(scope='module')
def job(taxi_sample, taxi_pushed_model, tmp_path_factory):
  header, rows = read_csv(taxi_sample)
  work = tmp_path_factory.mktemp('predict-bad-files')
  inputs = work / 'in'
  write_csv(inputs / 'good.csv', header, rows[:GOOD_ROWS])
  # Rows as they would be written on a latin-1 system: 'è' is one byte,
  # 0xe8, not UTF-8.
  text = Path(write_csv(inputs / 'latin1.csv', header,
                        rows[100:105])).read_text()
  assert 'Cash' in text
  (inputs / 'latin1.csv').write_bytes(
      text.replace('Cash', 'Espèces', 1).encode('latin-1'))
  assert b'\xe8' not in (inputs / 'latin1.csv').read_bytes()[:len(
      ','.join(header))]  # the header itself is ASCII: the job finds it
  # A binary file that matched the glob (a PNG named .csv).
  (inputs / 'image.csv').write_bytes(
      b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 8)
  # UTF-8, but a header line the CSV reader refuses.
  (inputs / 'nul.csv').write_bytes(
      (','.join(header[:3]) + '\x00,' + ','.join(header[3:]) + '\n' +
       ','.join(rows[0]) + '\n').encode())
  # Row-level problems, for contrast: the file's other rows are predicted.
  write_csv(inputs / 'ragged.csv', header,
            rows[200:200 + RAGGED_GOOD_ROWS] + [['1', '2'], rows[0] + ['x']])
  result = run_cli(['predict', '--input', str(inputs / '*.csv'),
                    '--output-prefix', str(work / 'out' / 'pred'),
                    '--model', str(taxi_pushed_model)])
  return result, work


def test_each_unreadable_file_is_one_dead_letter_and_good_files_are_predicted(
    job):
  result, work = job
  assert result.exit_code == 0, result.stderr
  # Read: every row of the readable files, and one record per unreadable
  # file (it has no rows to count).
  read = GOOD_ROWS + RAGGED_GOOD_ROWS + 2 + 3
  assert (f'Rows read: {read}; predicted: {GOOD_ROWS + RAGGED_GOOD_ROWS}; '
          'dead-lettered: 5') in result.stdout

  keys = sorted(p['key'] for p in predictions_written(work))
  inputs = work / 'in'
  assert keys == sorted(
      [f'{inputs / "good.csv"}:{n}' for n in range(2, 2 + GOOD_ROWS)] +
      [f'{inputs / "ragged.csv"}:{n}'
       for n in range(2, 2 + RAGGED_GOOD_ROWS)])

  dead = sorted(dead_letters_written(work), key=lambda d: (d['file'], d['line']))
  assert [(Path(d['file']).name, d['line']) for d in dead] == [
      ('image.csv', 1), ('latin1.csv', 1), ('nul.csv', 1),
      ('ragged.csv', 2 + RAGGED_GOOD_ROWS),
      ('ragged.csv', 3 + RAGGED_GOOD_ROWS)]
  assert all(d['file'] == str(inputs / Path(d['file']).name) for d in dead)
  by_file = {Path(d['file']).name: d for d in dead[:3]}
  assert by_file['image.csv']['error'].startswith('not UTF-8 text')
  assert by_file['latin1.csv']['error'].startswith('not UTF-8 text')
  assert '0xe8' in by_file['latin1.csv']['error']
  assert by_file['nul.csv']['error'].startswith('malformed CSV header')
  assert [d['error'] for d in dead[3:]] == [
      '2 fields, but the header has 18', '19 fields, but the header has 18']
