"""Contract tests of TF Serving's REST and gRPC API on the pipeline's pushed
model: every endpoint and format, each answer compared with an in-process
call of the same SavedModel. They run against this project's server, and
against a real tensorflow_model_server when one is on PATH.
"""

import base64
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports.results import load_run_results
from tests.serving_support import OWN, REAL, running_server

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

MODEL = 'taxi_fare'
ROWS = 16


@pytest.fixture(scope='module')
def model_base(taxi_pushed_model, tmp_path_factory) -> Path:
  """A model base path holding the pipeline's first pushed model as v1."""
  base = tmp_path_factory.mktemp('models') / MODEL
  shutil.copytree(taxi_pushed_model, base / '1')
  return base


@pytest.fixture(scope='module')
def local_model(model_base):
  return tf.saved_model.load(str(model_base / '1'))


@pytest.fixture(scope='module', params=[OWN, REAL])
def server(request, model_base, tmp_path_factory):
  with running_server(request.param,
                      [f'--model_name={MODEL}',
                       f'--model_base_path={model_base}'],
                      tmp_path_factory.mktemp('server-logs')) as running:
    yield running


@pytest.fixture(scope='module')
def examples(taxi_run):
  """Held-out eval tf.Examples (label removed) with every model input."""
  _, output = taxi_run
  results = load_run_results(PipelineConfig(output_dir=str(output)))
  uri = results.component(pipeline_def.EXAMPLE_GEN).output('examples').uri
  files = tf.io.gfile.glob(f'{uri}/Split-eval/*')
  chosen = []
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    example = tf.train.Example.FromString(record.numpy())
    feature = example.features.feature
    if all(_values(feature[n]) for n in ('trip_miles', 'trip_seconds',
                                         'pickup_community_area',
                                         'dropoff_community_area')):
      del feature['fare']
      chosen.append(example)
    if len(chosen) == ROWS:
      return chosen
  raise AssertionError('not enough complete eval rows')


def _values(feature):
  return list(feature.bytes_list.value or feature.float_list.value or
              feature.int64_list.value)


def _raw_instances(local_model, examples):
  """Row-format JSON instances for the serving_raw signature."""
  inputs = local_model.signatures['serving_raw'].structured_input_signature[1]
  rows = []
  for example in examples:
    row = {}
    for name, spec in inputs.items():
      values = _values(example.features.feature[name])
      value = values[0] if values else (b'' if spec.dtype == tf.string
                                        else float('nan'))
      row[name] = value.decode() if isinstance(value, bytes) else value
    rows.append(row)
  return rows


def _json_features(example):
  features = {}
  for name, feature in example.features.feature.items():
    values = _values(feature)
    if values:
      value = values[0]
      features[name] = value.decode() if isinstance(value, bytes) else value
  return features


def _local_raw(local_model, instances):
  signature = local_model.signatures['serving_raw']
  specs = signature.structured_input_signature[1]
  return signature(**{
      name: tf.constant([row[name] for row in instances], spec.dtype)
      for name, spec in specs.items()})['outputs'].numpy()


def _local_examples(local_model, serialized):
  return local_model.signatures['serving_default'](
      inputs=tf.constant(serialized))['outputs'].numpy()


# --- REST -----------------------------------------------------------------

def test_rest_model_status(server):
  for url in (f'{server.rest}/v1/models/{MODEL}',
              f'{server.rest}/v1/models/{MODEL}/versions/1'):
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.json() == {'model_version_status': [{
        'version': '1', 'state': 'AVAILABLE',
        'status': {'error_code': 'OK', 'error_message': ''}}]}


def test_rest_metadata(server, local_model):
  response = requests.get(f'{server.rest}/v1/models/{MODEL}/metadata',
                          timeout=10)
  assert response.status_code == 200
  body = response.json()
  assert body['model_spec'] == {'name': MODEL, 'signature_name': '',
                                'version': '1'}
  signatures = body['metadata']['signature_def']['signature_def']
  default = signatures['serving_default']
  assert default['method_name'] == 'tensorflow/serving/regress'
  assert default['inputs']['inputs']['dtype'] == 'DT_STRING'
  assert set(signatures['serving_raw']['inputs']) == set(
      local_model.signatures['serving_raw'].structured_input_signature[1])


def test_rest_predict_row_format(server, local_model, examples):
  instances = _raw_instances(local_model, examples)
  response = requests.post(
      f'{server.rest}/v1/models/{MODEL}/versions/1:predict',
      json={'signature_name': 'serving_raw', 'instances': instances},
      timeout=10)
  assert response.status_code == 200, response.text
  predictions = response.json()['predictions']
  np.testing.assert_allclose(predictions, _local_raw(local_model, instances),
                             rtol=1e-5)


