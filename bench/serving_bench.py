"""Serving benchmark: REST and gRPC against the in-process SavedModel call.

    .venv/bin/python bench/serving_bench.py [--model_base_path DIR]

Serves the latest pushed model (default: ./output/serving/taxi_fare, from
`make run`) with `tfx-e2e serve` in a subprocess, once without and once with
--enable_batching, and measures in the same run:
- p50/p99 latency of a one-instance predict (REST, gRPC, in-process). REST
  is measured with two clients: libcurl (a C client, as curl) and Python's
  http.client, whose own request and response handling adds ~0.1 ms;
- throughput in examples/s with 1, 8 and 32 concurrent clients sending
  1-row and 256-row requests, next to in-process calls of the same size.
Clients are threads in this process, on the same 2 cores as the server.
Prints a Markdown report for BENCHMARKS.md.
"""

import argparse
import datetime
import http.client
import io
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfx_e2e.pipeline import environment  # noqa: E402
environment.configure()  # before anything imports TensorFlow
from tfx_e2e.pipeline.config import PipelineConfig  # noqa: E402
from tfx_e2e.inference.prediction import latest_version_dir  # noqa: E402
import grpc  # noqa: E402
import pycurl  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from tests.serving_support import OWN, TAXI_ROW, running_server  # noqa: E402

DTYPES = {'trip_miles': tf.float32, 'payment_type': tf.string,
          'company': tf.string}


def _percentiles(samples):
  samples = sorted(samples)
  return (statistics.median(samples) * 1e3,
          samples[int(len(samples) * 0.99) - 1] * 1e3)


def _rest_body(rows):
  return json.dumps({'signature_name': 'serving_raw',
                     'instances': [TAXI_ROW] * rows}).encode()


def _grpc_request(name, rows):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  request.model_spec.signature_name = 'serving_raw'
  for key, value in TAXI_ROW.items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(
        [value] * rows, dtype=DTYPES.get(key, tf.int64)))
  return request


def _rest_caller(server, name, rows):
  host, port = server.rest.replace('http://', '').split(':')
  connection = http.client.HTTPConnection(host, int(port))
  body = _rest_body(rows)
  path = f'/v1/models/{name}:predict'

  def call():
    connection.request('POST', path, body,
                       {'Content-Type': 'application/json'})
    response = connection.getresponse()
    response.read()
    assert response.status == 200
  return call


def _curl_caller(server, name, rows):
  curl = pycurl.Curl()  # one connection, kept alive, as http.client's
  curl.setopt(pycurl.URL, f'{server.rest}/v1/models/{name}:predict')
  curl.setopt(pycurl.POSTFIELDS, _rest_body(rows))
  curl.setopt(pycurl.HTTPHEADER, ['Content-Type: application/json'])
  curl.setopt(pycurl.TCP_NODELAY, 1)
  response = io.BytesIO()
  curl.setopt(pycurl.WRITEFUNCTION, response.write)

  def call():
    response.seek(0)
    response.truncate()
    curl.perform()
    assert curl.getinfo(pycurl.RESPONSE_CODE) == 200, response.getvalue()
  return call


def _grpc_caller(server, name, rows):
  channel = grpc.insecure_channel(server.grpc)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = _grpc_request(name, rows)
  return lambda: stub.Predict(request, timeout=30)


def _local_caller(model, rows):
  signature = model.signatures['serving_raw']
  inputs = {k: tf.constant([v] * rows, DTYPES.get(k, tf.int64))
            for k, v in TAXI_ROW.items()}
  return lambda: signature(**inputs)


def latency(call, count):
  for _ in range(50):
    call()
  samples = []
  for _ in range(count):
    start = time.perf_counter()
    call()
    samples.append(time.perf_counter() - start)
  return _percentiles(samples)


def throughput(make_call, clients, rows, seconds):
  """Examples/s with `clients` threads calling as fast as they can."""
  calls = [make_call() for _ in range(clients)]
  for call in calls:
    call()
  counts = [0] * clients
  stop = threading.Event()

  def loop(i):
    while not stop.is_set():
      calls[i]()
      counts[i] += 1
  threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
  start = time.perf_counter()
  for thread in threads:
    thread.start()
  time.sleep(seconds)
  stop.set()
  for thread in threads:
    thread.join()
  return sum(counts) * rows / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  default = PipelineConfig()
  parser.add_argument('--model_base_path', default=default.serving_model_dir)
  parser.add_argument('--model_name', default=default.model_name)
  parser.add_argument('--seconds', type=float, default=4.0)
  parser.add_argument('--latency_calls', type=int, default=2000)
  args = parser.parse_args()
  base = Path(args.model_base_path)
  try:
    version_dir = latest_version_dir(str(base))
  except FileNotFoundError as e:
    sys.exit(f'{e}: run `make run` first')
  model = tf.saved_model.load(version_dir)

  lines = [f'### Serving ({datetime.date.today()}, {platform.node()}, '
           f'{os.cpu_count()} cores, {platform.processor() or platform.machine()})',
           '', f'Model: {version_dir} (taxi fare, serving_raw signature). '
           f'Clients: threads in the benchmark process, same machine.', '']
  local_p50, local_p99 = latency(_local_caller(model, 1), args.latency_calls)
  local_tput = {rows: throughput(lambda r=rows: _local_caller(model, r), 1,
                                 rows, args.seconds) for rows in (1, 256)}
  lines += ['| one-instance predict | p50 ms | p99 ms |', '| --- | --- | --- |',
            f'| in-process SavedModel call | {local_p50:.3f} | {local_p99:.3f} |']
  tables = []
  log_dir = Path('/tmp') / 'serving-bench-logs'
  log_dir.mkdir(exist_ok=True)
  for batching in (False, True):
    extra = ['--enable_batching'] if batching else []
    label = 'batching on' if batching else 'batching off'
    with running_server(OWN, [f'--model_name={args.model_name}',
                              f'--model_base_path={base}'], log_dir,
                        extra) as server:
      for api, make in (('REST (libcurl)', _curl_caller),
                        ('REST (http.client)', _rest_caller),
                        ('gRPC', _grpc_caller)):
        p50, p99 = latency(make(server, args.model_name, 1),
                           args.latency_calls)
        lines.append(f'| {api}, {label} | {p50:.3f} | {p99:.3f} |')
      for rows in (1, 256):
        for clients in (1, 8, 32):
          row = [f'{label}', f'{rows}', f'{clients}']
          for make in (_rest_caller, _grpc_caller):
            value = throughput(
                lambda m=make, r=rows: m(server, args.model_name, r),
                clients, rows, args.seconds)
            row.append(f'{value:,.0f} ({value / local_tput[rows]:.0%})')
          row.append(f'{local_tput[rows]:,.0f}')
          tables.append('| ' + ' | '.join(row) + ' |')
  lines += ['', '| server | rows/request | clients | REST examples/s '
            '(vs in-process) | gRPC examples/s (vs in-process) | in-process '
            'examples/s (1 caller) |', '| --- | --- | --- | --- | --- | --- |']
  lines += tables
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
