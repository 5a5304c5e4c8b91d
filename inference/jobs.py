"""The shape `predict` and `stream` share: build a Beam pipeline, run it to
the end, and read the job's counters (rows read, predicted, dead-lettered,
...) from the finished result."""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.runner import PipelineResult

from tfx_e2e.inference import prediction


def counter(namespace: str, name: str):
  """A job's counter; `run_and_count` reads it back by the same name."""
  return beam.metrics.Metrics.counter(namespace, name)


def pipeline(beam_args: List[str], streaming: bool = False) -> beam.Pipeline:
  """A pipeline with these Beam options; `streaming` allows unbounded
  sources, which `stream` reads."""
  options = PipelineOptions(beam_args)
  if streaming:
    options.view_as(StandardOptions).streaming = True
  return beam.Pipeline(options=options)


@dataclasses.dataclass
class JobRun:
  """A finished job: Beam's result and the counters that were asked for."""
  result: PipelineResult
  counts: Dict[str, int]


def run_and_count(root: beam.Pipeline, namespace: str,
                  names: Iterable[str]) -> JobRun:
  """Runs the pipeline built on `root` and waits until it finishes.

  Args:
    root: a pipeline with the job's transforms added.
    namespace: the namespace of the job's counters.
    names: the counters to read; one never incremented reads 0.

  Returns:
    The finished job: the `PipelineResult` that `root.run()` returned, and
    {name: total} for each of `names`.
  """
  result = root.run()
  result.wait_until_finish()
  return JobRun(result, {name: prediction.counter_value(result, namespace,
                                                        name)
                         for name in names})
