"""What a user can do to the renamed flags, the fast-paths switch and the
environment set-up that must not be silently accepted: both spellings of a
flag, empty paths, TensorFlow's other spellings of TF_USE_LEGACY_KERAS, and a
column with no value in TFX's stock ExampleGen."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfx_e2e.cli import commands
from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tests.conftest import PENGUINS_CSV, run_cli


@pytest.mark.parametrize('argv', [
    ['--pipeline-file', 'a.yaml', '--file', 'b.yaml'],
    ['--file', 'b.yaml', '--pipeline-file', 'a.yaml'],
])
def test_submit_refuses_both_spellings_of_the_pipeline_file(argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    commands.build_parser().parse_args(
        ['submit', '--host', 'http://localhost:1', *argv])
  assert exit_info.value.code == runner.EXIT_BAD_INPUT
  assert '--pipeline-file' in capsys.readouterr().err


def test_the_required_renamed_flags_refuse_both_spellings(capsys):
  """The control for the submit case: compile, predict and stream do."""
  for argv in (['compile', '--pipeline-file', 'a.yaml', '--output', 'b.yaml'],
               ['predict', '--input', 'x.csv', '--output-prefix', 'a',
                '--output', 'b'],
               ['stream', '--input', 'in', '--stream-output', 'a',
                '--output', 'b']):
    with pytest.raises(SystemExit) as exit_info:
      commands.build_parser().parse_args(argv)
    assert exit_info.value.code == runner.EXIT_BAD_INPUT, argv
    assert 'not allowed with' in capsys.readouterr().err, argv


@pytest.mark.parametrize('flag', ['--output-prefix', '--output'])
def test_predict_refuses_an_empty_output_prefix(tmp_path, monkeypatch, capsys,
                                                flag):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(SystemExit) as exit_info:
    commands.main(['predict', '--input', str(PENGUINS_CSV), f'{flag}=',
                   '--model', str(tmp_path / 'none')])
  assert exit_info.value.code == runner.EXIT_BAD_INPUT
  assert f'argument {flag}: an empty name' in capsys.readouterr().err
  assert list(tmp_path.iterdir()) == []


def test_stream_refuses_an_empty_output_directory(tmp_path, monkeypatch,
                                                 capsys):
  work = tmp_path / 'work'
  work.mkdir()
  (tmp_path / 'in').mkdir()
  monkeypatch.chdir(work)
  with pytest.raises(SystemExit) as exit_info:
    commands.main(['stream', '--input', str(tmp_path / 'in'),
                   '--stream-output=', '--model', str(tmp_path / 'none'),
                   '--max-files', '1', '--idle-timeout', '1'])
  assert exit_info.value.code == runner.EXIT_BAD_INPUT
  assert 'argument --stream-output: an empty name' in (
      capsys.readouterr().err)
  assert list(work.iterdir()) == []


def test_configure_accepts_every_spelling_tensorflow_reads_as_keras_2():
  code = ('import tensorflow as tf\n'
          'assert tf._tf_uses_legacy_keras\n'
          'from tfx_e2e.pipeline import environment\n'
          'environment.configure()\n')
  result = subprocess.run(
      [sys.executable, '-c', code], capture_output=True, text=True,
      env=dict(os.environ, TF_USE_LEGACY_KERAS='true'), timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.e2e
def test_stock_run_keeps_a_column_empty_in_every_row_out_of_the_model(
    tmp_path):
  with open(PENGUINS_CSV, newline='') as f:
    rows = list(csv.reader(f))
  data = tmp_path / 'penguins_empty.csv'
  with open(data, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(rows[0] + ['notes'])
    writer.writerows(row + [''] for row in rows[1:])
  output = tmp_path / 'out'
  result = run_cli(['run', '--data', str(data), '--label', 'body_mass_g',
                    '--set', 'beam.fast_paths=false', '--output',
                    str(output)])
  assert result.exit_code == runner.EXIT_PUSHED, result.stderr
  assert 'so not features: notes' in result.stdout

  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  serving = Path(PipelineConfig(output_dir=str(output),
                                model_name='penguins_empty'
                                ).serving_model_dir)
  version = sorted(serving.iterdir())[-1]
  inputs = set(tf.saved_model.load(str(version)).signatures[
      'serving_raw'].structured_input_signature[1])
  assert 'bill_length_mm' in inputs  # the signature is the model's inputs
  assert 'notes' not in inputs
