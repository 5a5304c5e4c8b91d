"""Server-side batching: concurrent requests share calls, rows go back to
their requests, and one bad request does not fail the others."""

import threading

import numpy as np

from tfx_e2e.serving.batching import Batcher, BatchingParameters
from tfx_e2e.serving.errors import Code, ServingError


def _double(calls):
  def function(inputs):
    calls.append(len(inputs['x']))
    if (inputs['x'] < 0).any():
      raise ServingError(Code.INVALID_ARGUMENT, 'negative input')
    return {'y': inputs['x'] * 2}
  return function


def _concurrently(batcher, function, values):
  results = [None] * len(values)
  barrier = threading.Barrier(len(values))

  def call(i):
    barrier.wait()
    try:
      results[i] = batcher.run('key', function,
                               {'x': np.array([values[i]], np.float32)})['y']
    except ServingError as e:
      results[i] = e
  threads = [threading.Thread(target=call, args=(i,))
             for i in range(len(values))]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  return results


def test_concurrent_requests_are_batched_and_answered_row_by_row():
  calls = []
  batcher = Batcher(BatchingParameters(max_batch_size=64,
                                       batch_timeout_micros=50_000,
                                       num_batch_threads=1))
  values = list(range(16))
  results = _concurrently(batcher, _double(calls), values)
  assert [float(r[0]) for r in results] == [2.0 * v for v in values]
  assert sum(calls) == 16
  assert len(calls) < 16  # fewer calls than requests


def test_a_bad_request_fails_alone():
  calls = []
  batcher = Batcher(BatchingParameters(max_batch_size=64,
                                       batch_timeout_micros=50_000,
                                       num_batch_threads=1))
  results = _concurrently(batcher, _double(calls), [1, 2, -3, 4])
  assert isinstance(results[2], ServingError)
  assert [float(results[i][0]) for i in (0, 1, 3)] == [2.0, 4.0, 8.0]


def test_requests_at_the_size_limit_run_directly():
  calls = []
  batcher = Batcher(BatchingParameters(max_batch_size=4))
  out = batcher.run('key', _double(calls), {'x': np.ones(4, np.float32)})
  assert calls == [4] and out['y'].tolist() == [2.0] * 4
  assert batcher.batches_run == 0
