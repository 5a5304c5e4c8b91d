"""`serve --logging_config`: real traffic over REST and gRPC to the
pipeline's pushed model, read back as PredictionLog records."""

import concurrent.futures
import glob
import random
import shutil

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from tests.conftest import run_cli
from tests.serving_support import OWN, TAXI_ROW, running_server

pytestmark = pytest.mark.e2e

MODEL = 'taxi_fare'


@pytest.fixture(scope='module')
def model_base(taxi_pushed_model, tmp_path_factory):
  base = tmp_path_factory.mktemp('logged-models') / MODEL
  shutil.copytree(taxi_pushed_model, base / '1')
  return base


def _logging_config(path, prefix, rate):
  path.write_text(f'log_collector_config {{ type: "tfrecord" '
                  f'filename_prefix: "{prefix}" }}\n'
                  f'sampling_config {{ sampling_rate: {rate} }}\n')
  return path


def _records(prefix):
  return [prediction_log_pb2.PredictionLog.FromString(r.numpy())
          for path in sorted(glob.glob(f'{prefix}-*.tfrecord'))
          for r in tf.data.TFRecordDataset(path)]


def _row(i):
  return dict(TAXI_ROW, trip_miles=float(i), company=f'c{i}')


def test_rest_and_grpc_requests_are_all_logged_at_rate_1(model_base,
                                                         tmp_path):
  prefix = tmp_path / 'logs' / 'requests'
  config = _logging_config(tmp_path / 'logging.config', prefix, 1)
  sent = []  # (kind, trip_miles of each row)
  with running_server(OWN, [f'--model_name={MODEL}',
                            f'--model_base_path={model_base}'], tmp_path,
                      [f'--logging_config={config}',
                       '--log_max_file_bytes=4000']) as server:
    url = f'{server.rest}/v1/models/{MODEL}'
    for i in range(5):  # predict, row format
      rows = [_row(10 * i + j) for j in range(3)]
      assert requests.post(f'{url}:predict', json={
          'signature_name': 'serving_raw', 'instances': rows}).ok
      sent.append(('predict', [r['trip_miles'] for r in rows]))
    rows = [_row(100), _row(101)]  # predict, columnar
    assert requests.post(f'{url}:predict', json={
        'signature_name': 'serving_raw',
        'inputs': {k: [r[k] for r in rows] for k in rows[0]}}).ok
    sent.append(('predict', [100.0, 101.0]))
    assert requests.post(f'{url}:regress', json={
        'examples': [_row(200), _row(201)]}).ok
    sent.append(('regress', [200.0, 201.0]))
    # A refused request is not logged.
    assert requests.post(f'{url}:predict', json={
        'signature_name': 'serving_raw', 'instances': [{'x': 1}]}
                         ).status_code == 400
    with grpc.insecure_channel(server.grpc) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      request = predict_pb2.PredictRequest()
      request.model_spec.name = MODEL
      request.model_spec.signature_name = 'serving_raw'
      row = _row(300)
      for name, value in row.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(
            [value], dtype=tf.int64 if isinstance(value, int) else None))
      stub.Predict(request, timeout=10)
      sent.append(('predict', [300.0]))
      regression = regression_pb2.RegressionRequest()
      regression.model_spec.name = MODEL
      example = regression.input.example_list.examples.add()
      for name, value in _row(400).items():
        feature = example.features.feature[name]
        if isinstance(value, str):
          feature.bytes_list.value.append(value.encode())
        elif isinstance(value, int):
          feature.int64_list.value.append(value)
        else:
          feature.float_list.value.append(value)
      stub.Regress(regression, timeout=10)
      sent.append(('regress', [400.0]))
  log = server.log.read_text()
  assert 'Logging taxi_fare requests (sampling rate 1)' in log
  assert f'Request log {prefix}: {len(sent)} records' in log
  records = _records(prefix)
  assert len(glob.glob(f'{prefix}-*.tfrecord')) > 1  # rolled by size
  assert not glob.glob(str(prefix.parent / '.*'))  # all complete
  got = []
  for record in records:
    kind = record.WhichOneof('log_type')
    assert record.log_metadata.model_spec.name == MODEL
    assert record.log_metadata.model_spec.version.value == 1
    if kind == 'predict_log':
      inputs = record.predict_log.request.inputs
      assert set(inputs) == set(TAXI_ROW)
      assert tf.make_ndarray(inputs['company']).dtype == object
      outputs = record.predict_log.response.outputs['outputs']
      assert tf.make_ndarray(outputs).shape == (
          len(tf.make_ndarray(inputs['trip_miles'])),)
      got.append(('predict', tf.make_ndarray(inputs['trip_miles']).tolist()))
    else:
      assert kind == 'regress_log'
      examples = record.regress_log.request.input.example_list.examples
      assert len(record.regress_log.response.result.regressions) == len(
          examples)
      got.append(('regress', [e.features.feature['trip_miles'].float_list
                              .value[0] for e in examples]))
  assert sorted(got) == sorted(sent)


