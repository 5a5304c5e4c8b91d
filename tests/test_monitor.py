"""`tfx-e2e monitor` on real traffic: the pipeline's pushed model served
with logging on, requests over gRPC and REST made from the eval split (no
skew) and from the eval split shifted (skew on exactly the shifted
features); logs of `predict` and `stream` through the same monitor; bad log
files named and skipped."""

import csv
import glob
import random
import shutil
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline.config import PipelineConfig, RUN_CONFIG_FILE
from tfx_e2e.reports.results import load_run_results
from tests.conftest import read_csv, run_cli, write_csv
from tests.serving_support import OWN, running_server

pytestmark = pytest.mark.e2e

MODEL = 'taxi_fare'
SHIFTED = {'trip_miles', 'payment_type'}


@pytest.fixture(scope='module')
def eval_examples(taxi_run):
  """The eval split's tf.Examples as ExampleGen wrote them, less the label."""
  _, output = taxi_run
  results = load_run_results(PipelineConfig(output_dir=str(output)))
  uri = results.component(pipeline_def.EXAMPLE_GEN).output('examples').uri
  examples = []
  for record in tf.data.TFRecordDataset(
      sorted(tf.io.gfile.glob(f'{uri}/Split-eval/*')), compression_type='GZIP'):
    example = tf.train.Example.FromString(record.numpy())
    del example.features.feature['fare']
    examples.append(example)
  return examples


def _shifted(example, scale=3):
  example = tf.train.Example.FromString(example.SerializeToString())
  miles = example.features.feature['trip_miles'].float_list.value
  miles[:] = [scale * v for v in miles]
  payment = example.features.feature['payment_type'].bytes_list.value
  payment[:] = [b'Bitcoin' if i % 2 else b'Barter'
                for i in range(len(payment))]
  return example


def _raw_instance(example, inputs):
  """serving_raw's row: '' and NaN where the example has no value."""
  row = {}
  for name, dtype in inputs.items():
    feature = example.features.feature[name]
    values = list(feature.bytes_list.value or feature.float_list.value or
                  feature.int64_list.value)
    if values:
      row[name] = values[0].decode() if isinstance(values[0], bytes) else (
          values[0])
    else:
      row[name] = '' if dtype == tf.string else float('nan')
  return row


@pytest.fixture(scope='module')
def served_logs(taxi_pushed_model, eval_examples, tmp_path_factory):
  """{'normal': log prefix, 'shifted': log prefix}: the same model version
  as pushed, served with logging on, sent the eval split as it is and
  shifted; gRPC Regress (examples) and REST predict (raw instances)."""
  work = tmp_path_factory.mktemp('monitored')
  base = work / 'models' / MODEL
  shutil.copytree(taxi_pushed_model, base / taxi_pushed_model.name)
  inputs = tf.saved_model.load(str(taxi_pushed_model)).signatures[
      'serving_raw'].structured_input_signature[1]
  inputs = {name: spec.dtype for name, spec in inputs.items()}
  prefixes = {}
  for kind in ('normal', 'shifted'):
    prefix = work / 'logs' / kind / 'requests'
    config = work / f'{kind}.config'
    config.write_text(f'log_collector_config {{ type: "tfrecord" '
                      f'filename_prefix: "{prefix}" }} sampling_config '
                      '{ sampling_rate: 1 }')
    examples = eval_examples if kind == 'normal' else [
        _shifted(e) for e in eval_examples]
    half = len(examples) // 2
    # serving_raw has no mark for a missing integer: rows without one go
    # over gRPC as examples.
    ints = [n for n, dtype in inputs.items() if dtype.is_integer]
    complete = [e for e in examples[half:] if all(
        e.features.feature[n].int64_list.value for n in ints)]
    by_grpc = examples[:half] + [e for e in examples[half:] if not all(
        e.features.feature[n].int64_list.value for n in ints)]
    with running_server(OWN, [f'--model_name={MODEL}',
                              f'--model_base_path={base}'], work,
                        [f'--logging_config={config}']) as server:
      with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for start in range(0, len(by_grpc), 100):
          request = regression_pb2.RegressionRequest()
          request.model_spec.name = MODEL
          request.input.example_list.examples.extend(
              by_grpc[start:start + 100])
          stub.Regress(request, timeout=30)
      url = f'{server.rest}/v1/models/{MODEL}:predict'
      assert len(complete) > 100
      for start in range(0, len(complete), 100):
        rows = [_raw_instance(e, inputs) for e in complete[start:start + 100]]
        response = requests.post(url, data=__import__('json').dumps({
            'signature_name': 'serving_raw', 'instances': rows}),
                                 timeout=30)
        assert response.ok, response.text
    prefixes[kind] = prefix
  return prefixes


