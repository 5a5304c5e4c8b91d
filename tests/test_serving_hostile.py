"""The serving API against a hostile network: where it listens, URLs that
try to leave the model base path, oversized headers, deeply nested JSON,
slow clients and idle connections. After each, valid requests still work.
And a fault inside the model: the server's, not the client's."""

import socket
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.serving_support import OWN, TAXI_ROW, running_server, serving_copy

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

TIMEOUT = 2  # --request_timeout_seconds of the server under test


@pytest.fixture(scope='module')
def server(taxi_pushed_model, tmp_path_factory):
  work = tmp_path_factory.mktemp('hostile')
  (work / 'secret.txt').write_text('not for clients')
  with serving_copy(taxi_pushed_model, work,
                    [f'--request_timeout_seconds={TIMEOUT}']) as s:
    yield s


def _predict_ok(server):
  response = requests.post(
      f'{server.rest}/v1/models/taxi_fare:predict', timeout=10,
      json={'signature_name': 'serving_raw', 'instances': [TAXI_ROW]})
  assert response.status_code == 200, response.text
  assert len(response.json()['predictions']) == 1


def _port(url: str) -> int:
  return int(url.rsplit(':', 1)[1])


def _outward_address() -> str:
  """This host's address on its default route (no packet is sent)."""
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
    try:
      probe.connect(('10.255.255.255', 9))  # any routable address
      return probe.getsockname()[0]
    except OSError:
      return '127.0.0.1'


def test_it_listens_on_loopback_only(server):
  address = _outward_address()
  if address.startswith('127.'):
    pytest.skip(f'this host has no non-loopback address ({address})')
  for port in (_port(server.rest), _port(server.grpc)):
    with pytest.raises(OSError):
      socket.create_connection((address, port), timeout=2).close()
  _predict_ok(server)


@pytest.mark.parametrize('path', [
    '/v1/models/..%2F..%2Fsecret.txt',
    '/v1/models/%2E%2E/metadata',
    '/v1/models/taxi_fare/versions/..%2F..%2F..%2Fsecret.txt',
    '/v1/models/taxi_fare/versions/%2E%2E/metadata',
    '/v1/models/taxi_fare/labels/..%2Fsecret.txt',
    '/v1/models/%2Ftmp%2Fsecret.txt',
    '/v1/models/taxi_fare%00/metadata',
    '/v1/models/../../secret.txt',
])
def test_urls_cannot_reach_outside_the_model_base_path(server, path):
  # Sent as written: no client-side normalisation of '..' or '%2F'.
  with socket.create_connection(('127.0.0.1', _port(server.rest)), 10) as s:
    s.sendall(f'GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
              '\r\n'.encode())
    reply = b''
    while chunk := s.recv(65536):
      reply += chunk
  status = int(reply.split(b' ', 2)[1])
  assert 400 <= status < 500, reply
  assert b'not for clients' not in reply and b'"error"' in reply
  _predict_ok(server)


def test_oversized_headers_are_refused(server):
  with pytest.raises(requests.ConnectionError):
    requests.get(f'{server.rest}/v1/models/taxi_fare', timeout=10,
                 headers={'X-Big': 'x' * 100_000})
  _predict_ok(server)


@pytest.mark.parametrize('body', [
    b'[' * 100_000,
    b'{"instances": ' + b'[' * 5_000 + b']' * 5_000 + b'}',
    b'{"instances": ' + b'[' * 900 + b'1' + b']' * 900 + b'}',
    b'{"signature_name": "serving_raw", "instances": [{"trip_miles": '
    + b'[' * 900 + b'1' + b']' * 900 + b'}]}',
])
def test_deeply_nested_json_is_a_client_error(server, body):
  response = requests.post(f'{server.rest}/v1/models/taxi_fare:predict',
                           data=body, timeout=30)
  assert 400 <= response.status_code < 500, response.text[:300]
  assert 'error' in response.json()
  _predict_ok(server)


