"""Starting `tfx-e2e serve` (or a real tensorflow_model_server) for tests."""

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, NamedTuple

import requests

TFX_E2E = str(Path(sys.executable).parent / 'tfx-e2e')
# One taxi trip, as serving_raw takes it.
TAXI_ROW = {'trip_miles': 2.5, 'trip_seconds': 600, 'payment_type': 'Cash',
            'company': 'Flash Cab', 'trip_start_hour': 10,
            'trip_start_day': 3, 'trip_start_month': 5,
            'pickup_community_area': 8, 'dropoff_community_area': 32}
# Server kinds the contract tests run against.
OWN = 'own'
REAL = 'tensorflow_model_server'


class Server(NamedTuple):
  rest: str       # http://127.0.0.1:PORT
  grpc: str       # 127.0.0.1:PORT
  process: subprocess.Popen
  log: Path


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def real_server_or_skip():
  import pytest  # pylint: disable=import-outside-toplevel
  binary = shutil.which(REAL)
  if not binary:
    pytest.skip('no tensorflow_model_server on PATH (it has no pip '
                'package; TF Serving ships it as a Docker image or apt package)')
  return binary


@contextlib.contextmanager
def running_server(kind: str, model_args: List[str], log_dir: Path,
                   extra: List[str] = ()) -> Iterator[Server]:
  grpc_port, rest_port = free_port(), free_port()
  args = [TFX_E2E, 'serve', f'--port={grpc_port}',
          f'--rest_api_port={rest_port}', *model_args, *extra]
  args.append('--own_server' if kind == OWN else
              f'--tensorflow_model_server={real_server_or_skip()}')
  log = log_dir / f'server-{rest_port}.log'
  with open(log, 'w') as log_file:
    process = subprocess.Popen(args, stdout=log_file,
                               stderr=subprocess.STDOUT)
  server = Server(f'http://127.0.0.1:{rest_port}', f'127.0.0.1:{grpc_port}',
                  process, log)
  try:
    _wait_until_serving(server, model_args)
    yield server
  finally:
    process.terminate()
    try:
      process.wait(timeout=20)
    except subprocess.TimeoutExpired:
      process.kill()


def _wait_until_serving(server: Server, model_args: List[str]) -> None:
  name = next(a.split('=', 1)[1] for a in model_args
              if a.startswith('--model_name='))
  deadline = time.monotonic() + 90
  while time.monotonic() < deadline:
    if server.process.poll() is not None:
      raise RuntimeError(f'server exited: {server.log.read_text()[-3000:]}')
    try:
      if requests.get(f'{server.rest}/v1/models/{name}', timeout=1).ok:
        return
    except requests.ConnectionError:
      pass
    time.sleep(0.3)
  raise RuntimeError(f'server not ready: {server.log.read_text()[-3000:]}')


def push_version(model: Path, base: Path, version: int) -> None:
  """As an atomic push does: copy beside the base path, then rename."""
  staging = base.parent / f'.staging-{version}'
  shutil.copytree(model, staging)
  staging.rename(base / str(version))


@contextlib.contextmanager
def serving_copy(model_dir: Path, work: Path, extra: List[str] = ()
                 ) -> Iterator[Server]:
  """This project's server on loopback, serving a copy of `model_dir` as
  version 1 of taxi_fare under work/models/taxi_fare."""
  base = work / 'models' / 'taxi_fare'
  shutil.copytree(model_dir, base / '1')
  with running_server(OWN, ['--model_name=taxi_fare',
                            f'--model_base_path={base}'], work,
                      list(extra)) as server:
    yield server
