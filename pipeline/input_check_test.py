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


# The gate inside CsvExampleGen's executor (`screen`), as a compiled
# Kubeflow pipeline runs it: settings from `example_gen_settings`.

import json  # pylint: disable=wrong-import-position,wrong-import-order
from pathlib import Path  # pylint: disable=wrong-import-position,wrong-import-order

def _settings(label='fare', input_digest='', **data):
  config = PipelineConfig(output_dir='/compiled/elsewhere', data=DataConfig(
      path='/compiled/elsewhere/d.csv', label=label,
      **dict(dict(exclude_features=[], categorical_features=[],
                  slice_features=[]), **data)))
  return input_check.example_gen_settings(config, 'code-digest',
                                          input_digest)


def _screen(settings, data, work):
  """`screen` on the file `data` as the pipeline names it (its folder and
  its name as the pattern)."""
  return input_check.screen(settings, str(data.parent), data.name,
                            str(work))


def test_screen_settings_carry_no_paths():
  settings = json.loads(_settings(schema='/compiled/elsewhere/s.pbtxt'))
  assert settings[input_check.DATA_SETTINGS]['path'] == ''
  assert settings[input_check.DATA_SETTINGS]['schema'] is None
  assert settings[input_check.DATA_SETTINGS]['label'] == 'fare'
  assert settings[input_check.CODE] == 'code-digest'
  assert not settings.get(input_check.SCREENED_INPUT)
  # Checked already: the digest, and no data settings (none to screen by).
  checked = json.loads(_settings(input_digest='abc'))
  assert checked[input_check.SCREENED_INPUT] == 'abc'
  assert input_check.DATA_SETTINGS not in checked


def test_screen_reads_a_clean_input_in_place(tmp_path):
  data = write_csv(tmp_path / 'in' / 'd.csv', ['miles', 'fare'],
                   [['1', '5'], ['2', '7']])
  work = tmp_path / 'work'
  assert _screen(_settings(), data, work) == (str(data.parent), 'd.csv')
  # A folder of files, read as CsvExampleGen's *.csv reads it.
  assert input_check.screen(_settings(), str(data.parent), '*.csv',
                            str(work)) == (str(data.parent), '*.csv')
  assert not (work / 'input').exists()


def test_screen_returns_the_normalized_copy_of_markers(tmp_path):
  data = write_csv(tmp_path / 'in' / 'd.csv', ['miles', 'fare', 'tips'], [
      ['1', '5', 'NA'], [' 2 ', '', '1'], ['3', '7', '?'], ['4', '9', '2']])
  work = tmp_path / 'work'
  base, pattern = _screen(_settings(), data, work)
  assert pattern == 'data.csv'
  assert Path(base).parent == (work / 'input').resolve()
  # What CsvExampleGen reads: markers empty, spaces trimmed, the row
  # without a label gone; the input itself untouched.
  assert read_csv(Path(base, pattern)) == (
      ['miles', 'fare', 'tips'],
      [['1', '5', ''], ['3', '7', ''], ['4', '9', '2']])
  assert read_csv(data)[1] == [['1', '5', 'NA'], [' 2 ', '', '1'],
                               ['3', '7', '?'], ['4', '9', '2']]


def test_screen_refuses_a_label_named_as_the_header_names_it(tmp_path):
  """The compiled pipeline reads the column by its model name (`Fare`):
  a label compiled as the header `Fare ($)` names no input the model has."""
  data = write_csv(tmp_path / 'd.csv', ['miles', 'Fare ($)'],
                   [['1', '5'], ['2', '7']])
  with pytest.raises(InputError) as refused:
    _screen(_settings(label='Fare ($)'), data, tmp_path / 'work')
  message = str(refused.value)
  assert "data.label: 'Fare ($)' -> 'Fare'" in message
  assert str(data) in message
  # Compiled with the model name, the same file is read, renamed.
  base, pattern = _screen(_settings(label='Fare'), data, tmp_path / 'work')
  assert read_csv(Path(base, pattern))[0] == ['miles', 'Fare']


