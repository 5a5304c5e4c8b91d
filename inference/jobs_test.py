"""jobs.run_and_count: the run, the wait and the counters both jobs share."""

import apache_beam as beam
from apache_beam.runners.runner import PipelineState

from tfx_e2e.inference import jobs

NAMESPACE = 'jobs_test'


def _count_evens(number):
  jobs.counter(NAMESPACE, 'seen').inc()
  if number % 2 == 0:
    jobs.counter(NAMESPACE, 'even').inc()
  jobs.counter('another_namespace', 'seen').inc()
  return number


def test_the_job_runs_to_the_end_and_its_counters_are_read():
  root = jobs.pipeline([])
  _ = root | beam.Create(range(7)) | beam.Map(_count_evens)
  job = jobs.run_and_count(root, NAMESPACE, ['seen', 'even', 'never'])
  assert job.result.state == PipelineState.DONE
  # Only the namespace asked for; a counter never incremented reads 0.
  assert job.counts == {'seen': 7, 'even': 4, 'never': 0}


def test_a_streaming_pipeline_is_asked_for_by_a_flag():
  streaming = jobs.pipeline(['--direct_running_mode=in_memory'],
                            streaming=True)
  assert streaming.options.view_as(
      beam.options.pipeline_options.StandardOptions).streaming
  assert not jobs.pipeline([]).options.view_as(
      beam.options.pipeline_options.StandardOptions).streaming
