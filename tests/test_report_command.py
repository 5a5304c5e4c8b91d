"""`tfx-e2e report`: a mistyped output directory is refused without
creating anything, and TensorFlow's start-up noise stays off the console."""

import subprocess
import sys
from pathlib import Path
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e  # runs the pipeline or a server


def test_a_missing_output_directory_is_refused_and_not_created(tmp_path):
  missing = tmp_path / 'no-such-run'
  result = run_cli(['report', '--output', str(missing)])
  assert result.exit_code == 2
  assert result.stderr.splitlines() == [
      f'error: no such output directory: {missing} (give a pipeline run\'s '
      'output directory with --output)']
  assert not missing.exists()


def test_report_keeps_tensorflow_start_up_noise_off_the_console(taxi_run,
                                                                tmp_path):
  """A fresh process, as TensorFlow's CUDA and TensorRT notes come at its
  import: nothing on stderr; the run's logs directory gets them."""
  _, output = taxi_run
  report = tmp_path / 'report.html'
  result = subprocess.run(
      [str(Path(sys.executable).parent / 'tfx-e2e'), 'report', '--output',
       str(output), '--file', str(report)],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''
  assert result.stdout.strip() == f'Report: {report}'
  assert report.read_text().startswith('<!DOCTYPE html>')
  assert list((output / 'logs').glob('report-*.log'))