def test_screen_refuses_a_renamed_column_in_a_list(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['Pay Type', 'miles', 'fare'],
                   [['cash', '1', '5'], ['card', '2', '7']])
  with pytest.raises(InputError, match=(
      r"data\.slice_features: \['Pay Type'\] -> \['Pay_Type'\]")):
    _screen(_settings(slice_features=['Pay Type']), data, tmp_path / 'w')


def test_screen_refuses_an_all_empty_column_it_would_exclude(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['miles', 'blank', 'fare'],
                   [['1', '', '5'], ['2', 'NA', '7']])
  with pytest.raises(InputError, match=(
      r"data\.exclude_features: \[\] -> \['blank'\]")):
    _screen(_settings(), data, tmp_path / 'work')
  # Compiled with the column excluded, it is read.
  base, pattern = _screen(_settings(exclude_features=['blank']), data,
                          tmp_path / 'work')
  assert read_csv(Path(base, pattern))[1] == [['1', '', '5'], ['2', '', '7']]


def test_screen_refuses_what_the_local_gate_refuses_in_its_words(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['miles', 'fare'],
                   [['1', 'cheap'], ['2', 'dear']])
  with pytest.raises(InputError) as local:
    check_input(_config(tmp_path, data))
  with pytest.raises(InputError) as screened:
    _screen(_settings(), data, tmp_path / 'work')
  assert str(screened.value) == str(local.value)


@pytest.mark.parametrize('custom_config', [
    '', 'not json {', '[1, 2]', '"data"', 'null', '{"code": "x"}',
    # TFX's own custom_config, or another component's.
    '{"some_other_setting": {"data": 1}}',
])
def test_screen_leaves_other_custom_configs_alone(tmp_path, custom_config):
  missing = tmp_path / 'does-not-exist'
  assert input_check.screen(custom_config, str(missing), '*.csv',
                            str(tmp_path / 'work')) == (str(missing),
                                                        '*.csv')
  assert not (tmp_path / 'work').exists()


def test_screen_does_not_read_an_input_the_runner_checked(tmp_path):
  missing = tmp_path / 'does-not-exist'
  assert input_check.screen(_settings(input_digest='f00d'), str(missing),
                            'd.csv', str(tmp_path / 'work')) == (
                                str(missing), 'd.csv')
  # The digest decides, even beside data settings.
  both = json.dumps(dict(json.loads(_settings()),
                         **{input_check.SCREENED_INPUT: 'f00d'}))
  assert input_check.screen(both, str(missing), 'd.csv',
                            str(tmp_path / 'work')) == (str(missing), 'd.csv')
  # Not checked: the missing input is refused, not read past.
  with pytest.raises(InputError):
    input_check.screen(_settings(), str(missing), 'd.csv',
                       str(tmp_path / 'work'))


def test_screen_reads_a_remote_input_through_tensorflow(tmp_path):
  """A store TensorFlow opens (gs:// on a cluster; its in-memory ram://
  here): the files are copied to read, a clean input is read where it is,
  and a file that is not a CSV beside them is left out."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  remote = f'ram://screen-{tmp_path.name}/in'
  tf.io.gfile.makedirs(remote)

  def put(name, text):
    with tf.io.gfile.GFile(f'{remote}/{name}', 'w') as f:
      f.write(text)

  put('a.csv', 'miles,fare\n1,5\n2,7\n')
  put('notes.txt', 'not,a,csv,at all\n')
  assert input_check.screen(_settings(), remote, '*.csv',
                            str(tmp_path / 'w1')) == (remote, '*.csv')
  assert sorted(os.listdir(tmp_path / 'w1' / 'remote-input')) == ['a.csv']

  put('b.csv', 'miles,fare\n3,NA\n4,9\n')
  base, pattern = input_check.screen(_settings(), remote, '*.csv',
                                     str(tmp_path / 'w2'))
  assert '://' not in base
  assert read_csv(Path(base, pattern)) == (
      ['miles', 'fare'], [['1', '5'], ['2', '7'], ['4', '9']])
  # One file of the folder, named by the pattern.
  base, pattern = input_check.screen(_settings(), remote, 'b.csv',
                                     str(tmp_path / 'w3'))
  assert read_csv(Path(base, pattern)) == (['miles', 'fare'], [['4', '9']])
