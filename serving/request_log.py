"""Request logging in TF Serving's own format: `PredictionLog` TFRecords.

`tfx-e2e serve --logging_config FILE` (and a model's `logging_config` in
`--model_config_file`) takes TF Serving's `LoggingConfig` text proto:

    log_collector_config { type: "tfrecord" filename_prefix: "/logs/taxi" }
    sampling_config { sampling_rate: 0.1 }

A sampled request that succeeded becomes one `PredictionLog` (predict_log,
regress_log or classify_log: request and response with the model spec of
the version that answered, log metadata with the sampling config and the
time). Records go to `<prefix>-<UTC time>-<pid>-<n>.tfrecord`; a file is
written as a hidden `.…tmp` beside it and renamed into place when it is
complete (it reached `max_file_bytes` or `max_file_seconds`, or the server
stopped), so whatever reads `<prefix>-*.tfrecord` only ever sees whole
files, and a record is never split across two.

Logging never slows or fails a request: the request path only draws the
sample and puts the parts of the record (references to the request's
tensors and the response's arrays) on a bounded queue; a writer process
builds, serializes and writes the records (the queue's own thread pickles
the arrays to it). When the queue is full the
record is dropped and counted; the count is in the model's status and in
the server's log.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import multiprocessing
import os
import queue
import random
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from google.protobuf import text_format
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import logging_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import logging_config_pb2

_log = logging.getLogger(__name__)

# The one collector type: TFRecord files of PredictionLog.
COLLECTOR_TYPES = ('tfrecord',)
SUFFIX = '.tfrecord'
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FILE_SECONDS = 300.0
DEFAULT_QUEUE_RECORDS = 10_000
SERVE_TAGS = ('serve',)
DEFAULT_SIGNATURE = 'serving_default'


class LoggingConfigError(ValueError):
  """A LoggingConfig that cannot be used; the message says where and why."""


def parse_logging_config(text: str, where: str
                         ) -> logging_config_pb2.LoggingConfig:
  """A LoggingConfig from its text proto, checked (see check_logging_config)."""
  config = logging_config_pb2.LoggingConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as e:
    raise LoggingConfigError(f'{where}: not a LoggingConfig text proto: '
                             f'{e}') from None
  check_logging_config(config, where)
  return config


def check_logging_config(config: logging_config_pb2.LoggingConfig,
                         where: str) -> None:
  """Raises LoggingConfigError unless `config` says where to log and a
  sampling rate in [0, 1]."""
  collector = config.log_collector_config
  kind = collector.type.strip().lower()
  if kind not in COLLECTOR_TYPES:
    raise LoggingConfigError(
        f'{where}: log_collector_config.type {collector.type!r} is not one '
        f'of {", ".join(COLLECTOR_TYPES)} (TFRecord files of PredictionLog)')
  if not collector.filename_prefix.strip():
    raise LoggingConfigError(
        f'{where}: log_collector_config.filename_prefix is empty: say where '
        'the log files go, e.g. "/logs/requests"')
  if not config.HasField('sampling_config'):
    raise LoggingConfigError(
        f'{where}: no sampling_config: give sampling_config '
        '{ sampling_rate: R } with R in [0, 1] (1 logs every request)')
  rate = config.sampling_config.sampling_rate
  if not (math.isfinite(rate) and 0 <= rate <= 1):
    raise LoggingConfigError(
        f'{where}: sampling_config.sampling_rate {rate} is not in [0, 1]')


def read_logging_config(path: str) -> logging_config_pb2.LoggingConfig:
  try:
    text = Path(path).read_text()
  except (OSError, UnicodeDecodeError) as e:
    raise LoggingConfigError(f'--logging_config {path}: {e}') from None
  return parse_logging_config(text, f'--logging_config {path}')


# --- the records ------------------------------------------------------------


def log_metadata(name: str, version: int, signature_name: str,
                 sampling_rate: float, timestamp_secs: int
                 ) -> logging_pb2.LogMetadata:
  metadata = logging_pb2.LogMetadata(timestamp_secs=timestamp_secs)
  metadata.model_spec.name = name
  metadata.model_spec.version.value = version
  metadata.model_spec.signature_name = signature_name
  metadata.sampling_config.sampling_rate = sampling_rate
  metadata.saved_model_tags.extend(SERVE_TAGS)
  return metadata


@dataclasses.dataclass
class Entry:
  """What the request path hands the writer: references, nothing built."""
  kind: str                 # predict | regress | classify
  name: str
  version: int
  signature_name: str
  timestamp_secs: int
  sampling_rate: float
  request: object           # predict: {input: tensor/array}; else examples
  response: object          # predict: {output: array}; regress: [float];
                            # classify: [[(label, score)]]


_DATATYPES: Dict[np.dtype, int] = {}


def tensor_proto(value) -> tensor_pb2.TensorProto:
  """A TensorProto of a tensor or array, as tf.make_tensor_proto writes it
  (numbers in tensor_content, strings in string_val) at a tenth of its
  cost: the writer thread shares the GIL with the requests."""
  array = value.numpy() if isinstance(value, tf.Tensor) else np.asarray(value)
  proto = tensor_pb2.TensorProto()
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  if array.dtype == object or array.dtype.kind in 'SU':
    proto.dtype = types_pb2.DT_STRING
    proto.string_val.extend(
        v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
    return proto
  datatype = _DATATYPES.get(array.dtype)
  if datatype is None:
    datatype = _DATATYPES[array.dtype] = tf.as_dtype(
        array.dtype).as_datatype_enum
  proto.dtype = datatype
  proto.tensor_content = np.ascontiguousarray(array).astype(
      array.dtype.newbyteorder('<'), copy=False).tobytes()
  return proto


def _specs(entry: Entry, *messages) -> None:
  for message in messages:
    message.model_spec.name = entry.name
    message.model_spec.version.value = entry.version
    message.model_spec.signature_name = entry.signature_name


def _add_examples(example_list, serialized: Iterable[bytes]) -> None:
  for record in serialized:
    example_list.examples.add().MergeFromString(record)


def build_record(entry: Entry) -> prediction_log_pb2.PredictionLog:
  """The PredictionLog of one logged request."""
  record = prediction_log_pb2.PredictionLog()
  record.log_metadata.CopyFrom(log_metadata(
      entry.name, entry.version, entry.signature_name, entry.sampling_rate,
      entry.timestamp_secs))
  if entry.kind == 'predict':
    log = record.predict_log
    _specs(entry, log.request, log.response)
    for name, value in entry.request.items():
      log.request.inputs[name].CopyFrom(tensor_proto(value))
    for name, value in entry.response.items():
      log.response.outputs[name].CopyFrom(tensor_proto(value))
  elif entry.kind == 'regress':
    log = record.regress_log
    _specs(entry, log.request, log.response)
    _add_examples(log.request.input.example_list, entry.request)
    for value in entry.response:
      log.response.result.regressions.add(value=value)
  elif entry.kind == 'classify':
    log = record.classify_log
    _specs(entry, log.request, log.response)
    _add_examples(log.request.input.example_list, entry.request)
    for row in entry.response:
      classifications = log.response.result.classifications.add()
      for label, score in row:
        classifications.classes.add(label=label, score=score)
  else:
    raise ValueError(f'unknown request kind {entry.kind!r}')
  return record


def list_kinds(input_types: Dict[str, tf.dtypes.DType]) -> Dict[str, str]:
  """{feature: its tf.Example list field} for the model's input types."""
  return {name: 'bytes_list' if dtype == tf.string else
          'float_list' if dtype.is_floating else 'int64_list'
          for name, dtype in input_types.items()}