def test_slow_and_idle_clients_are_cut_off_without_blocking_others(server):
  port = _port(server.rest)
  # A slow client trickling its headers, one that never sends its body,
  # and 200 idle connections.
  slow = socket.create_connection(('127.0.0.1', port))
  slow.sendall(b'GET /v1/models/taxi_fare HTTP/1.1\r\nHost: x\r\n')
  no_body = socket.create_connection(('127.0.0.1', port))
  no_body.sendall(b'POST /v1/models/taxi_fare:predict HTTP/1.1\r\nHost: x\r\n'
                  b'Content-Length: 1000\r\n\r\n{"instances"')
  idle = [socket.create_connection(('127.0.0.1', port)) for _ in range(200)]
  started = time.monotonic()
  _predict_ok(server)  # others are served meanwhile
  assert time.monotonic() - started < TIMEOUT
  for connection in [slow, no_body] + idle[:5]:
    connection.settimeout(TIMEOUT * 5)
    # socket.timeout here would mean the server kept the connection open.
    while connection.recv(65536):
      pass
    connection.close()
  for connection in idle[5:]:
    connection.close()
  assert time.monotonic() - started < TIMEOUT * 5
  _predict_ok(server)


# --- server faults are the server's: 500 / INTERNAL, not 400 --------------

class _Faulty(tf.Module):
  """Doubles x; a negative x makes it read a file that is not there, as a
  model whose asset went missing fails: a fault of the server, which no
  request can fix."""

  def __init__(self, missing: str):
    super().__init__()
    self._missing = missing

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
  def serve(self, x):
    def fault():
      return x + tf.cast(tf.strings.length(tf.io.read_file(self._missing)),
                         tf.float32)
    return {'y': tf.cond(tf.reduce_any(x < 0), fault, lambda: x * 2)}


MISSING = 'gone-asset-3f9c.txt'


@pytest.fixture(scope='module', params=[[], ['--enable_batching']],
                ids=['direct', 'batching'])
def faulty_server(request, tmp_path_factory):
  work = tmp_path_factory.mktemp('faulty')
  model = _Faulty(str(work / MISSING))
  tf.saved_model.save(model, str(work / 'models' / 'faulty' / '1'),
                      signatures={'serving_default': model.serve})
  with running_server(OWN, ['--model_name=faulty',
                            f'--model_base_path={work / "models" / "faulty"}'],
                      work, request.param) as s:
    yield s


def _rest_predict(server, body):
  kwargs = {'data': body} if isinstance(body, bytes) else {'json': body}
  return requests.post(f'{server.rest}/v1/models/faulty:predict', timeout=10,
                       **kwargs)


def _grpc_predict(server, tensor):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'faulty'
  for name, value in tensor.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  with grpc.insecure_channel(server.grpc) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=10)


def test_a_fault_inside_the_model_is_a_server_error(faulty_server):
  assert _rest_predict(faulty_server, {'instances': [1.5]}).json() == {
      'predictions': [3.0]}
  response = _rest_predict(faulty_server, {'instances': [-1.0]})
  assert response.status_code == 500, response.text
  message = response.json()['error']
  assert 'Internal error running the model (NotFoundError)' in message
  assert MISSING not in message  # server paths stay in the log
  with pytest.raises(grpc.RpcError) as error:
    _grpc_predict(faulty_server, {'x': np.array([-1.0], np.float32)})
  assert error.value.code() == grpc.StatusCode.INTERNAL
  assert MISSING not in error.value.details()
  assert MISSING in faulty_server.log.read_text()  # the details, for ops
  # The server goes on serving.
  assert _rest_predict(faulty_server, {'instances': [2.0]}).json() == {
      'predictions': [4.0]}
  assert _grpc_predict(faulty_server, {'x': np.array([2.0], np.float32)}
                       ).outputs['y'].float_val == [4.0]


@pytest.mark.parametrize('body', [
    b'{"instances": [1.5',                 # malformed JSON
    {'instances': ['one and a half']},     # a string for a float input
    {'instances': [{'z': 1.5}]},           # no input x, an unknown z
    {'inputs': {'x': [[1.5], [2.5]]}},     # a shape the signature refuses
])
def test_a_bad_request_is_still_a_client_error(faulty_server, body):
  response = _rest_predict(faulty_server, body)
  assert response.status_code == 400, response.text
  assert response.json()['error']


@pytest.mark.parametrize('inputs', [
    {'x': np.array([b'1.5'], object)},                   # strings for floats
    {'z': np.array([1.5], np.float32)},                  # no input x
    {'x': np.array([[1.5], [2.5]], np.float32)},         # the wrong shape
])
def test_a_bad_grpc_request_is_still_invalid_argument(faulty_server, inputs):
  with pytest.raises(grpc.RpcError) as error:
    _grpc_predict(faulty_server, inputs)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
      error.value.details())
