"""Server-side batching of concurrent requests (TF Serving's --enable_batching).

Requests for the same servable and signature queue up; the first in the queue
leads: it waits until a batch thread is free and at most `timeout_micros`
for more rows (up to `max_batch_size`), then runs one call for everyone in its
batch and hands each request its rows of the outputs. Under load, requests
pile up while the batch threads are busy, so batches grow by themselves; a
lone request waits no longer than the timeout.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Dict, Hashable, List, Optional

import numpy as np

from tfx_e2e.serving.errors import ServingError


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
  """The fields of TF Serving's BatchingParameters that apply here."""
  max_batch_size: int = 256
  # 0: a lone request never waits; under load, requests queue while the
  # batch threads are busy and are batched anyway.
  batch_timeout_micros: int = 0
  num_batch_threads: int = 2


class _Request:
  __slots__ = ('inputs', 'rows', 'wake', 'leader', 'outputs', 'error')

  def __init__(self, inputs: Dict[str, np.ndarray], rows: int):
    self.inputs = inputs
    self.rows = rows
    self.wake = threading.Event()
    self.leader = False
    self.outputs: Optional[Dict[str, np.ndarray]] = None
    self.error: Optional[BaseException] = None


def _rows(inputs) -> int:
  first = next(iter(inputs.values()))
  return first.shape[0] if len(first.shape) else 1


def _concat(parts):
  """Row-wise concatenation of tensors (or arrays) of one input."""
  if isinstance(parts[0], np.ndarray):
    return np.concatenate(parts)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.concat(parts, axis=0)


class Batcher:

  def __init__(self, parameters: BatchingParameters = BatchingParameters()):
    self.parameters = parameters
    self._cond = threading.Condition()
    self._queues: Dict[Hashable, List[_Request]] = {}
    self._slots: Dict[Hashable, threading.Semaphore] = {}
    self.batches_run = 0  # for tests and the benchmark

  def run(self, key: Hashable,
          function: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]],
          inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    rows = _rows(inputs)
    if rows >= self.parameters.max_batch_size or not all(
        len(a.shape) for a in inputs.values()):
      return function(inputs)
    request = _Request(inputs, rows)
    with self._cond:
      queue = self._queues.setdefault(key, [])
      queue.append(request)
      request.leader = len(queue) == 1
      slots = self._slots.setdefault(
          key, threading.Semaphore(self.parameters.num_batch_threads))
      self._cond.notify_all()
    if not request.leader:
      request.wake.wait()
      if not request.leader:  # done by another request's batch
        if request.error:
          raise request.error
        return request.outputs
    with slots:
      self._lead(key, function)
    if request.error:
      raise request.error
    return request.outputs

  def _lead(self, key, function) -> None:
    deadline = time.monotonic() + self.parameters.batch_timeout_micros / 1e6
    limit = self.parameters.max_batch_size
    with self._cond:
      queue = self._queues[key]
      while sum(r.rows for r in queue) < limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          break
        self._cond.wait(remaining)
      batch, rows = [], 0
      while queue and (not batch or rows + queue[0].rows <= limit):
        rows += queue[0].rows
        batch.append(queue.pop(0))
      if queue:  # the next request leads the next batch
        queue[0].leader = True
        queue[0].wake.set()
    self.batches_run += 1
    self._execute(function, batch)

  @staticmethod
  def _execute(function, batch: List[_Request]) -> None:
    try:
      if len(batch) == 1:
        batch[0].outputs = function(batch[0].inputs)
      else:
        merged = {name: _concat([r.inputs[name] for r in batch])
                  for name in batch[0].inputs}
        outputs = function(merged)
        total = sum(r.rows for r in batch)
        if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
          raise ValueError('outputs are not batched by row')
        start = 0
        for request in batch:
          end = start + request.rows
          request.outputs = {k: v[start:end] for k, v in outputs.items()}
          start = end
    except (ServingError, ValueError) as e:
      if len(batch) == 1:
        batch[0].error = e
      else:
        # One bad request must not fail the others: run each alone.
        for request in batch:
          try:
            request.outputs = function(request.inputs)
          except Exception as single_error:  # pylint: disable=broad-except
            request.error = single_error
    except Exception as e:  # pylint: disable=broad-except
      for request in batch:
        request.error = e
    finally:
      for request in batch:
        request.leader = False
        request.wake.set()