def _typed_empty(serialized: bytes, kinds: Dict[str, str]) -> bytes:
  """The example with each value-less feature (no list at all) given an
  empty list of its kind, as the pipeline's ExampleGen writes a missing
  value; both parse as missing, but TFDV counts the first as a missing
  feature and the second as a feature without values."""
  example = tf.train.Example.FromString(serialized)
  changed = False
  for name, feature in example.features.feature.items():
    if feature.WhichOneof('kind') is None and name in kinds:
      getattr(feature, kinds[name]).SetInParent()
      changed = True
  return example.SerializeToString() if changed else serialized


def regress_records(serialized_examples: Sequence[bytes],
                    predictions: Sequence[float], name: str, version: int,
                    timestamp_secs: int, rows_per_record: int = 1,
                    signature_name: str = DEFAULT_SIGNATURE,
                    kinds: Optional[Dict[str, str]] = None) -> List[bytes]:
  """Serialized PredictionLogs (regress_log) of rows a batch or stream job
  scored: `rows_per_record` rows a record, as a client would send them.
  With `kinds` (list_kinds), value-less features are written as ExampleGen
  writes them (_typed_empty)."""
  if kinds:
    serialized_examples = [_typed_empty(e, kinds)
                           for e in serialized_examples]
  records = []
  predictions = np.asarray(predictions, dtype=np.float64).ravel().tolist()
  for start in range(0, len(serialized_examples), rows_per_record):
    end = start + rows_per_record
    records.append(build_record(Entry(
        'regress', name, int(version), signature_name, int(timestamp_secs),
        1.0, serialized_examples[start:end], predictions[start:end]
    )).SerializeToString())
  return records


