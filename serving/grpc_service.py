"""TF Serving's gRPC API with the official protos and stubs of
tensorflow-serving-api: PredictionService and ModelService."""

from __future__ import annotations

from concurrent import futures
import logging
from typing import Optional

import grpc
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from tfx_e2e.serving import api
from tfx_e2e.serving.errors import Code, ServingError
from tfx_e2e.serving.models import DEFAULT_SIGNATURE

_log = logging.getLogger(__name__)


def _version(model_spec) -> Optional[int]:
  return model_spec.version.value if model_spec.HasField('version') else None


def _label(model_spec) -> Optional[str]:
  return model_spec.version_label or None


def _servable(service: api.ModelService, model_spec):
  return service.models.servable(model_spec.name, _version(model_spec),
                                 _label(model_spec))


def _answered_by(response, servable, request) -> None:
  """The response's model_spec: which version and signature answered."""
  api.fill_model_spec(response.model_spec, servable,
                      request.model_spec.signature_name or DEFAULT_SIGNATURE)


def _serialized_examples(model_input) -> list:
  """Serialized tf.Examples of an Input (example_list or with context)."""
  serialized = api.serialized_examples(model_input)
  if serialized is None:
    raise ServingError(Code.INVALID_ARGUMENT, 'Input is empty.')
  return serialized


def _guard(method):
  """Turns ServingErrors into gRPC status codes with the message, and any
  other exception (a bug, not a bad request) into INTERNAL, as the REST API
  answers 500: the traceback goes to the log, not to the client (gRPC's
  own answer would be UNKNOWN, with the exception's text)."""

  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except ServingError as e:
      context.abort(e.code.grpc_code, e.message)
    except Exception:  # pylint: disable=broad-except
      _log.exception('gRPC %s', method.__name__)
      context.abort(Code.INTERNAL.grpc_code, 'Internal server error')

  wrapper.__name__ = method.__name__
  return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, service: api.ModelService):
    self.service = service

  @_guard
  def Predict(self, request, context):
    servable = _servable(self.service, request.model_spec)
    inputs = {name: tf.make_ndarray(proto)
              for name, proto in request.inputs.items()}
    outputs = self.service.inference.predict(
        servable, request.model_spec.signature_name, inputs,
        list(request.output_filter))
    response = predict_pb2.PredictResponse()
    _answered_by(response, servable, request)
    for name, array in outputs.items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(array))
    return response

  @_guard
  def Regress(self, request, context):
    servable = _servable(self.service, request.model_spec)
    values = self.service.inference.regress(
        servable, request.model_spec.signature_name,
        _serialized_examples(request.input))
    response = regression_pb2.RegressionResponse()
    _answered_by(response, servable, request)
    for value in values:
      response.result.regressions.add(value=value)
    return response

  @_guard
  def Classify(self, request, context):
    servable = _servable(self.service, request.model_spec)
    rows = self.service.inference.classify(
        servable, request.model_spec.signature_name,
        _serialized_examples(request.input))
    response = classification_pb2.ClassificationResponse()
    _answered_by(response, servable, request)
    for row in rows:
      classifications = response.result.classifications.add()
      for label, score in row:
        classifications.classes.add(label=label, score=score)
    return response

  @_guard
  def GetModelMetadata(self, request, context):
    fields = list(request.metadata_field)
    if not fields:
      raise ServingError(Code.INVALID_ARGUMENT,
                         'GetModelMetadataRequest must specify at least one '
                         'metadata_field')
    for field in fields:
      if field != 'signature_def':
        raise ServingError(Code.INVALID_ARGUMENT,
                           f'Metadata field {field} is not supported')
    spec = request.model_spec
    return self.service.metadata(spec.name, _version(spec), _label(spec))

  @_guard
  def MultiInference(self, request, context):
    raise ServingError(Code.UNIMPLEMENTED, 'MultiInference is not supported')


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, service: api.ModelService):
    self.service = service

  @_guard
  def GetModelStatus(self, request, context):
    spec = request.model_spec
    return self.service.status(spec.name, _version(spec), _label(spec))

  @_guard
  def HandleReloadConfigRequest(self, request, context):
    raise ServingError(Code.UNIMPLEMENTED,
                       'Reloading the model config is not supported')


def make_server(service: api.ModelService, address: str, max_workers: int,
                max_message_bytes: int) -> grpc.Server:
  server = grpc.server(
      futures.ThreadPoolExecutor(max_workers=max_workers),
      options=[('grpc.max_receive_message_length', max_message_bytes),
               ('grpc.max_send_message_length', max_message_bytes)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(service), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(
      ModelService(service), server)
  if not server.add_insecure_port(address):
    raise OSError(f'cannot bind gRPC to {address}')
  return server