def _monitor(taxi_run, logs, out, *extra):
  _, output = taxi_run
  return run_cli(['monitor', '--output', str(output), '--logs', str(logs),
                  '--monitor-output', str(out), *extra])


def _windows(out):
  with open(out / 'windows.csv', newline='') as f:
    return list(csv.DictReader(f))


def test_eval_split_traffic_shows_no_skew(taxi_run, served_logs,
                                          eval_examples, tmp_path):
  result = _monitor(taxi_run, served_logs['normal'].parent,
                    tmp_path / 'out')
  assert result.exit_code == 0, result
  assert f'rows: {len(eval_examples):,}' in result.stdout
  assert 'Every window is within its thresholds.' in result.stdout
  rows = _windows(tmp_path / 'out')
  assert {r['feature'] for r in rows} >= {'trip_miles', 'payment_type',
                                          'company', 'trip_seconds'}
  assert all(float(r['skew']) <= float(r['skew_threshold']) for r in rows)
  assert not any(r['anomaly'] for r in rows)
  window = rows[0]['window_start']
  statistics = tmp_path / 'out' / 'windows' / window / 'statistics.pb'
  assert statistics.is_file()
  assert (tmp_path / 'out' / 'windows' / window / 'anomalies.pbtxt').is_file()


def test_shifted_traffic_is_skew_on_exactly_the_shifted_features(
    taxi_run, served_logs, tmp_path):
  result = _monitor(taxi_run, served_logs['shifted'].parent,
                    tmp_path / 'out')
  assert result.exit_code == 3, result
  out_of_bounds = [line for line in result.stdout.splitlines()
                   if line.startswith('OUT OF BOUNDS window')]
  assert out_of_bounds
  rows = _windows(tmp_path / 'out')
  flagged = {r['feature'] for r in rows if r['anomaly']}
  assert flagged == SHIFTED
  for feature in SHIFTED:
    assert f'{feature}: ' in out_of_bounds[0]
  miles = next(r for r in rows if r['feature'] == 'trip_miles')
  assert miles['measure'] == 'JENSEN_SHANNON_DIVERGENCE'
  assert float(miles['skew']) > float(miles['skew_threshold'])
  payment = next(r for r in rows if r['feature'] == 'payment_type')
  assert payment['measure'] == 'L_INFTY'
  assert 'Unexpected string values' in payment['anomaly']
  report = (tmp_path / 'out' / 'monitoring.html').read_text()
  assert 'Out of bounds' in report and 'trip_miles' in report
  assert 'payment_type' in report and '<img' in report


