"""The shared pieces of batch and streaming prediction: CSV rows and their
column-wise encoding into tf.Examples."""

import tensorflow as tf

from pipeline import prediction

TYPES = {'miles': tf.float32, 'seconds': tf.int64, 'company': tf.string,
         'absent': tf.int64}


def _features(serialized):
  """{name: values}; an empty feature (no value list) is missing, which is
  how tf.io.parse_example reads it too."""
  feature = tf.train.Example.FromString(serialized).features.feature
  return {name: list(getattr(feature[name], kind).value)
          for name in feature
          if (kind := feature[name].WhichOneof('kind'))}


def test_values_are_typed_and_empty_ones_left_out():
  examples, errors = prediction.encode_examples(
      ['seconds', 'company', 'miles', 'other'],
      [['60', 'Flash Cab', '1.5', 'x'], ['', '', '', 'y'],
       ['1e3', 'Ünï', '-0', 'z']], TYPES)
  assert errors == {}
  assert [_features(e) for e in examples] == [
      {'seconds': [60], 'company': [b'Flash Cab'], 'miles': [1.5]},
      {},
      {'seconds': [1000], 'company': ['Ünï'.encode()], 'miles': [0.0]}]


def test_bad_values_name_their_column_and_keep_the_other_rows():
  examples, errors = prediction.encode_examples(
      ['miles', 'seconds'],
      [['1', '2'], ['far', '2'], ['1', '2.5'], ['inf', '3'], [' 4 ', 'nan'],
       ['5', '6']], TYPES)
  assert errors == {
      1: "column 'miles': could not convert string to float: 'far'",
      2: "column 'seconds': '2.5' is not an integer",
      3: "column 'miles': 'inf' is not a finite number",
      4: "column 'seconds': 'nan' is not a finite number"}
  assert [_features(e) for e in examples] == [
      {'miles': [1.0], 'seconds': [2]}, {'miles': [5.0], 'seconds': [6]}]


def test_csv_rows_report_ragged_rows_and_skip_blank_lines():
  header, rows = prediction.csv_rows('a,b\n1,2\n\n3\n"x,y",4\n')
  assert header == ['a', 'b']
  assert rows == [(2, '1,2', ['1', '2']),
                  (4, '3', '1 fields, but the header has 2'),
                  (5, '"x,y",4', ['x,y', '4'])]
