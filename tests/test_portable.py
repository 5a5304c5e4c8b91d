"""The `portable` Beam profile: the pipeline's Beam work on Beam's portable
runner (embedded job service, Fn API) with SDK workers from a real
external worker pool that `run` starts on loopback, and stops whatever
way the run ends.

That the work ran in the pool's workers is told by the workers themselves:
each of this project's DoFns leaves a mark with its process id and parent
id when a process sets it up (`worker_marks`, on with TFX_E2E_WORKER_MARKS,
which the pool and its workers inherit from this process).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline import worker_marks
from tfx_e2e.pipeline import worker_pool
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports.results import OVERALL, RMSE, load_run_results
from tests.conftest import assert_same_metrics, run_cli

pytestmark = pytest.mark.e2e

# Every component whose Beam work runs through this project's DoFns; the
# stock DoFns of the same job (TFDV's, tf.Transform's, TFMA's) run in the
# same fused stages, in the same workers.
BEAM_COMPONENTS = {'CsvExampleGen', 'StatisticsGen', 'Transform',
                   'Evaluator'}
WORKERS = 2
POOL_LINE = re.compile(r'Beam worker pool \(pid (\d+)\) listening')


def portable_args(data, output, *extra):
  return ['run', '--set', f'data.path={data}', '--output', str(output),
          '--set', 'beam.profile=portable', '--set', f'beam.workers={WORKERS}',
          *extra]


def pool_pid(output: Path) -> int:
  """The pool's process id, from the run's log (the launcher's word, used
  only to tell which process was the pool)."""
  pids = [int(m.group(1)) for log in (output / 'logs').glob('run-*.log')
          for m in POOL_LINE.finditer(log.read_text(errors='replace'))]
  assert pids, 'no worker pool was started'
  return pids[-1]


def processes_of(pool: int):
  """Live processes (zombies aside) of the pool's group or children."""
  return [pid for pid, ppid, pgrp in worker_pool.live_processes()
          if pool in (pid, ppid, pgrp)]


@pytest.fixture
def marks_dir(tmp_path, monkeypatch):
  directory = tmp_path / 'marks'
  monkeypatch.setenv(worker_marks.ENV, str(directory))
  return directory


@pytest.fixture(scope='module')
def portable_run(taxi_sample, tmp_path_factory):
  """The taxi sample's run on the portable profile: (CliResult, output,
  worker marks)."""
  output = tmp_path_factory.mktemp('portable-run')
  marks = output / 'marks'
  saved = os.environ.get(worker_marks.ENV)
  os.environ[worker_marks.ENV] = str(marks)
  try:
    started = time.monotonic()
    result = run_cli(portable_args(taxi_sample, output))
    print(f'portable run: {time.monotonic() - started:.1f} s')
  finally:
    if saved is None:
      del os.environ[worker_marks.ENV]
    else:
      os.environ[worker_marks.ENV] = saved
  return result, output, worker_marks.read(str(marks))


def test_portable_run_pushes_the_in_memory_model(portable_run, taxi_run):
  result, output, _ = portable_run
  assert result.exit_code == runner.EXIT_PUSHED, result.stderr
  assert 'Beam profile: portable' in result.stdout
  in_memory_result, in_memory = taxi_run
  assert in_memory_result.exit_code == runner.EXIT_PUSHED
  portable = load_run_results(PipelineConfig(output_dir=str(output)))
  reference = load_run_results(PipelineConfig(output_dir=str(in_memory)))
  assert portable.pushed and portable.blessed
  # The solver is exact: the same splits give the same model.
  assert portable.metrics[OVERALL][RMSE] == pytest.approx(
      reference.metrics[OVERALL][RMSE], rel=1e-6)
  assert_same_metrics(portable, reference, rel=1e-5)


def test_every_components_beam_work_ran_in_the_pools_workers(portable_run):
  result, output, marks = portable_run
  assert result.exit_code == runner.EXIT_PUSHED, result.stderr
  pool = pool_pid(output)
  assert set(marks) == BEAM_COMPONENTS
  for component, processes in marks.items():
    for pid, ppid in processes:
      # Not this process (the launcher, which ran the in-memory runs),
      # but a worker that the pool started.
      assert pid != os.getpid() and ppid == pool, (component, pid, ppid)
    # beam.workers workers for each job, each fed part of the input (the
    # taxi sample is one range, so not every stage reaches both).
    assert 1 <= len(processes) <= WORKERS, (component, processes)
  assert max(len(p) for p in marks.values()) == WORKERS, marks
  # Each job had workers of its own.
  pids = [pid for processes in marks.values() for pid, _ in processes]
  assert len(set(pids)) == len(pids)


def test_no_worker_process_outlives_the_run(portable_run):
  _, output, _ = portable_run
  assert processes_of(pool_pid(output)) == []


def test_failed_component_stops_the_pool(taxi_sample, tmp_path, monkeypatch):
  # The marks "directory" is a file: the workers' DoFn set-up fails, so
  # CsvExampleGen's job fails in the pool's workers.
  marks = tmp_path / 'not-a-directory'
  marks.write_text('')
  monkeypatch.setenv(worker_marks.ENV, str(marks))
  output = tmp_path / 'out'
  result = run_cli(portable_args(taxi_sample, output))
  assert result.exit_code == runner.EXIT_FAILED, result.stdout
  assert 'CsvExampleGen failed' in result.stderr
  assert processes_of(pool_pid(output)) == []


@pytest.mark.parametrize('signum,status', [(signal.SIGTERM, 143),
                                           (signal.SIGINT, 130)])
def test_signal_to_run_stops_the_pool(taxi_sample, tmp_path, signum, status):
  """SIGTERM, or Ctrl-C (SIGINT), while a worker runs CsvExampleGen's work:
  the pool and its workers are stopped, and the command ends."""
  marks, output = tmp_path / 'marks', tmp_path / 'out'
  process = subprocess.Popen(  # pylint: disable=consider-using-with
      [str(Path(sys.executable).parent / 'tfx-e2e'),
       *portable_args(taxi_sample, output)],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env={**os.environ, worker_marks.ENV: str(marks)})
  try:
    deadline = time.monotonic() + 120
    while not (marks.is_dir() and any(marks.iterdir())):
      assert process.poll() is None, process.stdout.read()
      assert time.monotonic() < deadline, 'no worker started'
      time.sleep(0.2)
    pool = pool_pid(output)
    workers = [pid for pid, _ in worker_marks.read(str(marks))[
        'CsvExampleGen']]
    assert processes_of(pool)  # running, before the signal
    process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  assert process.returncode == status, out
  assert (f'{signal.Signals(signum).name}: stopped the Beam worker pool; '
          'interrupted') in out
  assert 'Traceback' not in out
  assert processes_of(pool) == []
  for pid in workers:
    assert not Path(f'/proc/{pid}').exists() or (
        Path(f'/proc/{pid}/stat').read_text().split(') ')[1][0] == 'Z')
