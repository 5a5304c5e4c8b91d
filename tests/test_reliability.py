"""Faults injected into real runs: runs killed (SIGKILL) inside each long
component, and a second run started while one is running."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ml_metadata.proto import metadata_store_pb2
import pytest

from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports.results import open_store
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

EXAMPLE_GEN, TRANSFORM, TRAINER, EVALUATOR = (
    'CsvExampleGen', 'Transform', 'Trainer', 'Evaluator')


class _Run:
  """`tfx-e2e run` in a child process, its console output collected."""

  def __init__(self, args):
    self.output = ''
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'tfx_e2e.cli', 'run', *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED='1'))
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    while chunk := self.process.stdout.read1(4096):
      self.output += chunk.decode('utf-8', 'replace')

  def wait_for(self, text: str, seconds: float = 240):
    deadline = time.monotonic() + seconds
    while text not in self.output:
      assert self.process.poll() is None, f'exited before {text!r}:\n' + (
          self.output)
      assert time.monotonic() < deadline, f'no {text!r}:\n{self.output}'
      time.sleep(0.05)

  def finish(self, seconds: float = 300) -> int:
    code = self.process.wait(timeout=seconds)
    self._reader.join()
    return code

  def kill(self):
    self.process.send_signal(signal.SIGKILL)
    self.process.wait(timeout=30)


def _executions(output: Path):
  return open_store(str(output / 'metadata.sqlite')).get_executions()


def _running_types(output: Path):
  """Type names (e.g. tfx.components.trainer.component.Trainer) of the
  executions left RUNNING, oldest first."""
  store = open_store(str(output / 'metadata.sqlite'))
  running = [e for e in store.get_executions()
             if e.last_known_state == metadata_store_pb2.Execution.RUNNING]
  types = {t.id: t.name for t in store.get_execution_types_by_id(
      list({e.type_id for e in running}))}
  return [types[e.type_id] for e in sorted(running, key=lambda e: e.id)]


def _wait_until_running(output: Path, component: str, run: _Run,
                        seconds: float = 120) -> None:
  """Until MLMD holds `component`'s execution as RUNNING."""
  deadline = time.monotonic() + seconds
  while True:
    assert run.process.poll() is None, run.output
    assert time.monotonic() < deadline, f'{component} never RUNNING'
    try:
      running = _running_types(output)
    except Exception:  # pylint: disable=broad-except  (store being created)
      running = []
    if running and running[-1].endswith('.' + component):
      return
    time.sleep(0.02)


def test_runs_killed_inside_each_long_component_are_completed_later(
    taxi_sample, tmp_path):
  """Kill a run in ExampleGen, the next in Transform, the next in Trainer,
  the next in Evaluator; the run after that pushes, reusing every
  component that had finished; MLMD keeps no execution RUNNING."""
  output = tmp_path / 'run'
  args = ['--set', f'data.path={taxi_sample}', '--output', str(output)]
  killed_in = []
  # Each kill lands once MLMD has the component RUNNING, after a delay
  # shorter than the component takes on the sample.
  for component, delay in ((EXAMPLE_GEN, 0.0), (TRANSFORM, 3.0),
                           (TRAINER, 0.3), (EVALUATOR, 1.0)):
    run = _Run(args)
    run.wait_for(f'] {component} ...')
    if component == TRANSFORM:
      # A second run on the same output directory refuses at once.
      started = time.monotonic()
      busy = run_cli(['run', *args])
      assert busy.exit_code == runner.EXIT_BUSY, busy
      assert 'another run is using' in busy.stderr
      assert f'pid {run.process.pid}' in busy.stderr
      assert time.monotonic() - started < 30
    _wait_until_running(output, component, run)
    time.sleep(delay)
    assert run.process.poll() is None, run.output
    run.kill()
    killed_in.append(component)
    running = _running_types(output)
    assert running and running[-1].endswith('.' + component), (
        f'the kill meant for {component} left RUNNING: {running}')

  # In a child process too: its console must end with the summary, without
  # tracebacks from TensorFlow's teardown.
  final = _Run(args)
  assert final.finish() == runner.EXIT_PUSHED, final.output
  assert 'an earlier run was interrupted' in final.output
  assert 'Traceback' not in final.output
  assert final.output.rstrip().splitlines()[-1].startswith('Report: ')
  states = {line.split()[0]: line.split()[1] for line in
            final.output.split('Components:')[1].split('\n\n')[0]
            .strip().splitlines()[1:]}
  # Everything that finished before the last kill is reused.
  for component in (EXAMPLE_GEN, 'StatisticsGen', 'SchemaGen',
                    'ExampleValidator', TRANSFORM, TRAINER):
    assert states[component] == 'cached', (component, final.output)
  assert states[EVALUATOR] == 'complete'
  assert not [e for e in _executions(output) if e.last_known_state ==
              metadata_store_pb2.Execution.RUNNING]
  canceled = [e for e in _executions(output) if e.last_known_state ==
              metadata_store_pb2.Execution.CANCELED]
  assert len(canceled) >= len(killed_in)
  pushed = Path(PipelineConfig(output_dir=str(output)).serving_model_dir)
  assert [p.name for p in pushed.iterdir() if p.name.isdigit()]