# --- the files --------------------------------------------------------------


def _utc_stamp(seconds: float) -> str:
  return time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(seconds))


class LogFiles:
  """TFRecord files under one prefix, rolled by size and age; each written
  as a hidden temporary file and renamed into place once complete."""

  def __init__(self, prefix: str,
               max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
               max_file_seconds: float = DEFAULT_MAX_FILE_SECONDS,
               clock: Callable[[], float] = time.time):
    self.prefix = prefix
    self.max_file_bytes = max_file_bytes
    self.max_file_seconds = max_file_seconds
    self._clock = clock
    self._sequence = itertools.count(1)
    self._writer: Optional[tf.io.TFRecordWriter] = None
    self._temporary = self._final = ''
    self._opened = 0.0
    self._bytes = 0
    self.completed: List[str] = []  # final paths, in order
    directory = os.path.dirname(prefix) or '.'
    tf.io.gfile.makedirs(directory)

  def _open(self) -> None:
    now = self._clock()
    # The pid keeps two servers (or pods) on one prefix apart; the
    # sequence keeps files of one second apart.
    final = (f'{self.prefix}-{_utc_stamp(now)}-{os.getpid()}-'
             f'{next(self._sequence):05d}{SUFFIX}')
    directory, name = os.path.split(final)
    self._final = final
    self._temporary = os.path.join(directory, f'.{name}.tmp')
    self._writer = tf.io.TFRecordWriter(self._temporary)
    self._opened, self._bytes = now, 0

  def write(self, record: bytes) -> None:
    if self._writer is None:
      self._open()
    self._writer.write(record)
    # TFRecord framing: length (8), its CRC (4), the data, its CRC (4).
    self._bytes += len(record) + 16
    if self._bytes >= self.max_file_bytes:
      self.close()

  def seconds_left(self) -> Optional[float]:
    """Until the open file is due to roll over; None if none is open."""
    if self._writer is None:
      return None
    return max(0.0, self._opened + self.max_file_seconds - self._clock())

  def roll_if_due(self) -> None:
    left = self.seconds_left()
    if left is not None and left <= 0:
      self.close()

  def close(self) -> None:
    """Completes the open file (renamed into place), if any."""
    if self._writer is None:
      return
    writer, self._writer = self._writer, None
    writer.close()
    tf.io.gfile.rename(self._temporary, self._final, overwrite=False)
    self.completed.append(self._final)


# --- the logger -------------------------------------------------------------


def _entry_state(entry: 'Entry') -> dict:
  """Tensors as arrays: what crosses to the writer process."""
  state = dict(entry.__dict__)
  if entry.kind == 'predict':
    state['request'] = {name: value.numpy() if isinstance(value, tf.Tensor)
                        else value for name, value in entry.request.items()}
  return state


Entry.__getstate__ = _entry_state  # runs in the queue's feeder thread


def _writer_main(entries, prefix: str, max_file_bytes: int,
                 max_file_seconds: float, logged, failed, files) -> None:
  """The writer process: builds, serializes and writes the records.

  It ignores SIGINT and SIGTERM: the server sends the end of the queue when
  it stops, and the open file is completed then. If the server dies without
  doing so, the writer completes its file once it sees it is orphaned.
  """
  import signal  # pylint: disable=import-outside-toplevel
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  # The requests come first when the cores are busy; the queue absorbs
  # the writer's delay (and counts what it cannot).
  os.nice(19)
  parent = os.getppid()
  log_files = LogFiles(prefix, max_file_bytes, max_file_seconds)

  def guarded(step):
    try:
      step()
    except Exception:  # pylint: disable=broad-except
      _log.exception('request log %s: completing a file failed', prefix)
    files.value = len(log_files.completed)

  while True:
    left = log_files.seconds_left()
    try:
      entry = entries.get(timeout=1.0 if left is None else min(left, 1.0))
    except queue.Empty:
      guarded(log_files.roll_if_due)
      if os.getppid() != parent:  # orphaned: the server is gone
        guarded(log_files.close)
        return
      continue
    if entry is None:  # the end of the queue
      guarded(log_files.close)
      return
    try:
      log_files.write(build_record(entry).SerializeToString())
    except Exception:  # pylint: disable=broad-except
      with failed.get_lock():
        failed.value += 1
      _log.exception('request log %s: a record was not written', prefix)
    else:
      with logged.get_lock():
        logged.value += 1
    guarded(log_files.roll_if_due)


def _context():
  """Processes forked from a server process that imported only this
  module: a fork of the serving process itself would copy its running
  threads' locks (gRPC, TensorFlow), and a fresh interpreter would import
  TensorFlow again for each logger."""
  context = multiprocessing.get_context('forkserver')
  context.set_forkserver_preload([__name__])
  return context


