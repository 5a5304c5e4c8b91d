"""The Kubernetes probes of deploy/serving against a server on loopback:
alive before the first push, ready only once a version serves."""

import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from tfx_e2e.pipeline.config import REPO_ROOT
from tests.serving_support import TFX_E2E, free_port, push_version

pytestmark = pytest.mark.e2e  # starts a server

DEPLOYMENT = REPO_ROOT / 'deploy' / 'serving' / 'base' / 'deployment.yaml'


def _container():
  (deployment,) = yaml.safe_load_all(DEPLOYMENT.read_text())
  return deployment['spec']['template']['spec']['containers'][0]


def _ready(rest: str, path: str) -> bool:
  """As the kubelet's httpGet probe: a status from 200 to 399."""
  try:
    return 200 <= requests.get(rest + path, timeout=1).status_code < 400
  except requests.ConnectionError:
    return False


def _alive(port: int) -> bool:
  """As the kubelet's tcpSocket probe: the port accepts a connection."""
  with socket.socket() as s:
    s.settimeout(1)
    return s.connect_ex(('127.0.0.1', port)) == 0


def test_alive_before_the_first_push_and_ready_once_a_version_serves(
    taxi_pushed_model: Path, tmp_path):
  container = _container()
  readiness = container['readinessProbe']['httpGet']['path']
  assert container['livenessProbe']['tcpSocket']['port'] == 'http'
  name = readiness.split('/')[3]
  base = tmp_path / 'models' / name
  base.mkdir(parents=True)
  grpc_port, rest_port = free_port(), free_port()
  rest = f'http://127.0.0.1:{rest_port}'
  log = open(tmp_path / 'server.log', 'w')  # pylint: disable=consider-using-with
  process = subprocess.Popen(
      [TFX_E2E, 'serve', f'--port={grpc_port}', f'--rest_api_port={rest_port}',
       f'--model_name={name}', f'--model_base_path={base}', '--own_server'],
      stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 90
    while not _alive(rest_port):
      assert process.poll() is None, (tmp_path / 'server.log').read_text()
      assert time.monotonic() < deadline, 'the server never listened'
      time.sleep(0.3)
    # No version yet: alive (no restart loop), not ready; the status
    # endpoint, the old probe, answers 404 here.
    assert requests.get(f'{rest}/v1/models/{name}', timeout=5
                        ).status_code == 404
    assert not _ready(rest, readiness)
    push_version(taxi_pushed_model, base, 1)
    while not _ready(rest, readiness):
      assert time.monotonic() < deadline, 'never ready after a push'
      time.sleep(0.3)
    status = requests.get(f'{rest}/v1/models/{name}', timeout=5).json()
    assert [v['state'] for v in status['model_version_status']] == [
        'AVAILABLE']
    assert _alive(rest_port)
  finally:
    process.terminate()
    process.wait(timeout=20)
    log.close()
