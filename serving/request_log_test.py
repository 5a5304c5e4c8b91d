"""Request logging: the LoggingConfig text proto, the files (rolled, renamed
into place, records whole), sampling and the bounded queue."""

import glob
import os
import random
import threading

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tfx_e2e.serving import request_log


def _config(prefix, rate=1.0, kind='tfrecord'):
  return request_log.parse_logging_config(
      f'log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }}'
      f' sampling_config {{ sampling_rate: {rate} }}', 'test')


def _records(pattern):
  return [prediction_log_pb2.PredictionLog.FromString(r.numpy())
          for path in sorted(glob.glob(pattern))
          for r in tf.data.TFRecordDataset(path)]


@pytest.mark.parametrize('text, message', [
    ('log_collector_config { filename_prefix: "/x" } '
     'sampling_config { sampling_rate: 1 }', "type '' is not one of"),
    ('log_collector_config { type: "gcs" filename_prefix: "/x" } '
     'sampling_config { sampling_rate: 1 }', "type 'gcs'"),
    ('log_collector_config { type: "tfrecord" } '
     'sampling_config { sampling_rate: 1 }', 'filename_prefix is empty'),
    ('log_collector_config { type: "tfrecord" filename_prefix: "/x" }',
     'no sampling_config'),
    ('log_collector_config { type: "tfrecord" filename_prefix: "/x" } '
     'sampling_config { sampling_rate: 1.5 }', 'not in [0, 1]'),
    ('log_collector_config { type: "tfrecord" filename_prefix: "/x" } '
     'sampling_config { sampling_rate: -0.1 }', 'not in [0, 1]'),
    ('log_collector_config { type: "tfrecord" filename_prefix: "/x" } '
     'sampling_config { sampling_rate: nan }', 'not in [0, 1]'),
    ('sampling_rate: 1', 'not a LoggingConfig text proto'),
    ('log_collector_config {', 'not a LoggingConfig text proto'),
])
def test_a_bad_logging_config_is_refused_with_the_reason(text, message):
  with pytest.raises(request_log.LoggingConfigError, match='^where: .*'
                     + message.replace('[', r'\[').replace(']', r'\]')
                     .replace('(', r'\(')):
    request_log.parse_logging_config(text, 'where')


def test_an_unreadable_file_is_a_config_error(tmp_path):
  (tmp_path / 'bin').write_bytes(b'\xff\xfe\x00')
  for path in (tmp_path / 'missing', tmp_path / 'bin'):
    with pytest.raises(request_log.LoggingConfigError,
                       match=f'--logging_config {path}'):
      request_log.read_logging_config(str(path))


def _predict(logger, rows, name='m', version=7):
  logger.log('predict', name, version, '',
             {'x': tf.constant(np.arange(rows, dtype=np.float32))},
             {'outputs': np.arange(rows, dtype=np.float32) * 2})


def test_records_are_prediction_logs_with_spec_sampling_and_time(tmp_path):
  logger = request_log.RequestLogger(_config(tmp_path / 'logs' / 'req'))
  logger.start()
  _predict(logger, 3)
  example = tf.train.Example()
  example.features.feature['a'].int64_list.value.append(4)
  logger.log('regress', 'm', 7, 'serving_default',
             [example.SerializeToString()], [1.5])
  logger.log('classify', 'm', 7, 'c', [example.SerializeToString()],
             [[('x', 0.25)]])
  logger.close()
  # Only completed files are visible under the prefix.
  assert not glob.glob(str(tmp_path / 'logs' / '.*.tmp'))
  predict, regress, classify = _records(str(tmp_path / 'logs' /
                                            'req-*.tfrecord'))
  for record in (predict, regress, classify):
    metadata = record.log_metadata
    assert metadata.model_spec.name == 'm'
    assert metadata.model_spec.version.value == 7
    assert metadata.sampling_config.sampling_rate == 1.0
    assert abs(metadata.timestamp_secs - __import__('time').time()) < 60
    assert list(metadata.saved_model_tags) == ['serve']
  assert predict.log_metadata.model_spec.signature_name == 'serving_default'
  assert tf.make_ndarray(predict.predict_log.request.inputs['x']).tolist() == [
      0, 1, 2]
  assert tf.make_ndarray(
      predict.predict_log.response.outputs['outputs']).tolist() == [0, 2, 4]
  assert predict.predict_log.response.model_spec.version.value == 7
  assert regress.regress_log.request.input.example_list.examples[0] == example
  assert regress.regress_log.response.result.regressions[0].value == 1.5
  assert classify.classify_log.response.result.classifications[0].classes[
      0].label == 'x'
  assert logger.logged == 3 and logger.dropped == 0


