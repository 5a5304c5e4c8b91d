"""The runner around TFX's orchestrators: progress reporting that never
fails a run."""

import dataclasses

from tfx.orchestration.portable import launcher
import pytest

from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tests.conftest import read_csv, write_csv

pytestmark = pytest.mark.e2e  # runs the pipeline or a server


def test_a_failing_progress_report_does_not_fail_the_run(taxi_sample,
                                                         tmp_path):
  header, rows = read_csv(taxi_sample)
  data = write_csv(tmp_path / 'd.csv', header, rows[:600])
  config = PipelineConfig(output_dir=str(tmp_path / 'out'))
  config = dataclasses.replace(config, data=dataclasses.replace(
      config.data, path=str(data)))
  original_launch = launcher.Launcher.launch
  calls = []

  def report(node, event, *_):
    calls.append((node, event))
    raise RuntimeError('a bug in the progress display')

  outcome = runner.run(config, progress=report)
  assert outcome.exit_code == runner.EXIT_PUSHED
  assert ('Trainer', 'running') in calls and ('Pusher', 'finished') in calls
  assert launcher.Launcher.launch is original_launch  # restored