def test_a_tenth_are_logged_at_rate_0_1(model_base, tmp_path):
  prefix = tmp_path / 'tenth'
  config = _logging_config(tmp_path / 'logging.config', prefix, 0.1)
  with running_server(OWN, [f'--model_name={MODEL}',
                            f'--model_base_path={model_base}'], tmp_path,
                      [f'--logging_config={config}']) as server:
    url = f'{server.rest}/v1/models/{MODEL}:predict'
    with requests.Session() as session:
      for i in range(1000):
        assert session.post(url, json={'signature_name': 'serving_raw',
                                       'instances': [_row(i)]}).ok
  logged = len(_records(prefix))
  # Binomial(1000, 0.1): sd 9.5; 5 sd either side.
  assert 52 <= logged <= 148
  assert all(r.log_metadata.sampling_config.sampling_rate == pytest.approx(
      0.1) for r in _records(prefix))


def test_a_full_queue_drops_and_counts_and_requests_succeed(model_base,
                                                           tmp_path):
  prefix = tmp_path / 'full'
  config = _logging_config(tmp_path / 'logging.config', prefix, 1)
  rows = [_row(i) for i in range(500)]
  body = {'signature_name': 'serving_raw', 'instances': rows}
  with running_server(OWN, [f'--model_name={MODEL}',
                            f'--model_base_path={model_base}'], tmp_path,
                      [f'--logging_config={config}',
                       '--log_queue_records=1']) as server:
    url = f'{server.rest}/v1/models/{MODEL}'

    def send(_):
      with requests.Session() as session:
        return [session.post(f'{url}:predict', json=body).status_code
                for _ in range(15)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      codes = [c for batch in pool.map(send, range(8)) for c in batch]
    assert codes == [200] * 120
    status = requests.get(url).json()['model_version_status'][0]
    assert status['status']['error_code'] == 'OK'
    message = status['status']['error_message']
    assert 'records dropped (queue full)' in message
    dropped = int(message.split('request log: ')[1].split()[0])
    assert dropped > 0
  assert len(_records(prefix)) + dropped == 120
  assert 'queue full (1 records)' in server.log.read_text()


@pytest.mark.parametrize('text, message', [
    ('sampling_config { sampling_rate: 2 }', 'not one of tfrecord'),
    ('log_collector_config { type: "tfrecord" filename_prefix: "/tmp/x" } '
     'sampling_config { sampling_rate: 2 }', 'not in [0, 1]'),
    ('garbage', 'not a LoggingConfig text proto'),
])
def test_a_bad_logging_config_is_exit_2_before_serving(tmp_path, text,
                                                        message):
  config = tmp_path / 'bad.config'
  config.write_text(text)
  result = run_cli(['serve', '--own_server', f'--logging_config={config}',
                    '--model_base_path', str(tmp_path)])
  assert result.exit_code == 2, result
  assert message in result.stderr and 'Traceback' not in result.stderr


def test_a_model_config_file_logging_config_is_used(model_base, tmp_path):
  prefix = tmp_path / 'per-model'
  models = tmp_path / 'models.config'
  models.write_text(
      'model_config_list { config { name: "%s" base_path: "%s" '
      'model_platform: "tensorflow" logging_config { log_collector_config '
      '{ type: "tfrecord" filename_prefix: "%s" } sampling_config { '
      'sampling_rate: 1 } } } }' % (MODEL, model_base, prefix))
  with running_server(OWN, [f'--model_name={MODEL}',
                            f'--model_config_file={models}'],
                      tmp_path) as server:
    assert requests.post(f'{server.rest}/v1/models/{MODEL}:regress', json={
        'examples': [_row(random.randrange(100))]}).ok
  assert len(_records(prefix)) == 1


@pytest.mark.parametrize('flag', ['--log_max_file_bytes=0',
                                  '--log_max_file_seconds=-1',
                                  '--log_max_file_seconds=inf',
                                  '--log_queue_records=many'])
def test_bad_logging_flags_are_usage_errors(flag, capsys):
  from tfx_e2e.cli import commands  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as exit_info:
    commands.build_parser().parse_args(['serve', flag])
  assert exit_info.value.code == 2
  assert flag.split('=')[0] in capsys.readouterr().err
