"""What the batch (`predict`) and streaming (`stream`) jobs share: reading
rows into tf.Examples typed as the model reads them, dead letters, and a
RunInference model handler that says which model version answered and can
follow the newest version in a TF Serving model base path.
"""

from __future__ import annotations

import csv
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.ml.inference import base as inference_base
import tensorflow as tf
from tfx_bsl.public.beam.run_inference import CreateModelHandler
from tfx_bsl.public.proto import model_spec_pb2

from serving.models import version_fingerprint

_log = logging.getLogger(__name__)


def complete_versions(base_path: str) -> Dict[int, Path]:
  """Version directories under a model base path that hold a saved_model.pb."""
  base = Path(base_path)
  if not base.is_dir():
    return {}
  return {int(p.name): p for p in base.iterdir()
          if p.name.isdigit() and (p / 'saved_model.pb').is_file()}


def latest_version_dir(base_path: str) -> str:
  versions = complete_versions(base_path)
  if not versions:
    raise FileNotFoundError(f'no pushed model version under {base_path}')
  return str(versions[max(versions)])


def model_input_types(model_dir: str) -> Dict[str, tf.dtypes.DType]:
  """The raw features the model reads, and their types (from serving_raw)."""
  model = tf.saved_model.load(model_dir)
  if 'serving_raw' not in model.signatures:
    raise ValueError(f'{model_dir}: the model has no serving_raw signature')
  inputs = model.signatures['serving_raw'].structured_input_signature[1]
  return {name: spec.dtype for name, spec in inputs.items()}


def _feature(value: str, dtype: tf.dtypes.DType) -> tf.train.Feature:
  if dtype == tf.string:
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[value.encode('utf-8')]))
  if dtype.is_integer:
    number = float(value)
    if not number.is_integer():
      raise ValueError(f'{value!r} is not an integer')
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(number)]))
  number = float(value)  # ValueError for text
  if not math.isfinite(number):
    raise ValueError(f'{value!r} is not a finite number')
  return tf.train.Feature(float_list=tf.train.FloatList(value=[number]))


def csv_rows(text: str) -> Iterator[Tuple[int, str, Any]]:
  """(line number, raw line, fields) for each data row of a CSV file, where
  fields is a {column: value} dict, or an error message for a bad row."""
  lines = text.splitlines()
  if not lines:
    return
  header = next(csv.reader([lines[0]]))
  for number, raw in enumerate(lines[1:], start=2):
    if not raw.strip():
      continue
    try:
      fields = next(csv.reader([raw]))
    except csv.Error as e:
      yield number, raw, f'malformed CSV: {e}'
      continue
    if len(fields) != len(header):
      yield number, raw, (f'{len(fields)} fields, but the header has '
                          f'{len(header)}')
      continue
    yield number, raw, dict(zip(header, fields))


def to_example(fields: Dict[str, str],
               input_types: Dict[str, tf.dtypes.DType]) -> tf.train.Example:
  """A tf.Example typed as the model reads it. An empty value is left out,
  so that the model imputes it. A ValueError names the bad column."""
  example = tf.train.Example()
  for name, dtype in input_types.items():
    if fields.get(name, '') != '':
      try:
        example.features.feature[name].CopyFrom(_feature(fields[name], dtype))
      except ValueError as e:
        raise ValueError(f'column {name!r}: {e}') from None
  return example


_KIND = {'bytes_list': tf.string, 'int64_list': tf.int64,
         'float_list': tf.float32}


def check_example(example: tf.train.Example,
                  input_types: Dict[str, tf.dtypes.DType]) -> None:
  """Raises a ValueError naming the feature if `example` does not match the
  model's input types (the model would fail the whole batch on it)."""
  for name, dtype in input_types.items():
    if name not in example.features.feature:
      continue
    feature = example.features.feature[name]
    kind = feature.WhichOneof('kind')
    values = getattr(feature, kind).value if kind else []
    if len(values) > 1:
      raise ValueError(f'feature {name!r}: {len(values)} values, expected 1')
    if values and not (
        _KIND[kind] == dtype or (dtype.is_floating and kind == 'float_list')):
      raise ValueError(f'feature {name!r}: {kind} where the model reads '
                       f'{dtype.name}')
    if kind == 'float_list' and values and not math.isfinite(values[0]):
      raise ValueError(f'feature {name!r}: {values[0]} is not finite')


