"""Logged requests (PredictionLog TFRecords) -> the model's raw features.

A record's rows come from its request: `predict_log` inputs (one tensor per
raw feature, as the serving_raw signature takes them, or one string tensor
of serialized tf.Examples, as serving_default takes them), or the examples
of `regress_log` / `classify_log`. Values are read as the pipeline's
examples hold them, so that their statistics compare with the training
statistics: a value the model reads as missing ('' or NaN in a raw input,
a feature with no values in an example) is an empty list; a feature the
request does not have at all is null (missing). Columns of the schema that
the model does not read (the label, excluded columns), which a client may
send in its examples, are left out; columns the schema does not know are
kept, and TFDV reports them.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pyarrow as pa
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_serving.apis import prediction_log_pb2

from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top

from tfx_e2e.serving import api

Row = Dict[str, Optional[list]]
_DECODER = example_coder.ExamplesToRecordBatchDecoder()

# As tfx-bsl's example decoder types them (TFDV merges a window's batches,
# which must agree).
_ARROW_TYPES = {schema_pb2.INT: pa.large_list(pa.int64()),
                schema_pb2.FLOAT: pa.large_list(pa.float32()),
                schema_pb2.BYTES: pa.large_list(pa.large_binary())}
_BY_KIND = {int: pa.large_list(pa.int64()), float: pa.large_list(pa.float32()),
            bytes: pa.large_list(pa.large_binary())}


class BadRecord(ValueError):
  """A record that is not a logged request this monitor can read."""


def _feature_values(feature: tf.train.Feature) -> list:
  kind = feature.WhichOneof('kind')
  return list(getattr(feature, kind).value) if kind else []


def _example_rows(examples: Iterable[tf.train.Example],
                  context: Optional[tf.train.Example] = None) -> List[Row]:
  rows = []
  for example in examples:
    if context is not None:
      merged = tf.train.Example()
      merged.CopyFrom(context)
      merged.MergeFrom(example)
      example = merged
    rows.append({name: _feature_values(feature)
                 for name, feature in example.features.feature.items()})
  return rows


def _input_examples(model_input) -> List[bytes]:
  """The serialized examples of a Regress/Classify Input (with its
  context merged into each)."""
  serialized = api.serialized_examples(model_input)
  if serialized is None:
    raise BadRecord('a request without examples')
  return serialized


def _present(value) -> bool:
  """Whether a raw input value is a value (serving_raw's convention: ''
  and NaN mark a missing one)."""
  if isinstance(value, bytes):
    return value != b''
  if isinstance(value, float):
    return not math.isnan(value)
  return True


def _predict_parts(request, features: Sequence[str]
                   ) -> Tuple[List[bytes], List[Row]]:
  arrays = {}
  for name, proto in request.inputs.items():
    try:
      arrays[name] = tf.make_ndarray(proto)
    except Exception as e:  # pylint: disable=broad-except
      raise BadRecord(f'input {name!r} is not a readable tensor: {e}'
                      ) from None
  if not arrays:
    raise BadRecord('a predict request without inputs')
  if not set(arrays) & set(features) and len(arrays) == 1:
    (name, array), = arrays.items()
    if array.dtype == object:  # serialized tf.Examples (serving_default)
      return [bytes(v) for v in array.ravel()], []
  sizes = {a.shape[0] if a.ndim else 1 for a in arrays.values()}
  if len(sizes) != 1:
    raise BadRecord(f'inputs of different batch sizes {sorted(sizes)}')
  size = sizes.pop()
  columns = {}
  for name, array in arrays.items():
    array = array.reshape(size, -1)
    columns[name] = [[v for v in row if _present(v)]
                     for row in array.tolist()]
  return [], [{name: column[i] for name, column in columns.items()}
              for i in range(size)]


def parse_record(data: bytes, features: Sequence[str]
                 ) -> Tuple[int, int, List[Row]]:
  """(logged time in Unix seconds, model version, rows) of one record.

  Raises:
    BadRecord: not a PredictionLog of a predict, regress or classify
      request, or examples that are not tf.Examples.
  """
  when, version, examples, rows = record_parts(data, features)
  return when, version, examples_rows(examples) + rows


def examples_rows(examples: Sequence[bytes]) -> List[Row]:
  try:
    return _example_rows(tf.train.Example.FromString(e) for e in examples)
  except Exception as e:  # pylint: disable=broad-except
    raise BadRecord(f'examples that are not tf.Examples: {e}') from None


def record_parts(data: bytes, features: Sequence[str]
                 ) -> Tuple[int, int, List[bytes], List[Row]]:
  """(logged time in Unix seconds, model version, serialized tf.Examples,
  rows) of one record: requests of examples give the first, of raw inputs
  the second.

  Raises:
    BadRecord: not a PredictionLog of a predict, regress or classify
      request.
  """
  record = prediction_log_pb2.PredictionLog()
  try:
    record.ParseFromString(data)
  except Exception as e:  # pylint: disable=broad-except
    raise BadRecord(f'not a PredictionLog: {e}') from None
  kind = record.WhichOneof('log_type')
  if kind == 'predict_log':
    examples, rows = _predict_parts(record.predict_log.request, features)
  elif kind in ('regress_log', 'classify_log'):
    examples, rows = _input_examples(getattr(record, kind).request.input), []
  else:
    raise BadRecord('not a PredictionLog of a predict, regress or classify '
                    f'request ({kind or "no log type"})')
  metadata = record.log_metadata
  if not metadata.timestamp_secs:
    raise BadRecord('no log_metadata.timestamp_secs (the request time)')
  return (metadata.timestamp_secs, metadata.model_spec.version.value,
          examples, rows)


# The Python values each schema type takes as it is (pyarrow would also
# truncate 2.5 into an int64 column, without a word).
_FITS = {schema_pb2.INT: (int,), schema_pb2.FLOAT: (int, float),
         schema_pb2.BYTES: (bytes,)}


def _fits(values: List[Optional[list]], feature_type) -> bool:
  kinds = _FITS.get(feature_type)
  return kinds is not None and all(
      type(v) in kinds for row in values if row for v in row)


def _column(values: List[Optional[list]], feature_type) -> pa.Array:
  arrow_type = _ARROW_TYPES.get(feature_type)
  if arrow_type is not None and _fits(values, feature_type):
    try:
      return pa.array(values, type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
      pass  # values of another type: TFDV reports the type anomaly
  kinds = {type(v) for row in values if row for v in row}
  if len(kinds) == 1 and next(iter(kinds)) in _BY_KIND:
    # Another type than the schema's: TFDV reports the type change.
    return pa.array(values, type=_BY_KIND[next(iter(kinds))])
  if not kinds:
    return pa.array(values, type=arrow_type or pa.large_list(pa.int64()))
  # Mixed kinds in one feature: as text, which TFDV reports as a type
  # change against a numeric schema type.
  return pa.array([None if v is None else [str(x).encode() for x in v]
                   for v in values], type=pa.large_list(pa.large_binary()))


def record_batch(rows: List[Row], types: Dict[str, int],
                 ignored: Sequence[str] = ()) -> pa.RecordBatch:
  """Rows -> one RecordBatch of list columns, typed as the schema says;
  without the `ignored` columns."""
  names = sorted({name for row in rows for name in row} - set(ignored))
  arrays = [_column([row.get(name) for row in rows], types.get(name))
            for name in names]
  return pa.RecordBatch.from_arrays(arrays, names)


def examples_batch(examples: List[bytes], types: Dict[str, int],
                   ignored: Sequence[str] = ()) -> pa.RecordBatch:
  """Serialized tf.Examples -> one RecordBatch, decoded as StatisticsGen
  decodes the training examples (tfx-bsl's decoder, types from the
  values); examples whose features differ in type between them, which
  that decoder refuses, go through record_batch.

  Raises:
    BadRecord: bytes that are not tf.Examples.
  """
  try:
    batch = _DECODER.DecodeBatch(examples)
  except RuntimeError:
    return record_batch(examples_rows(examples), types, ignored)
  names, columns = [], []
  for name, column in zip(batch.schema.names, batch.columns):
    if name in ignored:
      continue
    if (types.get(name) == schema_pb2.FLOAT and
        column.type == pa.large_list(pa.int64())):
      # Integers of a float feature (as a JSON client sends 3 for 3.0).
      column = column.cast(_ARROW_TYPES[schema_pb2.FLOAT])
    names.append(name)
    columns.append(column)
  return pa.RecordBatch.from_arrays(columns, names)


def schema_types(schema: schema_pb2.Schema) -> Dict[str, int]:
  return {feature.name: feature.type for feature in schema.feature}


def window_start(timestamp_secs: int, window_seconds: int) -> int:
  return timestamp_secs - timestamp_secs % window_seconds
