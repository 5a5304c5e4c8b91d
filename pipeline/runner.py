"""Runs the pipeline of a `PipelineConfig` with the chosen orchestrator.

The data gate runs first, then LocalDagRunner (default) or BeamDagRunner runs
the TFX pipeline; the outcome is read back from MLMD. Both orchestrators run
each component's Beam work with the configuration's Beam arguments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

from tfx_e2e.pipeline import input_check
from tfx_e2e.pipeline import worker_pool
from tfx_e2e.pipeline.config import PipelineConfig, save_run_config

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
  from tfx_e2e.reports import results as results_lib

# Exit codes of `tfx-e2e run` (documented in the README).
EXIT_PUSHED = 0
EXIT_FAILED = 1         # a component failed (see the log)
EXIT_BAD_INPUT = 2      # bad data, configuration or command line
EXIT_NOT_PUSHED = 3     # the run finished, but pushed nothing
EXIT_BUSY = 4           # another run is using the output directory

LOCK_FILE = '.run.lock'


class ComponentFailed(RuntimeError):
  """A pipeline component raised; the message names it."""


class OutputBusy(RuntimeError):
  """Another run holds the output directory."""


@contextlib.contextmanager
def exclusive_output(output: Path) -> Iterator[None]:
  """Holds the output directory for one run at a time. The lock is the
  kernel's (flock), so a killed run never leaves it behind."""
  output.mkdir(parents=True, exist_ok=True)
  with open(output / LOCK_FILE, 'a+') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock.seek(0)
      holder = lock.read().strip() or 'another process'
      raise OutputBusy(f'another run is using {output} ({holder}); wait for '
                       'it to finish, or pass another --output') from None
    lock.seek(0)
    lock.truncate()
    lock.write(f'pid {os.getpid()}, started '
               f'{datetime.datetime.now():%Y-%m-%d %H:%M:%S}\n')
    lock.flush()
    yield


def cancel_abandoned_executions(metadata_path: str) -> int:
  """Marks executions that a killed run left RUNNING as CANCELED, so that
  MLMD says what happened. Only safe while holding the output directory."""
  if not Path(metadata_path).is_file():
    return 0
  from ml_metadata.proto import metadata_store_pb2
  from tfx_e2e.reports.results import open_store
  store = open_store(metadata_path, writable=True)
  abandoned = [e for e in store.get_executions()
               if e.last_known_state == metadata_store_pb2.Execution.RUNNING]
  for execution in abandoned:
    execution.last_known_state = metadata_store_pb2.Execution.CANCELED
  if abandoned:
    store.put_executions(abandoned)
    _log.warning('marked %d execution(s) of an interrupted run as '
                    'CANCELED: %s', len(abandoned),
                    ', '.join(str(e.id) for e in abandoned))
  return len(abandoned)


@dataclasses.dataclass
class RunOutcome:
  input_report: input_check.InputReport
  results: results_lib.RunResults
  beam_profile: str  # the one used (`auto` resolved)
  # The configuration the pipeline ran with: columns by their model names.
  config: PipelineConfig
  # Executions an earlier, interrupted run had left RUNNING in MLMD.
  abandoned_executions: int = 0

  @property
  def exit_code(self) -> int:
    return EXIT_PUSHED if self.results.pushed else EXIT_NOT_PUSHED