def dead_letter(path: str, line: int, raw: str, error: str) -> Dict:
  """A row that was not predicted, and why; `line` is the CSV line or the
  TFRecord record number (from 1)."""
  return {'file': path, 'line': line, 'row': raw, 'error': error}


def counter_value(result, namespace: str, name: str) -> int:
  """A Beam counter's total from a finished job."""
  counters = result.metrics().query(beam.metrics.MetricsFilter()
                                    .with_namespace(namespace)
                                    .with_name(name))['counters']
  return int(sum(c.committed or c.attempted or 0 for c in counters))


def prediction_value(log) -> float:
  """The prediction in a tfx-bsl PredictionLog."""
  if log.HasField('regress_log'):
    return log.regress_log.response.result.regressions[0].value
  outputs = log.predict_log.response.outputs
  return float(tf.make_ndarray(next(iter(outputs.values()))).ravel()[0])


class _LiveModel:
  """The loaded model version. With a base path, a background thread looks
  every `poll_seconds` and swaps in a newer version once it is complete
  (holds saved_model.pb and is unchanged between two looks), as TF Serving
  does; inference never waits for a load."""

  def __init__(self, model_dir: str, base_path: Optional[str],
               poll_seconds: float):
    self.current = self._load(model_dir)
    self._base_path = base_path
    self._fingerprints: Dict[int, Any] = {}
    self._failed: Dict[int, Any] = {}
    if base_path:
      threading.Thread(target=self._watch, args=(poll_seconds,), daemon=True,
                       name='model-version-watch').start()

  @staticmethod
  def _load(model_dir: str):
    spec = model_spec_pb2.InferenceSpecType(
        saved_model_spec=model_spec_pb2.SavedModelSpec(
            model_path=model_dir, signature_name=['serving_default']))
    handler = CreateModelHandler(spec)
    return handler, handler.load_model(), Path(model_dir).name

  def _watch(self, poll_seconds: float) -> None:
    while True:
      time.sleep(poll_seconds)
      try:
        self._look()
      except Exception:  # pylint: disable=broad-except
        _log.exception('looking for a new model version failed')

  def _look(self) -> None:
    versions = complete_versions(self._base_path)
    current = int(self.current[2])
    newer = [v for v in versions if v > current]
    if not newer:
      return
    newest = max(newer)
    fingerprint = version_fingerprint(versions[newest])
    previous, self._fingerprints[newest] = (
        self._fingerprints.get(newest), fingerprint)
    if (fingerprint is None or fingerprint != previous or
        self._failed.get(newest) == fingerprint):
      return  # first seen, still being written, or failed as it is
    try:
      loaded = self._load(str(versions[newest]))
    except Exception:  # pylint: disable=broad-except
      _log.exception('loading model version %d failed; keeping %d', newest,
                     current)
      self._failed[newest] = fingerprint  # retried once the files change
      return
    self.current = loaded  # one reference assignment: the swap
    _log.info('now predicting with model version %d', newest)


class VersionedModelHandler(inference_base.ModelHandler):
  """tfx-bsl's handler for the model's serving_default signature (serialized
  tf.Example in), answering (PredictionLog, model version) for each example.

  With `base_path`, it follows the newest complete version pushed there,
  looking every `poll_seconds`. (Beam's side-input model updates,
  `RunInference(model_metadata_pcoll=...)`, would do this on Dataflow, but
  the Python DirectRunner blocks the main input until a global-window side
  input is done, so the handler looks itself and works on every runner.)
  """

  def __init__(self, model_dir: str, base_path: Optional[str] = None,
               poll_seconds: float = 1.0):
    super().__init__()
    self._model_dir = model_dir
    self._base_path = base_path
    self._poll_seconds = poll_seconds

  def load_model(self) -> _LiveModel:
    return _LiveModel(self._model_dir, self._base_path, self._poll_seconds)

  def run_inference(self, batch: Sequence[tf.train.Example], model: _LiveModel,
                    inference_args=None):
    handler, loaded, version = model.current
    return [(log, version) for log in handler.run_inference(batch, loaded)]

  def get_num_bytes(self, batch) -> int:
    return sum(example.ByteSize() for example in batch)
