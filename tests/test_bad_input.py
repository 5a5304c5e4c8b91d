"""Bad input: a clear error naming the file and problem, exit 2, no push."""

import subprocess
import sys
from pathlib import Path

import pytest

from tfx_e2e.pipeline import runner
from tests.conftest import run_cli, write_csv

HEADER = ['miles', 'payment', 'fare']


def _run(tmp_path, data, label='fare'):
  output = tmp_path / 'out'
  result = run_cli(['run', '--data', str(data), '--label', label,
                    '--output', str(output)])
  assert result.exit_code == runner.EXIT_BAD_INPUT, result
  assert 'Traceback' not in result.stderr
  assert not (output / 'serving').exists()
  assert not (output / 'metadata.sqlite').exists()  # stopped before TFX
  return result.stderr


def test_missing_data_path(tmp_path):
  missing = tmp_path / 'nope.csv'
  assert _run(tmp_path, missing) == (
      f'error: {missing}: no such file or directory\n')


def test_empty_csv(tmp_path):
  empty = tmp_path / 'empty.csv'
  empty.write_text('')
  assert f'{empty}: empty file' in _run(tmp_path, empty)


def test_header_without_rows(tmp_path):
  data = write_csv(tmp_path / 'header.csv', HEADER, [])
  assert f'{data}: no data rows after the header' in _run(tmp_path, data)


def test_csv_without_the_label_column(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['miles', 'payment'], [['1', 'Cash']])
  message = _run(tmp_path, data)
  assert f"{data}: no label column 'fare'" in message
  assert 'columns: miles, payment' in message


def test_ragged_rows(tmp_path):
  data = tmp_path / 'ragged.csv'
  data.write_text('miles,payment,fare\n1,Cash,5\n2,Card\n')
  assert (f'{data}:3: 2 fields, but the header has 3'
          in _run(tmp_path, data))


def test_label_that_is_not_numeric(tmp_path):
  data = write_csv(tmp_path / 'd.csv', HEADER,
                   [['1', 'Cash', '5'], ['2', 'Card', 'five']])
  assert (f"{data}:3: label 'fare' is not numeric: 'five'"
          in _run(tmp_path, data))


def test_configured_columns_must_exist(tmp_path):
  data = write_csv(tmp_path / 'd.csv', HEADER, [['1', 'Cash', '5']])
  result = run_cli(['run', '--data', str(data), '--label', 'fare',
                    '--slice', 'payment_typo', '--output',
                    str(tmp_path / 'out')])
  assert result.exit_code == runner.EXIT_BAD_INPUT
  assert 'data.slice_features names columns the data does not have: ' \
         'payment_typo' in result.stderr


@pytest.mark.parametrize('override, message', [
    ('training.nope=1', "unknown setting 'training.nope'"),
    ('training.train_steps=many', 'training.train_steps: expected int'),
    ('pipeline_name=Not_Valid', "pipeline_name 'Not_Valid' must match"),
    ('split.eval_buckets=0', 'split.eval_buckets must be >= 1'),
])
def test_bad_configuration(tmp_path, override, message):
  result = run_cli(['run', '--output', str(tmp_path), '--set', override])
  assert result.exit_code == runner.EXIT_BAD_INPUT
  assert message in result.stderr


def test_console_script_reports_bad_input_without_traceback(tmp_path):
  missing = tmp_path / 'missing.csv'
  completed = subprocess.run(
      [str(Path(sys.executable).parent / 'tfx-e2e'), 'run', '--data',
       str(missing), '--label', 'y', '--output', str(tmp_path / 'out')],
      capture_output=True, text=True, timeout=120)
  assert completed.returncode == runner.EXIT_BAD_INPUT
  assert completed.stderr.strip() == (
      f'error: {missing}: no such file or directory')


def test_module_entry_point_help():
  completed = subprocess.run([sys.executable, '-m', 'tfx_e2e.cli', 'run',
                              '--help'], capture_output=True, text=True,
                             timeout=120)
  assert completed.returncode == 0
  assert '--allow-anomalies' in completed.stdout
  assert 'exit codes:' in completed.stdout


def test_unwritable_output_directory(tmp_path):
  data = write_csv(tmp_path / 'd.csv', HEADER, [['1', 'Cash', '5']])
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  result = run_cli(['run', '--data', str(data), '--label', 'fare',
                    '--output', str(blocker / 'out')])
  assert result.exit_code == runner.EXIT_BAD_INPUT
  assert result.stderr.startswith(f'error: {blocker}')
  assert 'Traceback' not in result.stderr
