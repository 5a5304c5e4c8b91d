"""Serving soak: many clients, malformed requests and model pushes.

    .venv/bin/python bench/serving_soak.py [--requests 20000] [--clients 8]
        [--pushes 1] [--model_base_path DIR]

Serves a copy of the latest pushed model (default: `make run`'s) with
`tfx-e2e serve` on loopback. `--clients` threads send `--requests` REST
requests in all, one in ten malformed (bad JSON, unknown model, version or
signature, wrong feature types, mixed rows, an oversized body, a path out of
the base). `--pushes` new versions (default: one, half-way) are pushed the
way the Pusher does it (staged, then renamed). Reports server errors (5xx),
unanswered valid requests, the version answering at the end, and the
server's RSS at the start, after each tenth of the requests and at the end.
`soak()` is what tests/test_serving_fuzz.py runs on a smaller scale.
"""

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from tests.serving_support import (  # noqa: E402
    TAXI_ROW, push_version, serving_copy)

_VALID = {'signature_name': 'serving_raw', 'instances': [TAXI_ROW]}
# (method, path, body): each is a client error that TF Serving answers 4xx.
_MALFORMED = [
    ('POST', '/v1/models/taxi_fare:predict', b'{"instances": [1,'),
    ('POST', '/v1/models/nope:predict', None),
    ('POST', '/v1/models/taxi_fare/versions/999:predict', None),
    ('POST', '/v1/models/taxi_fare:predict',
     b'{"signature_name": "nope", "instances": [{}]}'),
    ('POST', '/v1/models/taxi_fare:predict',
     b'{"signature_name": "serving_raw", "instances": '
     b'[{"trip_miles": "far"}]}'),
    ('POST', '/v1/models/taxi_fare:predict',
     b'{"signature_name": "serving_raw", "instances": '
     b'[{"trip_miles": 1.0}, {"company": "x"}]}'),
    ('POST', '/v1/models/taxi_fare:predict', b'[' * 50_000),
    ('GET', '/v1/models/..%2F..%2Fetc%2Fpasswd', None),
    ('POST', '/v1/models/taxi_fare:predict', b' ' * (2 * 1024 * 1024)),
]
MAX_BODY_BYTES = 1024 * 1024


@dataclasses.dataclass
class SoakResult:
  requests: int = 0
  valid: int = 0
  valid_answered: int = 0
  malformed: int = 0
  malformed_4xx: int = 0
  server_errors: int = 0
  other_failures: int = 0
  seconds: float = 0.0
  rss_start_mib: float = 0.0
  rss_end_mib: float = 0.0
  # RSS after each tenth of the requests.
  rss_mib: list = dataclasses.field(default_factory=list)
  version_at_end: str = ''
  first_failures: list = dataclasses.field(default_factory=list)


def _rss_mib(pid: int) -> float:
  for line in Path(f'/proc/{pid}/status').read_text().splitlines():
    if line.startswith('VmRSS:'):
      return int(line.split()[1]) / 1024
  return 0.0


def soak(model_dir: Path, work: Path, total: int, clients: int,
         pushes: int = 1) -> SoakResult:
  """`pushes` new versions, evenly spaced (one: half-way)."""
  result = SoakResult()
  lock = threading.Lock()
  counter = iter(range(total))
  push_at = {total * (i + 1) // (pushes + 1): i + 2 for i in range(pushes)}
  with serving_copy(model_dir, work, [f'--max_body_bytes={MAX_BODY_BYTES}',
                                      '--file_system_poll_wait_seconds=0.5'
                                      ]) as server:
    session = requests.Session()
    session.post(f'{server.rest}/v1/models/taxi_fare:predict',
                 json=_VALID, timeout=30).raise_for_status()  # warm up
    result.rss_start_mib = _rss_mib(server.process.pid)

    def client():
      with requests.Session() as http:
        for number in counter:
          if number % (total // 10) == 0 and number:
            rss = _rss_mib(server.process.pid)
            with lock:
              result.rss_mib.append(rss)
          if number in push_at:
            push_version(model_dir, work / 'models' / 'taxi_fare',
                         push_at[number])
          malformed = number % 10 == 9
          method, path, body = (_MALFORMED[number // 10 % len(_MALFORMED)]
                                if malformed else
                                ('POST', '/v1/models/taxi_fare:predict', None))
          try:
            response = http.request(
                method, server.rest + path, timeout=60,
                data=body, json=_VALID if body is None and method == 'POST'
                else None)
            status, text = response.status_code, response.text[:200]
          except requests.RequestException as e:
            # A refused oversized body may end the connection early.
            status, text = None, repr(e)[:200]
          with lock:
            result.requests += 1
            if malformed:
              result.malformed += 1
              result.malformed_4xx += status is None or 400 <= status < 500
            else:
              result.valid += 1
              result.valid_answered += status == 200
            result.server_errors += status is not None and status >= 500
            bad = (status is None and not malformed) or (
                status is not None and (status >= 500 or (
                    not malformed and status != 200)))
            if bad:
              result.other_failures += status is None
              if len(result.first_failures) < 5:
                result.first_failures.append((path, status, text))

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
    result.seconds = time.monotonic() - started
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the push goes live within a poll
      status = session.get(f'{server.rest}/v1/models/taxi_fare',
                           timeout=10).json()
      versions = [s['version'] for s in status['model_version_status']
                  if s['state'] == 'AVAILABLE']
      if versions == [str(pushes + 1)]:
        break
      time.sleep(0.2)
    result.version_at_end = ','.join(versions)
    result.rss_end_mib = _rss_mib(server.process.pid)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--requests', type=int, default=20_000)
  parser.add_argument('--clients', type=int, default=8)
  parser.add_argument('--pushes', type=int, default=1,
                      help='new versions pushed, evenly spaced')
  parser.add_argument('--model_base_path', default='output/serving/taxi_fare')
  args = parser.parse_args()
  from tfx_e2e.inference.prediction import latest_version_dir
  model_dir = Path(latest_version_dir(args.model_base_path))
  with tempfile.TemporaryDirectory() as work:
    result = soak(model_dir, Path(work), args.requests, args.clients,
                  args.pushes)
  print(f'### Soak of {datetime.date.today()} ({platform.node()}, '
        f'{os.cpu_count()} cores)\n\n'
        f'{result.requests:,} requests from {args.clients} clients in '
        f'{result.seconds:.0f} s ({result.requests / result.seconds:,.0f}/s); '
        f'{args.pushes} new version(s) pushed, evenly spaced.\n\n'
        '| measure | value |\n| --- | ---: |\n'
        f'| valid requests answered 200 | {result.valid_answered:,} of '
        f'{result.valid:,} |\n'
        f'| malformed requests answered 4xx (or cut off) | '
        f'{result.malformed_4xx:,} of {result.malformed:,} |\n'
        f'| server errors (5xx) | {result.server_errors} |\n'
        f'| version serving at the end | {result.version_at_end} |\n'
        f'| server RSS at start / end | {result.rss_start_mib:.0f} MiB / '
        f'{result.rss_end_mib:.0f} MiB |\n'
        '| server RSS after each tenth of the requests (MiB) | '
        f'{" ".join(f"{rss:.0f}" for rss in result.rss_mib)} |')
  if result.first_failures:
    print('\nfirst failures:', result.first_failures)


if __name__ == '__main__':
  main()