def test_bad_log_files_are_named_and_skipped(taxi_run, served_logs,
                                             tmp_path):
  logs = tmp_path / 'logs'
  good = sorted(glob.glob(f'{served_logs["normal"]}-*.tfrecord'))
  shutil.copytree(served_logs['normal'].parent, logs)
  data = Path(good[0]).read_bytes()
  (logs / 'truncated.tfrecord').write_bytes(data[:len(data) // 2])
  with tf.io.TFRecordWriter(str(logs / 'examples.tfrecord')) as writer:
    writer.write(b'\x08\x96\x01 not a prediction log')
  (logs / '.partial.tfrecord.tmp').write_bytes(b'being written')
  result = _monitor(taxi_run, logs, tmp_path / 'out')
  assert result.exit_code == 0, result
  for name in ('truncated.tfrecord', 'examples.tfrecord'):
    assert f'bad log file, skipped: {logs / name}: ' in result.stderr
  assert '.partial' not in result.stderr + result.stdout
  assert f'({2} bad, skipped)' in result.stdout
  with open(tmp_path / 'out' / 'bad-files.csv', newline='') as f:
    assert len(list(csv.DictReader(f))) == 2


def test_predict_and_stream_logs_go_through_the_same_monitor(
    taxi_run, taxi_sample, taxi_pushed_model, tmp_path):
  _, output = taxi_run
  header, rows = read_csv(taxi_sample)
  # The bundled data is in an order (its first rows are mostly from a few
  # areas): a random sample is traffic like the training data.
  rows = random.Random(0).sample(rows, 700)
  write_csv(tmp_path / 'in' / 'a.csv', header, rows[:400])
  write_csv(tmp_path / 'in' / 'b.csv', header, rows[400:700])
  predicted = run_cli(['predict', '--input', str(tmp_path / 'in' / '*.csv'),
                       '--output-prefix', str(tmp_path / 'pred' / 'p'),
                       '--model', str(taxi_pushed_model),
                       '--log-dir', str(tmp_path / 'logs')])
  assert predicted.exit_code == 0, predicted
  base = tmp_path / 'models' / MODEL
  shutil.copytree(taxi_pushed_model, base / taxi_pushed_model.name)
  streamed = run_cli(['stream', '--config', str(output / RUN_CONFIG_FILE),
                      '--input', str(tmp_path / 'in'), '--stream-output',
                      str(tmp_path / 'stream'), '--model', str(base),
                      '--log-dir', str(tmp_path / 'logs'),
                      '--idle-timeout', '2'])
  assert streamed.exit_code == 0, streamed
  logs = sorted(p.name for p in (tmp_path / 'logs').iterdir()
                if p.is_file())
  assert [n for n in logs if n.startswith('stream-')] == [
      'stream-a.tfrecord', 'stream-b.tfrecord']
  assert any(n.startswith('predict-') for n in logs)
  result = _monitor(taxi_run, tmp_path / 'logs', tmp_path / 'out')
  # Rows of the training data: within bounds, every scored row counted
  # once per job.
  assert result.exit_code == 0, result
  assert f'rows: {2 * 700:,}' in result.stdout


@pytest.mark.parametrize('args, message', [
    (['--logs', '/no/such/dir'], 'no log files in /no/such/dir'),
    (['--logs', 'LOGS', '--window', '0'],
     'monitoring.window_seconds must be > 0'),
    (['--logs', 'LOGS', '--set', 'monitoring.thresholds.fare=0.2'],
     'monitoring.thresholds names fare, which the model does not read'),
    (['--logs', 'LOGS', '--set', 'monitoring.numeric_threshold=2'],
     'monitoring.numeric_threshold must be in [0, 1]'),
])
def test_bad_monitor_input_is_exit_2(taxi_run, served_logs, tmp_path, args,
                                     message):
  args = [str(served_logs['normal'].parent) if a == 'LOGS' else a
          for a in args]
  _, output = taxi_run
  result = run_cli(['monitor', '--output', str(output),
                    '--monitor-output', str(tmp_path / 'out'), *args])
  assert result.exit_code == 2, result
  assert message in result.stderr and 'Traceback' not in result.stderr


def test_logs_of_a_model_that_no_run_here_pushed_is_exit_2(
    taxi_run, tmp_path):
  from tfx_e2e.serving import request_log  # pylint: disable=import-outside-toplevel
  example = tf.train.Example()
  example.features.feature['trip_miles'].float_list.value.append(1.0)
  with tf.io.TFRecordWriter(str(tmp_path / 'x.tfrecord')) as writer:
    for record in request_log.regress_records(
        [example.SerializeToString()], [1.0], MODEL, 12345, 1_700_000_000):
      writer.write(record)
  result = _monitor(taxi_run, tmp_path / 'x.tfrecord', tmp_path / 'out')
  assert result.exit_code == 2, result
  assert 'no run in' in result.stderr and 'pushed version 12345' in (
      result.stderr)


def test_a_baseline_given_as_files_instead_of_mlmd(taxi_run, served_logs,
                                                   tmp_path):
  from tfx_e2e.monitoring import monitor  # pylint: disable=import-outside-toplevel
  _, output = taxi_run
  config = PipelineConfig(output_dir=str(output))
  version = int(load_run_results(config).pushed_version)
  found = monitor.find_baseline(config, version)
  given = ['--baseline-statistics', found.statistics_path,
           '--baseline-schema', found.schema_path]
  result = _monitor(taxi_run, served_logs['shifted'].parent,
                    tmp_path / 'out', *given)
  assert result.exit_code == 3, result
  assert {r['feature'] for r in _windows(tmp_path / 'out')
          if r['anomaly']} == SHIFTED
  (tmp_path / 'junk.pb').write_bytes(b'\x01\x02junk')
  for args, message in (
      (given[:2], 'go together'),
      (['--baseline-statistics', str(tmp_path / 'junk.pb'),
        '--baseline-schema', found.schema_path], 'cannot read the baseline'),
      (['--baseline-statistics', found.statistics_path,
        '--baseline-schema', str(tmp_path / 'junk.pb')],
       'cannot read the baseline')):
    result = _monitor(taxi_run, served_logs['shifted'].parent,
                      tmp_path / 'bad', *args)
    assert result.exit_code == 2, result
    assert message in result.stderr and 'Traceback' not in result.stderr


def test_drift_between_windows_of_request_time(taxi_run, eval_examples,
                                               tmp_path):
  """Three windows of logged time: eval rows, eval rows again, shifted
  rows. The second is within bounds; the third drifts from the second and
  is skewed from training, on the shifted features only. (trip_miles x10
  here: eval and eval x3 measure 0.11 apart on their quantile histograms,
  under the default 0.15, where x3 against the training split, with its
  outliers, measures 0.22.)"""
  from tfx_e2e.serving import request_log  # pylint: disable=import-outside-toplevel
  _, output = taxi_run
  version = int(load_run_results(
      PipelineConfig(output_dir=str(output))).pushed_version)
  start = 1_800_000_000 - 1_800_000_000 % 60
  batches = [eval_examples, eval_examples,
             [_shifted(e, scale=10) for e in eval_examples]]
  (tmp_path / 'logs').mkdir()
  with tf.io.TFRecordWriter(str(tmp_path / 'logs' / 'r.tfrecord')) as writer:
    for index, examples in enumerate(batches):
      for record in request_log.regress_records(
          [e.SerializeToString() for e in examples], [0.0] * len(examples),
          MODEL, version, start + 60 * index + 30, rows_per_record=50):
        writer.write(record)
  result = _monitor(taxi_run, tmp_path / 'logs', tmp_path / 'out',
                    '--window', '60')
  assert result.exit_code == 3, result
  rows = _windows(tmp_path / 'out')
  windows = sorted({r['window_start'] for r in rows})
  assert len(windows) == 3
  first, second, third = ([r for r in rows if r['window_start'] == w]
                          for w in windows)
  assert all(r['drift'] == '' for r in first)  # nothing before it
  assert not any(r['anomaly'] for r in first + second)
  assert all(float(r['drift']) == 0 for r in second if r['drift'])
  drifted = {r['feature'] for r in third
             if r['drift'] and float(r['drift']) > float(r['drift_threshold'])}
  assert drifted == SHIFTED
  assert {r['feature'] for r in third if r['anomaly']} == SHIFTED
  assert 'High Linfty distance between current and previous' in next(
      r['anomaly'] for r in third if r['feature'] == 'payment_type')
  assert f'OUT OF BOUNDS window {windows[2]}' in result.stdout
  assert windows[0] not in result.stdout.split('OUT OF BOUNDS')[-1]