class _ProgressReporter:
  """Reports each component's start and end, and remembers the running one.

  TFX 1.16's LocalDagRunner and BeamDagRunner (in-process) have no progress
  callback, but both launch every node through tfx's portable
  `Launcher.launch` (tfx 1.16.0), so that method is wrapped for the time of
  the run (and restored after it). No upstream issue asks for a progress
  callback in the local runners; none was found. The wrapper never fails a
  component: an error in its own bookkeeping or in `report` is logged, and
  the launch goes on.
  """

  def __init__(self, report: Callable[..., None], total: int):
    self._report = report
    self._total = total
    self._started = 0
    self.current: Optional[str] = None

  def _safely(self, *args) -> None:
    try:
      self._report(*args)
    except Exception:  # pylint: disable=broad-except
      _log.exception('progress report %s failed (the run goes on)', args)

  def _node_id(self, launcher_self) -> str:
    try:
      return launcher_self._pipeline_node.node_info.id  # pylint: disable=protected-access
    except AttributeError:  # another tfx: no name, but the launch runs
      _log.warning('cannot tell which component is launched',
                      exc_info=True)
      return 'a component'

  def __enter__(self):
    from tfx.orchestration.portable import launcher
    self._launcher = launcher.Launcher
    self._original_launch = original_launch = launcher.Launcher.launch
    reporter = self

    def launch(launcher_self):
      node = reporter._node_id(launcher_self)
      reporter._started += 1
      reporter.current = node
      reporter._safely(node, 'running', reporter._started, reporter._total)
      started = time.monotonic()
      execution_info = original_launch(launcher_self)
      reporter.current = None
      # No execution: the node's inputs were not met (e.g. the data gate).
      skipped = (execution_info is None or
                 getattr(execution_info, 'execution_id', None) is None)
      reporter._safely(node, 'skipped' if skipped else 'finished',
                       reporter._started, reporter._total,
                       time.monotonic() - started)
      return execution_info

    launcher.Launcher.launch = launch
    return self

  def __exit__(self, *exc):
    self._launcher.launch = self._original_launch


def _dag_runner(orchestrator: str):
  if orchestrator == 'beam':
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
    return BeamDagRunner()
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner
  return LocalDagRunner()


def run(config: PipelineConfig,
        progress: Callable[..., None] = lambda *_: None,
        report: Optional[input_check.InputReport] = None) -> RunOutcome:
  """Gates the input, runs the pipeline and returns what it did.

  The input is checked (`report`: already checked) before anything is
  written: a rejected run leaves the output directory as it was.

  `progress(node_id, 'running', index, total)` and
  `progress(node_id, 'finished'|'skipped', index, total, seconds)` are called
  around each component. Raises input_check.InputError for unusable data,
  OutputBusy when another run holds the output directory, and
  ComponentFailed when a component fails.
  """
  report = report or input_check.check_input(config)
  resolved = input_check.resolve_config(config, report)
  with exclusive_output(config.output_path):
    input_check.prepare_input(config, report)
    # Recorded with the columns as the model names them, and the user's
    # data path (not the copy).
    save_run_config(dataclasses.replace(resolved, data=dataclasses.replace(
        resolved.data, path=config.data.path)))
    abandoned = cancel_abandoned_executions(config.metadata_path)
    outcome = _run(resolved, report, progress)
  outcome.abandoned_executions = abandoned
  return outcome


def _run(config: PipelineConfig, report: input_check.InputReport,
         progress: Callable[..., None]) -> RunOutcome:
  # Imported here: they load TensorFlow, which `--help` and bad input need not.
  from tfx_e2e.reports import results as results_lib
  from tfx_e2e.pipeline.pipeline import compile_ir, create_pipeline

  profile = config.beam_profile(report.rows)
  # The portable profile's worker pool, if it needs one, lives for the run.
  with worker_pool.for_jobs(config, profile) as job_config:
    tfx_pipeline = create_pipeline(dataclasses.replace(
        job_config, beam=dataclasses.replace(job_config.beam,
                                             profile=profile)),
                                   input_digest=report.key)
    with _ProgressReporter(progress, len(tfx_pipeline.components)) as watcher:
      try:
        _dag_runner(config.orchestrator).run_with_ir(compile_ir(tfx_pipeline))
      except Exception as e:  # pylint: disable=broad-except
        failed = watcher.current or 'the pipeline'
        first_line = (str(e).strip().splitlines() or [''])[0][:300]
        raise ComponentFailed(
            f'{failed} failed: {type(e).__name__}: {first_line}') from e
  return RunOutcome(report, results_lib.load_run_results(config), profile,
                    config)
