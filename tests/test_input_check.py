"""The data gate: rows without a usable label, and input it names as bad."""

import os

import pytest

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
