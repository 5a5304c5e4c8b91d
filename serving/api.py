"""What the REST and gRPC front ends share: model status, metadata, and the
conversions between JSON-ish values, tf.Examples and response shapes."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional

from google.protobuf import json_format
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2

from tfx_e2e.serving.errors import Code, ServingError
from tfx_e2e.serving.inference import Inference
from tfx_e2e.serving.models import ModelManager, Servable

_STATE = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass
class ModelService:
  models: ModelManager
  inference: Inference
  # serving.request_log.RequestLoggers, whose drop counts the status shows.
  loggers: Any = None

  # --- status ---

  def status(self, name: str, version: Optional[int] = None,
             label: Optional[str] = None
             ) -> get_model_status_pb2.GetModelStatusResponse:
    states = self.models.states(name)
    if label is not None:
      version = self.models.servable(name, label=label).version
    if version is not None:
      if version not in states:
        raise ServingError(
            Code.NOT_FOUND,
            f'Could not find version {version} of model {name}')
      states = {version: states[version]}
    if not states:
      raise ServingError(Code.NOT_FOUND,
                         f'Could not find any versions of model {name}')
    response = get_model_status_pb2.GetModelStatusResponse()
    for number, state in sorted(states.items(), reverse=True):
      status = response.model_version_status.add(
          version=number, state=_STATE.Value(state.state))
      status.status.SetInParent()  # TF Serving always sends it (OK = 0)
      if state.error:
        status.status.error_code = 13  # INTERNAL, as a failed load
        status.status.error_message = state.error
    logger = self.loggers.get(name) if self.loggers else None
    note = logger.status_note() if logger is not None else ''
    if note:
      # The status code stays OK (requests are answered); the message
      # says that the request log is missing records.
      for status in response.model_version_status:
        if status.state == _STATE.AVAILABLE and not status.status.error_code:
          status.status.error_message = note
    return response

  def status_json(self, name, version=None, label=None) -> Dict[str, Any]:
    return json_format.MessageToDict(
        self.status(name, version, label),
        including_default_value_fields=True, preserving_proto_field_name=True)

  # --- metadata ---

  def metadata(self, name: str, version: Optional[int] = None,
               label: Optional[str] = None
               ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    servable = self.models.servable(name, version, label)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    fill_model_spec(response.model_spec, servable)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in servable.signature_defs.items():
      signatures.signature_def[key].CopyFrom(signature_def)
    response.metadata['signature_def'].Pack(signatures)
    return response

  def metadata_json(self, name, version=None, label=None) -> Dict[str, Any]:
    response = self.metadata(name, version, label)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata['signature_def'].Unpack(signatures)
    return {
        'model_spec': json_format.MessageToDict(
            response.model_spec, including_default_value_fields=True,
            preserving_proto_field_name=True),
        'metadata': {'signature_def': json_format.MessageToDict(
            signatures, preserving_proto_field_name=True)},
    }


def serialized_examples(model_input) -> Optional[List[bytes]]:
  """The serialized tf.Examples of a Regress/Classify `Input`, its context
  merged into each (example_list_with_context), or None when it has none."""
  kind = model_input.WhichOneof('kind')
  if kind == 'example_list':
    return [e.SerializeToString() for e in model_input.example_list.examples]
  if kind == 'example_list_with_context':
    with_context = model_input.example_list_with_context
    serialized = []
    for example in with_context.examples:
      merged = tf.train.Example()
      merged.CopyFrom(with_context.context)
      merged.MergeFrom(example)
      serialized.append(merged.SerializeToString())
    return serialized
  return None


def fill_model_spec(spec: model_pb2.ModelSpec, servable: Servable,
                    signature_name: str = '') -> None:
  spec.name = servable.name
  spec.version.value = servable.version
  spec.signature_name = signature_name


def predict_json(outputs: Mapping[str, np.ndarray], row_format: bool,
                 to_json: Callable[[np.ndarray, str], Any]) -> Dict[str, Any]:
  """TF Serving's response shapes: `predictions` (rows) or `outputs`."""
  if row_format:
    if len(outputs) == 1:
      (name, array), = outputs.items()
      return {'predictions': to_json(array, name)}
    columns = {name: to_json(array, name) for name, array in outputs.items()}
    rows = len(next(iter(columns.values())))
    return {'predictions': [{name: column[i] for name, column in
                             columns.items()} for i in range(rows)]}
  if len(outputs) == 1:
    (name, array), = outputs.items()
    return {'outputs': to_json(array, name)}
  return {'outputs': {name: to_json(array, name)
                      for name, array in outputs.items()}}


def is_b64(value: dict) -> bool:
  """Whether a JSON object is TF Serving's {"b64": ...} form of bytes."""
  return len(value) == 1 and 'b64' in value


def decode_strings(value):
  """JSON values for a string tensor: {"b64": ...} and text become bytes."""
  if isinstance(value, list):
    if set(map(type, value)) == {str}:  # the common case, at C speed
      return list(map(str.encode, value))
    return [decode_strings(v) for v in value]
  if isinstance(value, dict):
    if is_b64(value) and isinstance(value['b64'], str):
      try:
        return base64.b64decode(value['b64'], validate=True)
      except ValueError as e:
        raise ServingError(Code.INVALID_ARGUMENT,
                           f'Unable to base64 decode: {e}') from None
    raise ServingError(Code.INVALID_ARGUMENT,
                       f'Expecting a string or {{"b64": ...}}, got {value}')
  if isinstance(value, str):
    return value.encode('utf-8')
  return value


def _feature(value, where: str) -> tf.train.Feature:
  values = value if isinstance(value, list) else [value]
  if all(isinstance(v, bool) for v in values) and values:
    raise ServingError(Code.INVALID_ARGUMENT,
                       f'{where}: booleans are not tf.Example values')
  if all(isinstance(v, int) for v in values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  if all(isinstance(v, (int, float)) for v in values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))
  if all(isinstance(v, (str, bytes, dict)) for v in values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=decode_strings(values)))
  raise ServingError(
      Code.INVALID_ARGUMENT,
      f'{where}: a feature value must be a number, a string, '
      f'{{"b64": ...}} or a list of one of those; got {value!r}')


def example_from_features(features: Mapping[str, Any],
                          where: str) -> tf.train.Example:
  """A tf.Example from JSON feature values, as TF Serving's REST API builds
  them: integers -> int64_list, other numbers -> float_list, strings and
  {"b64": ...} -> bytes_list."""
  example = tf.train.Example()
  for name, value in features.items():
    example.features.feature[name].CopyFrom(
        _feature(value, f'{where}.{name}'))
  return example