def test_rest_predict_columnar_format(server, local_model, examples):
  instances = _raw_instances(local_model, examples)
  columns = {name: [row[name] for row in instances] for name in instances[0]}
  response = requests.post(
      f'{server.rest}/v1/models/{MODEL}:predict',
      json={'signature_name': 'serving_raw', 'inputs': columns}, timeout=10)
  assert response.status_code == 200, response.text
  np.testing.assert_allclose(response.json()['outputs'],
                             _local_raw(local_model, instances), rtol=1e-5)


def test_rest_predict_b64_examples(server, local_model, examples):
  serialized = [e.SerializeToString() for e in examples]
  encoded = [{'b64': base64.b64encode(s).decode()} for s in serialized]
  expected = _local_examples(local_model, serialized)
  for body in ({'instances': encoded},
               {'instances': [{'inputs': e} for e in encoded]},
               {'inputs': encoded}):
    response = requests.post(f'{server.rest}/v1/models/{MODEL}:predict',
                             json=body, timeout=10)
    assert response.status_code == 200, (body.keys(), response.text)
    values = response.json().get('predictions', response.json().get('outputs'))
    np.testing.assert_allclose(values, expected, rtol=1e-5)


def test_rest_regress_with_context(server, local_model, examples):
  features = [_json_features(e) for e in examples]
  # What every example shares goes into the context.
  context = {'trip_start_month': features[0]['trip_start_month']}
  for row in features:
    row['trip_start_month'] = context['trip_start_month']
  request_examples = [{k: v for k, v in row.items() if k not in context}
                      for row in features]
  response = requests.post(
      f'{server.rest}/v1/models/{MODEL}:regress',
      json={'context': context, 'examples': request_examples}, timeout=10)
  assert response.status_code == 200, response.text
  from tfx_e2e.serving.api import example_from_features
  expected = _local_examples(local_model, [
      example_from_features(row, 'x').SerializeToString()
      for row in features])
  np.testing.assert_allclose(response.json()['results'], expected, rtol=1e-5)


def test_rest_classify_on_a_regression_model(server, examples):
  response = requests.post(
      f'{server.rest}/v1/models/{MODEL}:classify',
      json={'examples': [_json_features(examples[0])]}, timeout=10)
  assert response.status_code == 400
  assert 'Expected classification signature method_name to be ' \
         'tensorflow/serving/classify' in response.json()['error']


# --- gRPC, with the official stubs ------------------------------------------

@pytest.fixture(scope='module')
def channel(server):
  with grpc.insecure_channel(server.grpc) as channel:
    yield channel


def test_grpc_predict(channel, local_model, examples):
  instances = _raw_instances(local_model, examples)
  specs = local_model.signatures['serving_raw'].structured_input_signature[1]
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'serving_raw'
  for name, spec in specs.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(
        [row[name] for row in instances], dtype=spec.dtype))
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  response = stub.Predict(request, timeout=10)
  assert response.model_spec.name == MODEL
  assert response.model_spec.version.value == 1
  np.testing.assert_allclose(tf.make_ndarray(response.outputs['outputs']),
                             _local_raw(local_model, instances), rtol=1e-5)


def _grpc_raw_request(local_model, row, typed=()):
  """A serving_raw PredictRequest of one row; `typed` gives some inputs
  as (value, TensorProto dtype) instead of the signature's dtype."""
  specs = local_model.signatures['serving_raw'].structured_input_signature[1]
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'serving_raw'
  for name, spec in specs.items():
    value, dtype = dict(typed).get(name, (row[name], spec.dtype))
    request.inputs[name].CopyFrom(tf.make_tensor_proto([value], dtype=dtype))
  return request


@pytest.mark.parametrize('value, dtype', [
    (600.7, tf.float32), (600.0, tf.float64), ('600', tf.string),
    (True, tf.bool)])
def test_a_value_of_another_kind_is_refused_over_grpc_and_rest(
    request, server, channel, local_model, examples, value, dtype):
  """trip_seconds is int64: a float, a string or a boolean is refused (TF
  Serving's INVALID_ARGUMENT / 400), never cast; the same on both
  transports. An integer where a float goes is fine."""
  row = _row(local_model, examples)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(_grpc_raw_request(local_model, row,
                                   {'trip_seconds': (value, dtype)}),
                 timeout=10)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  own = request.node.callspec.params['server'] == OWN
  if own:  # TF Serving's own message names the argument's position only
    assert '"trip_seconds"' in error.value.details()
  response = requests.post(
      f'{server.rest}/v1/models/{MODEL}:predict', timeout=10, json={
          'signature_name': 'serving_raw',
          'instances': [dict(row, trip_seconds=value)]})
  assert response.status_code == 400, response.text
  if own:
    assert '"trip_seconds"' in response.json()['error']
  # An integer for the float input trip_miles: accepted by both.
  accepted = stub.Predict(_grpc_raw_request(
      local_model, row, {'trip_miles': (3, tf.int64)}), timeout=10)
  rest = requests.post(
      f'{server.rest}/v1/models/{MODEL}:predict', timeout=10, json={
          'signature_name': 'serving_raw',
          'instances': [dict(row, trip_miles=3)]})
  assert rest.status_code == 200, rest.text
  np.testing.assert_allclose(
      tf.make_ndarray(accepted.outputs['outputs']).ravel(),
      np.ravel(rest.json()['predictions']), rtol=1e-6)


