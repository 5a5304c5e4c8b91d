"""Versions: a live swap under load, half-written and broken versions,
version policies with labels from a model config file, and the one rule
`serve`, `predict` and `stream` share: the newest version that loads."""

import shutil
import threading
import time

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.serving_support import OWN, push_version, running_server

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

MODEL = 'taxi_fare'
CLIENTS = 8


def _predict_request():
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'serving_raw'
  for name, dtype, value in (
      ('trip_miles', tf.float32, 2.5), ('trip_seconds', tf.int64, 600),
      ('payment_type', tf.string, 'Cash'), ('company', tf.string, ''),
      ('trip_start_hour', tf.int64, 10), ('trip_start_day', tf.int64, 3),
      ('trip_start_month', tf.int64, 5),
      ('pickup_community_area', tf.int64, 8),
      ('dropoff_community_area', tf.int64, 32)):
    request.inputs[name].CopyFrom(tf.make_tensor_proto([value], dtype=dtype))
  return request


REST_ROW = {'trip_miles': 2.5, 'trip_seconds': 600, 'payment_type': 'Cash',
            'company': '', 'trip_start_hour': 10, 'trip_start_day': 3,
            'trip_start_month': 5, 'pickup_community_area': 8,
            'dropoff_community_area': 32}


def _states(server):
  body = requests.get(f'{server.rest}/v1/models/{MODEL}', timeout=10).json()
  return {int(s['version']): s for s in body['model_version_status']}


def _wait_for(condition, seconds=30):
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    if condition():
      return True
    time.sleep(0.2)
  return False


