"""Logged requests -> raw feature rows: each kind of record, the missing
value conventions, bad records, and the Arrow columns TFDV reads."""

from hypothesis import given, strategies as st
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_serving.apis import prediction_log_pb2

from tfx_e2e.monitoring import logs
from tfx_e2e.serving import request_log

FEATURES = ['company', 'trip_miles', 'trip_start_hour']


def _predict(inputs, when=100):
  return request_log.build_record(request_log.Entry(
      'predict', 'm', 4, 'serving_raw', when, 1.0, inputs,
      {'outputs': np.zeros(1)})).SerializeToString()


def _example(**features):
  example = tf.train.Example()
  for name, values in features.items():
    feature = example.features.feature[name]
    if values and isinstance(values[0], bytes):
      feature.bytes_list.value.extend(values)
    elif values and isinstance(values[0], float):
      feature.float_list.value.extend(values)
    else:
      feature.int64_list.value.extend(values)
  return example


def test_raw_predict_inputs_with_serving_raws_missing_marks():
  when, version, rows = logs.parse_record(_predict({
      'company': np.array([b'A', b''], dtype=object),
      'trip_miles': np.array([1.5, np.nan], dtype=np.float32),
      'trip_start_hour': np.array([3, 4])}), FEATURES)
  assert (when, version) == (100, 4)
  assert rows == [{'company': [b'A'], 'trip_miles': [1.5],
                   'trip_start_hour': [3]},
                  {'company': [], 'trip_miles': [], 'trip_start_hour': [4]}]


def test_predict_of_serialized_examples_and_regress_and_classify():
  examples = [_example(company=[b'A'], trip_miles=[2.0]),
              _example(trip_start_hour=[5])]
  serialized = [e.SerializeToString() for e in examples]
  expected = [{'company': [b'A'], 'trip_miles': [2.0]},
              {'trip_start_hour': [5]}]
  assert logs.parse_record(_predict(
      {'inputs': np.array(serialized, dtype=object)}), FEATURES)[2] == expected
  for kind, response in (('regress', [1.0, 2.0]),
                         ('classify', [[('a', 1.0)], [('b', 0.0)]])):
    record = request_log.build_record(request_log.Entry(
        kind, 'm', 1, '', 5, 1.0, serialized, response))
    assert logs.parse_record(record.SerializeToString(),
                             FEATURES)[2] == expected


def test_examples_with_context_are_merged():
  record = prediction_log_pb2.PredictionLog()
  record.log_metadata.timestamp_secs = 9
  both = record.regress_log.request.input.example_list_with_context
  both.context.CopyFrom(_example(company=[b'C']))
  both.examples.add().CopyFrom(_example(trip_miles=[1.0]))
  assert logs.parse_record(record.SerializeToString(), FEATURES)[2] == [
      {'company': [b'C'], 'trip_miles': [1.0]}]


@pytest.mark.parametrize('data, message', [
    (b'\xff\xff\xff', 'not a PredictionLog'),
    (b'', 'no log type'),
    (prediction_log_pb2.PredictionLog(
        session_run_log={}).SerializeToString(), 'session_run_log'),
])
def test_bad_records_say_why(data, message):
  with pytest.raises(logs.BadRecord, match=message):
    logs.parse_record(data, FEATURES)


def test_a_record_without_its_time_is_bad():
  data = _predict({'trip_miles': np.array([1.0])}, when=0)
  with pytest.raises(logs.BadRecord, match='timestamp_secs'):
    logs.parse_record(data, FEATURES)


def test_inputs_of_different_batch_sizes_are_bad():
  with pytest.raises(logs.BadRecord, match='different batch sizes'):
    logs.parse_record(_predict({'trip_miles': np.array([1.0, 2.0]),
                                'trip_start_hour': np.array([1])}), FEATURES)


def test_columns_are_typed_by_the_schema_and_ignored_ones_left_out():
  types = {'trip_miles': schema_pb2.FLOAT, 'trip_start_hour': schema_pb2.INT,
           'company': schema_pb2.BYTES, 'fare': schema_pb2.FLOAT}
  batch = logs.record_batch([
      {'trip_miles': [1], 'trip_start_hour': [2], 'company': [b'x'],
       'fare': [3.0], 'new': [b'n']},
      {'trip_miles': [], 'trip_start_hour': None, 'company': [b'y']}],
                            types, ignored=['fare'])
  assert batch.schema.names == ['company', 'new', 'trip_miles',
                                'trip_start_hour']
  assert batch.column(2).type == pa.large_list(pa.float32())  # ints as floats
  assert batch.column(3).to_pylist() == [[2], None]
  # A value of another type than the schema's keeps its own type, so that
  # TFDV reports the change.
  odd = logs.record_batch([{'trip_start_hour': [2.5]}], types)
  assert odd.column(0).type == pa.large_list(pa.float32())
  mixed = logs.record_batch([{'trip_start_hour': [1]},
                             {'trip_start_hour': [b'a']}], types)
  assert mixed.column(0).type == pa.large_list(pa.large_binary())


@given(st.integers(1, 2**40), st.integers(1, 10**6))
def test_a_time_falls_in_exactly_its_window(seconds, window):
  start = logs.window_start(seconds, window)
  assert start % window == 0 and start <= seconds < start + window
