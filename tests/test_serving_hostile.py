"""The serving API against a hostile network: where it listens, URLs that
try to leave the model base path, oversized headers, deeply nested JSON,
slow clients and idle connections. After each, valid requests still work."""

import socket
import time

import pytest
import requests

from tests.serving_support import TAXI_ROW, serving_copy

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