def test_live_swap_under_load(taxi_pushed_model, tmp_path):
  base = tmp_path / 'models' / MODEL
  base.mkdir(parents=True)
  push_version(taxi_pushed_model, base, 1)
  with running_server(OWN, [f'--model_name={MODEL}',
                            f'--model_base_path={base}'], tmp_path,
                      ['--file_system_poll_wait_seconds=0.5',
                       '--enable_batching']) as server:
    stop = threading.Event()
    errors = []
    lock = threading.Lock()
    # Per gRPC client, the version of each answer, in order.
    versions_seen = [[] for _ in range(CLIENTS // 2)]

    def grpc_client(seen):
      with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = _predict_request()
        while not stop.is_set():
          try:
            response = stub.Predict(request, timeout=10)
            seen.append(response.model_spec.version.value)
          except grpc.RpcError as e:
            with lock:
              errors.append(f'gRPC {e.code()}: {e.details()}')

    def rest_client():
      session = requests.Session()
      body = {'signature_name': 'serving_raw', 'instances': [REST_ROW]}
      while not stop.is_set():
        response = session.post(f'{server.rest}/v1/models/{MODEL}:predict',
                                json=body, timeout=10)
        if response.status_code != 200:
          with lock:
            errors.append(f'REST {response.status_code}: {response.text}')

    threads = [threading.Thread(target=grpc_client, args=(seen,))
               for seen in versions_seen]
    threads += [threading.Thread(target=rest_client)
                for _ in range(CLIENTS - len(threads))]
    for thread in threads:
      thread.start()
    try:
      time.sleep(1.0)
      push_version(taxi_pushed_model, base, 2)
      assert _wait_for(lambda: all(seen and seen[-1] == 2
                                   for seen in versions_seen)), (
          'version 2 never answered every client')
      time.sleep(1.0)  # keep the load on after the swap
    finally:
      stop.set()
      for thread in threads:
        thread.join()
    assert not errors, errors[:5]
    for seen in versions_seen:
      # Each client saw version 1, then, from its first answer by version 2
      # on, only version 2 (its requests are sequential).
      assert seen[0] == 1
      swap = seen.index(2)
      assert set(seen[:swap]) == {1} and set(seen[swap:]) == {2}
    states = _states(server)
    assert states[2]['state'] == 'AVAILABLE' and states[1]['state'] == 'END'

    # A half-written version (no saved_model.pb yet) is never loaded; a
    # broken one fails to load, is reported, and version 2 keeps serving.
    (base / '3').mkdir()
    (base / '3' / 'variables').mkdir()
    broken = base.parent / '.staging-4'
    shutil.copytree(taxi_pushed_model, broken)
    (broken / 'saved_model.pb').write_bytes(b'not a SavedModel')
    broken.rename(base / '4')
    assert _wait_for(lambda: 4 in _states(server))
    states = _states(server)
    assert 3 not in states
    assert states[4]['state'] == 'END'
    assert states[4]['status']['error_message']
    assert states[2]['state'] == 'AVAILABLE'
    response = requests.post(
        f'{server.rest}/v1/models/{MODEL}:predict',
        json={'signature_name': 'serving_raw', 'instances': [REST_ROW]},
        timeout=10)
    assert response.status_code == 200


def test_version_policy_and_labels_from_a_model_config_file(taxi_pushed_model,
                                                            tmp_path):
  base = tmp_path / 'models' / MODEL
  base.mkdir(parents=True)
  for version in (1, 2, 3):
    push_version(taxi_pushed_model, base, version)
  config = tmp_path / 'models.config'
  config.write_text(f'''
model_config_list {{
  config {{
    name: "{MODEL}"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}''')
  with running_server(OWN, [f'--model_name={MODEL}',
                            f'--model_config_file={config}'],
                      tmp_path) as server:
    assert sorted(_states(server)) == [1, 2]  # 3 is outside the policy
    body = {'signature_name': 'serving_raw', 'instances': [REST_ROW]}
    for path in ('', '/versions/1', '/versions/2', '/labels/stable',
                 '/labels/canary'):
      response = requests.post(
          f'{server.rest}/v1/models/{MODEL}{path}:predict', json=body,
          timeout=10)
      assert response.status_code == 200, (path, response.text)
    assert requests.post(f'{server.rest}/v1/models/{MODEL}/versions/3:predict',
                         json=body, timeout=10).status_code == 404
    metadata = requests.get(
        f'{server.rest}/v1/models/{MODEL}/labels/stable/metadata',
        timeout=10).json()
    assert metadata['model_spec']['version'] == '1'
    with grpc.insecure_channel(server.grpc) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      request = _predict_request()
      request.model_spec.version_label = 'canary'
      assert stub.Predict(request, timeout=10).model_spec.version.value == 2
      request.model_spec.version_label = 'nope'
      with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=10)
      assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- one rule for serve, predict and stream: the newest version that loads -

def _broken_versions(taxi_pushed_model, base):
  """v1 whole; v2 half-copied (variables, no saved_model.pb); v3 with a
  garbage saved_model.pb."""
  base.mkdir(parents=True)
  push_version(taxi_pushed_model, base, 1)
  shutil.copytree(taxi_pushed_model / 'variables', base / '2' / 'variables')
  shutil.copytree(taxi_pushed_model, base / '3')
  (base / '3' / 'saved_model.pb').write_bytes(b'not a SavedModel')


def test_serve_starts_on_the_newest_version_that_loads(taxi_pushed_model,
                                                      tmp_path):
  base = tmp_path / 'models' / MODEL
  _broken_versions(taxi_pushed_model, base)
  with running_server(OWN, [f'--model_name={MODEL}',
                            f'--model_base_path={base}'],
                      tmp_path) as server:
    # Right away, not one poll later: the failed v3 gives way to v1.
    response = requests.post(f'{server.rest}/v1/models/{MODEL}:predict',
                             json={'signature_name': 'serving_raw',
                                   'instances': [REST_ROW]}, timeout=10)
    assert response.status_code == 200, response.text
    log = server.log.read_text()
  assert 'versions loaded: [1]' in log
  assert 'skipped version 3: does not load' in log
  assert 'skipped version 2: no saved_model.pb' in log


def test_predict_uses_the_newest_version_that_loads(taxi_pushed_model,
                                                    taxi_sample, tmp_path):
  from tests.conftest import run_cli  # pylint: disable=import-outside-toplevel
  output = tmp_path / 'run'
  _broken_versions(taxi_pushed_model, output / 'serving' / MODEL)
  result = run_cli(['predict', '--set', f'output_dir={output}', '--input',
                    str(taxi_sample), '--output', str(tmp_path / 'pred'),
                    '--set', f'model_name={MODEL}'])
  assert result.exit_code == 0, result.stderr
  assert f'Model: version 1 under {output / "serving" / MODEL}' in (
      result.stdout)
  assert 'skipped version 3: does not load' in result.stdout
  assert 'skipped version 2: no saved_model.pb' in result.stdout
  with open(next(tmp_path.glob('pred-0*.csv'))) as f:
    assert {row.rstrip('\n').rsplit(',', 1)[1] for row in list(f)[1:]} == {
        '1'}


def test_a_following_stream_skips_a_version_that_does_not_load(
    taxi_pushed_model, tmp_path):
  """The stream's model watch: of two new versions, the newer broken, it
  swaps to the one that loads (and did not before: it stayed on v1)."""
  from tfx_e2e.inference import prediction  # pylint: disable=import-outside-toplevel
  base = tmp_path / MODEL
  base.mkdir()
  push_version(taxi_pushed_model, base, 1)
  model = prediction.VersionedModelHandler(
      str(base / '1'), base_path=str(base), poll_seconds=3600).load_model()
  push_version(taxi_pushed_model, base, 2)
  push_version(taxi_pushed_model, base, 3)
  (base / '3' / 'saved_model.pb').write_bytes(b'not a SavedModel')
  model._look()  # pylint: disable=protected-access
  assert model.current[2] == '1'  # first sight: not yet known to be whole
  model._look()  # pylint: disable=protected-access
  assert model.current[2] == '2'
