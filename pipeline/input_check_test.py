"""The normalized copy's cache key: one file, two labels, two copies.

The rows a copy drops depend on the label (those without a usable one), so
the key of `<output>/input/<key>/` must include it: a run with another label
reusing the first label's copy would train on the wrong rows.
"""

import csv
import os

from tfx_e2e.pipeline import input_check
from tfx_e2e.pipeline.config import DataConfig, PipelineConfig

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