@pytest.mark.parametrize('value', [
    np.array([1.5, np.nan, -2], np.float32), np.array([[1, 2], [3, 4]]),
    np.array([True, False]), np.array([b'a', b'', 'x'], dtype=object),
    np.array(7, np.int32), np.zeros((0, 3), np.float64),
    tf.constant(['c', 'd']), np.array([1, 2], np.uint8)])
def test_tensor_protos_read_back_as_tensorflow_reads_them(value):
  expected = value.numpy() if isinstance(value, tf.Tensor) else value
  got = tf.make_ndarray(request_log.tensor_proto(value))
  assert got.shape == expected.shape and got.dtype == (
      expected.dtype if expected.dtype != object else got.dtype)
  assert np.array_equal(got.astype(object) if got.dtype == object else got,
                        [v.encode() if isinstance(v, str) else v
                         for v in expected.ravel()] if expected.dtype == object
                        else expected, equal_nan=expected.dtype.kind == 'f')


def test_files_roll_by_size_and_age(tmp_path):
  now = [1000.0]
  files = request_log.LogFiles(str(tmp_path / 'r'), max_file_bytes=100,
                               max_file_seconds=10, clock=lambda: now[0])
  files.write(b'x' * 50)
  assert files.completed == []  # 66 bytes framed: under the limit
  files.write(b'x' * 50)
  assert len(files.completed) == 1  # 132 >= 100: completed at once
  files.write(b'y')
  assert files.seconds_left() == 10
  now[0] += 10
  files.roll_if_due()
  assert len(files.completed) == 2
  assert files.seconds_left() is None  # no empty file is opened
  assert sorted(glob.glob(str(tmp_path / 'r-*.tfrecord'))) == sorted(
      files.completed)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), max_size=40),
       max_bytes=st.integers(1, 600))
def test_every_record_is_in_exactly_one_file_whole(tmp_path_factory, sizes,
                                                  max_bytes):
  """Whatever the record sizes and the size limit: the records read back,
  file by file in order, are those written, and no file is empty."""
  directory = tmp_path_factory.mktemp('roll')
  files = request_log.LogFiles(str(directory / 'p'), max_file_bytes=max_bytes)
  written = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
  for record in written:
    files.write(record)
  files.close()
  read = []
  for path in files.completed:
    in_file = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    assert in_file, path
    read += in_file
  assert read == written
  assert sorted(os.listdir(directory)) == sorted(
      os.path.basename(p) for p in files.completed)


@settings(max_examples=10, deadline=None)
@given(rate=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_sampling_keeps_about_the_configured_share(tmp_path_factory, rate,
                                                   seed):
  logger = request_log.RequestLogger(
      _config(tmp_path_factory.mktemp('s') / 'p', rate),
      rng=random.Random(seed))
  kept = sum(logger.sampled() for _ in range(4000))
  if rate in (0.0, 1.0):
    assert kept == 4000 * rate
  else:  # within 5 standard deviations of the binomial
    assert abs(kept - 4000 * rate) <= 5 * (4000 * rate * (1 - rate)) ** 0.5 + 1


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path, caplog):
  logger = request_log.RequestLogger(_config(tmp_path / 'q'),
                                     queue_records=5)
  # Not started: nothing drains the queue, so it fills after 5 records.
  for _ in range(12):
    _predict(logger, 1)
  assert logger.dropped == 7
  assert 'queue full' in logger.status_note()
  assert '7 records dropped' in logger.status_note()
  assert 'queue full (5 records), 1 records dropped' in caplog.text
  logger.start()
  logger.close()
  assert logger.logged == 5
  assert len(_records(str(tmp_path / 'q-*.tfrecord'))) == 5


def test_concurrent_requests_are_each_logged_once(tmp_path):
  logger = request_log.RequestLogger(_config(tmp_path / 'c'),
                                     max_file_bytes=2000).start()

  def send(thread):
    for i in range(50):
      _predict(logger, 1, version=thread * 1000 + i)

  threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  logger.close()
  versions = [r.log_metadata.model_spec.version.value
              for r in _records(str(tmp_path / 'c-*.tfrecord'))]
  assert sorted(versions) == sorted(t * 1000 + i for t in range(4)
                                    for i in range(50))
  assert logger.files_written > 1


def test_regress_records_of_a_batch_job(tmp_path):
  examples = []
  for i in range(5):
    example = tf.train.Example()
    example.features.feature['v'].float_list.value.append(i)
    examples.append(example.SerializeToString())
  records = request_log.regress_records(examples, np.arange(5.0), 'm', 3,
                                        1234, rows_per_record=2)
  parsed = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
  assert [len(p.regress_log.request.input.example_list.examples)
          for p in parsed] == [2, 2, 1]
  assert [v.value for p in parsed
          for v in p.regress_log.response.result.regressions] == [
              0, 1, 2, 3, 4]
  assert {p.log_metadata.timestamp_secs for p in parsed} == {1234}