class RequestLogger:
  """One LoggingConfig's logger: samples and queues in the serving
  process; a writer process builds and writes the records (see the module
  doc), so the serving process spends no time on them, nor on the GIL."""

  def __init__(self, config: logging_config_pb2.LoggingConfig,
               max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
               max_file_seconds: float = DEFAULT_MAX_FILE_SECONDS,
               queue_records: int = DEFAULT_QUEUE_RECORDS,
               rng: Optional[random.Random] = None):
    self.config = config
    self.sampling_rate = config.sampling_config.sampling_rate
    self.prefix = config.log_collector_config.filename_prefix
    self._max_file_bytes = max_file_bytes
    self._max_file_seconds = max_file_seconds
    # Fails early (exit 2 from `serve`) for a directory that cannot be made.
    tf.io.gfile.makedirs(os.path.dirname(self.prefix) or '.')
    context = _context()
    self._context = context
    self._queue = context.Queue(maxsize=max(1, queue_records))
    self._logged = context.Value('q', 0)
    self._failed = context.Value('q', 0)
    self._files = context.Value('q', 0)
    self._random = (rng or random.Random()).random
    self._counts_lock = threading.Lock()
    self.dropped = 0   # records dropped: the queue was full
    self._process = None

  @property
  def logged(self) -> int:
    """Records written."""
    return self._logged.value

  @property
  def failed(self) -> int:
    """Records that could not be built or written."""
    return self._failed.value

  @property
  def files_written(self) -> int:
    """Files completed (renamed into place)."""
    return self._files.value

  def start(self) -> 'RequestLogger':
    self._process = self._context.Process(
        target=_writer_main, name='request-log-writer', daemon=True,
        args=(self._queue, self.prefix, self._max_file_bytes,
              self._max_file_seconds, self._logged, self._failed,
              self._files))
    self._process.start()
    return self

  def sampled(self) -> bool:
    rate = self.sampling_rate
    return rate >= 1 or (rate > 0 and self._random() < rate)

  def log(self, kind: str, name: str, version: int, signature_name: str,
          request, response) -> None:
    """Queues one answered request, if sampled; never blocks or raises."""
    if not self.sampled():
      return
    entry = Entry(kind, name, version, signature_name or DEFAULT_SIGNATURE,
                  int(time.time()), self.sampling_rate, request, response)
    try:
      self._queue.put_nowait(entry)
    except queue.Full:
      with self._counts_lock:
        self.dropped += 1
        dropped = self.dropped
      # The first drop and then at each power of two: a full queue stays
      # visible without a line per request.
      if dropped & (dropped - 1) == 0:
        _log.warning('request log %s: queue full (%d records), %d records '
                     'dropped so far', self.prefix,
                     self._queue._maxsize, dropped)  # pylint: disable=protected-access

  def close(self, timeout: float = 60.0) -> None:
    """Writes what is queued, completes the open file, ends the writer."""
    if self._process is None:
      return
    try:
      self._queue.put(None, timeout=timeout)  # after everything queued
    except queue.Full:
      _log.error('request log %s: the writer takes no more records',
                 self.prefix)
    self._process.join(timeout)
    if self._process.is_alive():
      _log.error('request log %s: the writer did not finish in %g s',
                 self.prefix, timeout)
      self._process.kill()
    elif self._process.exitcode:
      _log.error('request log %s: the writer exited with %s', self.prefix,
                 self._process.exitcode)
    self._process = None

  def status_note(self) -> str:
    """One line for the model status; '' while nothing was dropped."""
    dropped, failed = self.dropped, self.failed
    if not (dropped or failed):
      return ''
    return (f'request log: {dropped} records dropped (queue full), '
            f'{failed} failed, {self.logged} written')


class RequestLoggers:
  """The loggers of a server: model name -> its RequestLogger (models
  that share a LoggingConfig share one)."""

  def __init__(self, by_model: Dict[str, RequestLogger]):
    self._by_model = by_model

  def __bool__(self) -> bool:
    return bool(self._by_model)

  def get(self, name: str) -> Optional[RequestLogger]:
    return self._by_model.get(name)

  def start(self) -> 'RequestLoggers':
    for logger in self.unique():
      logger.start()
    return self

  def close(self) -> None:
    for logger in self.unique():
      logger.close()
      _log.info('request log %s: %d records written to %d files, %d '
                   'dropped (queue full), %d failed', logger.prefix,
                   logger.logged, logger.files_written, logger.dropped,
                   logger.failed)

  def unique(self) -> List[RequestLogger]:
    seen = {}
    for logger in self._by_model.values():
      seen[id(logger)] = logger
    return list(seen.values())