def test_grpc_regress_and_classify(channel, local_model, examples):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = regression_pb2.RegressionRequest()
  request.model_spec.name = MODEL
  request.input.example_list.examples.extend(examples)
  response = stub.Regress(request, timeout=10)
  np.testing.assert_allclose(
      [r.value for r in response.result.regressions],
      _local_examples(local_model, [e.SerializeToString() for e in examples]),
      rtol=1e-5)
  classify = classification_pb2.ClassificationRequest()
  classify.model_spec.name = MODEL
  classify.input.example_list.examples.extend(examples[:1])
  with pytest.raises(grpc.RpcError) as error:
    stub.Classify(classify, timeout=10)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_metadata_and_status(channel):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = get_model_metadata_pb2.GetModelMetadataRequest()
  request.model_spec.name = MODEL
  request.metadata_field.append('signature_def')
  response = stub.GetModelMetadata(request, timeout=10)
  signatures = get_model_metadata_pb2.SignatureDefMap()
  response.metadata['signature_def'].Unpack(signatures)
  assert {'serving_default', 'serving_raw'} <= set(signatures.signature_def)
  assert response.model_spec.version.value == 1

  status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
      get_model_status_pb2.GetModelStatusRequest(
          model_spec={'name': MODEL}), timeout=10)
  assert [(s.version, s.state) for s in status.model_version_status] == [
      (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def test_grpc_unknown_model(channel):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'nope'
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(request, timeout=10)
  assert error.value.code() == grpc.StatusCode.NOT_FOUND


# --- bad requests -----------------------------------------------------------

def _row(local_model, examples):
  return _raw_instances(local_model, examples[:1])[0]


@pytest.mark.parametrize('case', [
    'malformed json', 'unknown model', 'unknown version', 'bad version',
    'unknown signature', 'wrong feature name', 'wrong type', 'wrong rank',
    'mixed rows',
    'both formats', 'neither format', 'ragged column', 'oversized body',
    'unknown route'])
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(
    server, local_model, examples, case):
  row = _row(local_model, examples)
  url = f'{server.rest}/v1/models/{MODEL}:predict'
  raw = {'signature_name': 'serving_raw'}
  bad_type = dict(row, trip_seconds='six hundred')
  renamed = {('trip_mile' if k == 'trip_miles' else k): v
             for k, v in row.items()}
  short = {k: v for k, v in row.items() if k != 'company'}
  requests_by_case = {
      'malformed json': ('post', url, {'data': b'{"instances": [1,'}),
      'unknown model': ('post', f'{server.rest}/v1/models/nope:predict',
                        {'json': dict(raw, instances=[row])}),
      'unknown version': (
          'post', f'{server.rest}/v1/models/{MODEL}/versions/7:predict',
          {'json': dict(raw, instances=[row])}),
      'bad version': ('get', f'{server.rest}/v1/models/{MODEL}/versions/x',
                      {}),
      'unknown signature': ('post', url, {'json': {
          'signature_name': 'nope', 'instances': [row]}}),
      'wrong feature name': ('post', url, {'json': dict(
          raw, instances=[renamed])}),
      'wrong type': ('post', url, {'json': dict(raw, instances=[bad_type])}),
      # A list where the signature takes one value a row: the shape check
      # before the flat signature call sends it to TensorFlow's own error.
      'wrong rank': ('post', url, {'json': dict(
          raw, instances=[dict(row, trip_miles=[2.5, 3.0])])}),
      'mixed rows': ('post', url, {'json': dict(raw, instances=[row, short])}),
      'both formats': ('post', url, {'json': dict(
          raw, instances=[row], inputs={k: [v] for k, v in row.items()})}),
      'neither format': ('post', url, {'json': raw}),
      'ragged column': ('post', url, {'json': dict(raw, inputs=dict(
          {k: [v] for k, v in row.items()}, trip_miles=[1.0, 2.0]))}),
      'oversized body': ('post', url, {'data': b'{"instances": [' +
                                       b'1.0,' * (9 * 1024 * 1024) + b'1]}'}),
      'unknown route': ('get', f'{server.rest}/v2/whatever', {}),
  }
  method, target, kwargs = requests_by_case[case]
  try:
    response = getattr(requests, method)(target, timeout=30, **kwargs)
    assert 400 <= response.status_code < 500, (case, response.status_code)
    assert response.json()['error'], case
  except requests.ConnectionError:
    # A real server may drop a connection whose body is over its limit.
    assert case == 'oversized body'
  # The server keeps serving.
  healthy = requests.post(url, json=dict(raw, instances=[row]), timeout=10)
  assert healthy.status_code == 200, healthy.text
