"""The data gate: rows without a usable label, input it names as bad, and
the normalized copy's cache key (one file, two labels, two copies: the rows
a copy drops depend on the label, so a run with another label reusing the
first label's copy would train on the wrong rows)."""

import csv
import os

import pytest

from tfx_e2e.pipeline import input_check
from tfx_e2e.pipeline.config import DataConfig, PipelineConfig
from tfx_e2e.pipeline.input_check import InputError, prepare_input
from tfx_e2e.pipeline.input_check import check_input as _check_input


def check_input(config):
  """The gate's report, with its copy written as a run does."""
  report = _check_input(config)
  prepare_input(config, report)
  return report
from tests.conftest import read_csv, write_csv


def _config(tmp_path, data):
  return PipelineConfig(output_dir=str(tmp_path / 'out'), data=DataConfig(
      path=str(data), label='fare', exclude_features=[],
      categorical_features=[], slice_features=[]))


def test_rows_without_a_usable_label_are_dropped_and_counted(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['miles', 'fare'], [
      ['1', '5'], ['2', ''], ['3', 'nan'], ['4', '1e999'], ['5', '7.5']])
  report = check_input(_config(tmp_path, data))
  assert report.rows == 5
  assert report.dropped_rows == 3
  assert report.dropped_examples == [
      'd.csv:3 (missing label)', "d.csv:4 (missing label 'nan')",
      "d.csv:5 (non-finite label '1e999')"]
  header, rows = read_csv(report.path)
  assert header == ['miles', 'fare']
  assert rows == [['1', '5'], ['5', '7.5']]

  # The same input maps to the same file, untouched: ExampleGen's cache holds.
  mtime = os.stat(report.path).st_mtime_ns
  again = check_input(_config(tmp_path, data))
  assert again.path == report.path
  assert os.stat(again.path).st_mtime_ns == mtime


def test_clean_input_is_read_in_place(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['miles', 'fare'], [['1', '5']])
  report = check_input(_config(tmp_path, data))
  assert report.path == str(data) and report.dropped_rows == 0


def test_a_directory_of_csv_files(tmp_path):
  write_csv(tmp_path / 'in' / 'a.csv', ['miles', 'fare'], [['1', '5']])
  write_csv(tmp_path / 'in' / 'b.csv', ['miles', 'fare'], [['2', ''], ['3', '6']])
  report = check_input(_config(tmp_path, tmp_path / 'in'))
  assert report.rows == 3 and report.dropped_rows == 1
  _, rows = read_csv(report.path)
  assert rows == [['1', '5'], ['3', '6']]


def test_invalid_utf8_is_named_by_its_line_far_into_a_streamed_file(tmp_path):
  """The gate streams its input; the text reader decodes ahead of the line
  it yields, and the error must still name the right line."""
  data = tmp_path / 'd.csv'
  lines = [b'miles,fare'] + [b'%d,5' % i for i in range(20_000)]
  lines[15_000] = b'\xff,5'  # file line 15,001
  data.write_bytes(b'\n'.join(lines) + b'\n')
  with pytest.raises(InputError,
                     match=r'd\.csv:15001: not valid UTF-8 text \(byte 0xff\)'):
    check_input(_config(tmp_path, data))


HEADER = ['miles', 'fare', 'tips']
ROWS = [
    ['1', '5', '0'],
    ['2', '', '1'],     # no fare
    ['3', '7', 'NA'],   # no tips
    ['4', '9', '2'],
    ['5', 'nan', ''],   # neither
    ['6', '11', '3'],
]


def _prepared(tmp_path, label):
  """(report, path CsvExampleGen reads) for `label`, as a run prepares them."""
  config = PipelineConfig(output_dir=str(tmp_path / 'out'), data=DataConfig(
      path=str(tmp_path / 'd.csv'), label=label, exclude_features=[],
      categorical_features=[], slice_features=[]))
  report = input_check.check_input(config)
  return report, input_check.prepare_input(config, report)


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.reader(f))


def test_two_labels_of_one_file_get_two_copies_and_each_is_reused(tmp_path):
  with open(tmp_path / 'd.csv', 'w', newline='') as f:
    csv.writer(f).writerows([HEADER, *ROWS])

  fare, fare_path = _prepared(tmp_path, 'fare')
  tips, tips_path = _prepared(tmp_path, 'tips')
  assert fare.key != tips.key
  assert fare_path == str(tmp_path / 'out' / 'input' / fare.key / 'data.csv')
  assert tips_path == str(tmp_path / 'out' / 'input' / tips.key / 'data.csv')
  # Each copy drops the rows without its own label (missing markers in the
  # rows kept are written empty).
  assert _rows(fare_path) == [HEADER, ['1', '5', '0'], ['3', '7', ''],
                              ['4', '9', '2'], ['6', '11', '3']]
  assert _rows(tips_path) == [HEADER, ['1', '5', '0'], ['2', '', '1'],
                              ['4', '9', '2'], ['6', '11', '3']]
  assert sorted(os.listdir(tmp_path / 'out' / 'input')) == sorted(
      [fare.key, tips.key])

  # The first label again: its copy, as it was, not rewritten (the same
  # file keeps ExampleGen's cache valid).
  before = os.stat(fare_path)
  again, again_path = _prepared(tmp_path, 'fare')
  assert (again.key, again_path) == (fare.key, fare_path)
  after = os.stat(again_path)
  assert (after.st_ino, after.st_mtime_ns) == (before.st_ino,
                                               before.st_mtime_ns)
  assert _rows(again_path) == _rows(fare_path)
  assert sorted(os.listdir(tmp_path / 'out' / 'input')) == sorted(
      [fare.key, tips.key])
