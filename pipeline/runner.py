"""Runs the pipeline of a `PipelineConfig` with the chosen orchestrator.

The data gate runs first, then LocalDagRunner (default) or BeamDagRunner runs
the TFX pipeline; the outcome is read back from MLMD. Both orchestrators run
each component's Beam work with the configuration's Beam arguments.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Callable, Optional
from unittest import mock

from pipeline import input_check
from pipeline.config import PipelineConfig

if TYPE_CHECKING:
  from pipeline import results as results_lib

# Exit codes of `tfx-e2e run` (documented in the README).
EXIT_PUSHED = 0
EXIT_FAILED = 1         # a component failed (see the log)
EXIT_BAD_INPUT = 2      # bad data, configuration or command line
EXIT_NOT_PUSHED = 3     # the run finished, but pushed nothing

class ComponentFailed(RuntimeError):
  """A pipeline component raised; the message names it."""


@dataclasses.dataclass
class RunOutcome:
  input_report: input_check.InputReport
  results: results_lib.RunResults

  @property
  def exit_code(self) -> int:
    return EXIT_PUSHED if self.results.pushed else EXIT_NOT_PUSHED


class _ProgressReporter:
  """Reports each component's start and end, and remembers the running one.

  Both LocalDagRunner and BeamDagRunner (in-process) launch every node through
  tfx's portable Launcher, so wrapping Launcher.launch sees every component.
  """

  def __init__(self, report: Callable[..., None], total: int):
    self._report = report
    self._total = total
    self._started = 0
    self.current: Optional[str] = None

  def __enter__(self):
    from tfx.orchestration.portable import launcher
    original_launch = launcher.Launcher.launch
    reporter = self

    def launch(launcher_self):
      node = launcher_self._pipeline_node.node_info.id  # pylint: disable=protected-access
      reporter._started += 1
      reporter.current = node
      reporter._report(node, 'running', reporter._started, reporter._total)
      started = time.monotonic()
      execution_info = original_launch(launcher_self)
      reporter.current = None
      # No execution: the node's inputs were not met (e.g. the data gate).
      skipped = execution_info is None or execution_info.execution_id is None
      reporter._report(node, 'skipped' if skipped else 'finished',
                       reporter._started, reporter._total,
                       time.monotonic() - started)
      return execution_info

    self._patch = mock.patch.object(launcher.Launcher, 'launch', launch)
    self._patch.start()
    return self

  def __exit__(self, *exc):
    self._patch.stop()


def _dag_runner(orchestrator: str):
  if orchestrator == 'beam':
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
    return BeamDagRunner()
  from tfx import v1 as tfx
  return tfx.orchestration.LocalDagRunner()


def run(config: PipelineConfig,
        progress: Callable[..., None] = lambda *_: None) -> RunOutcome:
  """Gates the input, runs the pipeline and returns what it did.

  `progress(node_id, 'running', index, total)` and
  `progress(node_id, 'finished'|'skipped', index, total, seconds)` are called
  around each component. Raises input_check.InputError for unusable data and
  ComponentFailed when a component fails.
  """
  report = input_check.check_input(config)
  # Imported here: they load TensorFlow, which `--help` and bad input need not.
  from pipeline import results as results_lib
  from pipeline.pipeline import create_pipeline

  tfx_pipeline = create_pipeline(dataclasses.replace(
      config, data=dataclasses.replace(config.data, path=report.path)))
  with _ProgressReporter(progress, len(tfx_pipeline.components)) as watcher:
    try:
      _dag_runner(config.orchestrator).run(tfx_pipeline)
    except Exception as e:  # pylint: disable=broad-except
      failed = watcher.current or 'the pipeline'
      first_line = (str(e).strip().splitlines() or [''])[0][:300]
      raise ComponentFailed(
          f'{failed} failed: {type(e).__name__}: {first_line}') from e
  return RunOutcome(report, results_lib.load_run_results(config))
