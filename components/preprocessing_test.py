"""preprocessing_fn through tf.Transform's Beam implementation, on a few rows."""

import functools
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from tfx_e2e.components import features
from tfx_e2e.components.preprocessing import (FORCE_TF_COMPAT_V1,
                                              preprocessing_fn)
from tfx_e2e.components.preprocessing import NUMBERS, Z_SCORE_LIMIT

CUSTOM_CONFIG = features.make_custom_config(
    label='fare', exclude_features=['trip_id'],
    categorical_features=['hour'], oov_buckets=1)

# As SchemaGen (infer_feature_shape=False) describes CSV columns: every one
# variable-length, so an empty cell is an empty list.
RAW_SPEC = {
    'trip_id': tf.io.VarLenFeature(tf.string),
    'miles': tf.io.VarLenFeature(tf.float32),
    'seconds': tf.io.VarLenFeature(tf.int64),
    'hour': tf.io.VarLenFeature(tf.int64),
    'payment': tf.io.VarLenFeature(tf.string),
    'fare': tf.io.VarLenFeature(tf.float32),
}
ROWS = [
    {'trip_id': [b'a'], 'miles': [1.0], 'seconds': [100], 'hour': [7],
     'payment': [b'Cash'], 'fare': [5.0]},
    {'trip_id': [b'b'], 'miles': [3.0], 'seconds': [300], 'hour': [7],
     'payment': [b'Card'], 'fare': [9.0]},
    {'trip_id': [b'c'], 'miles': [], 'seconds': [], 'hour': [8],
     'payment': [], 'fare': [7.0]},
    {'trip_id': [b'd'], 'miles': [float('nan')], 'seconds': [200],
     'hour': [9], 'payment': [b'Cash'], 'fare': []},
]


def _analyze_and_transform(tmp_path, rows, more_rows, raw_spec=None,
                           custom_config=None):
  """Transformed rows, transformed `more_rows`, and the TFTransformOutput."""
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(raw_spec or RAW_SPEC))
  output_dir = tmp_path / 'transform_output'
  with tft_beam.Context(temp_dir=str(tmp_path / 'tmp'),
                        force_tf_compat_v1=FORCE_TF_COMPAT_V1):
    (transformed, _), transform_fn = (
        (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            functools.partial(preprocessing_fn,
                              custom_config=custom_config or CUSTOM_CONFIG)))
    more, _ = ((more_rows, metadata), transform_fn) | tft_beam.TransformDataset()
    _ = transform_fn | tft_beam.WriteTransformFn(str(output_dir))
  return transformed, more, tft.TFTransformOutput(str(output_dir))


def test_preprocessing_fn(tmp_path):
  unseen = {'trip_id': [b'e'], 'miles': [2.0], 'seconds': [200],
            'hour': [23], 'payment': [b'Bitcoin'], 'fare': [1.0]}
  far = dict(unseen, miles=[1000.0])
  transformed, (unseen_out, far_out), output = _analyze_and_transform(
      tmp_path, ROWS, [unseen, far])

  # Excluded columns are not features; the numeric columns are one row of
  # z-scores, and the string and categorical columns one row of vocabulary
  # ids, each in model_input_names order (miles, seconds; hour, payment).
  assert set(transformed[0]) == {NUMBERS, features.CATEGORIES, 'fare'}
  assert output.transformed_feature_spec()[NUMBERS].shape == [2]

  # Numbers: z-scores over the present values; missing and non-finite values
  # get 0, the z-score of the mean (miles: mean of 1 and 3 = 2, std 1).
  miles = np.array([row[NUMBERS][0] for row in transformed])
  assert np.isfinite(miles).all()
  assert miles.mean() == pytest.approx(0.0, abs=1e-6)
  assert miles[2] == pytest.approx(0.0, abs=1e-6)  # imputed to the mean
  assert miles[3] == pytest.approx(0.0, abs=1e-6)  # NaN imputed too
  assert miles[1] == pytest.approx(1.0) and miles[0] == pytest.approx(-1.0)
  seconds = np.array([row[NUMBERS][1] for row in transformed])
  assert seconds[2] == pytest.approx(0.0, abs=1e-6)  # mean of 100, 300, 200
  # An extreme value is clipped: 1,000 miles is 998 standard deviations out.
  assert far_out[NUMBERS][0] == pytest.approx(Z_SCORE_LIMIT)

  # Strings and categorical numbers: ids in one vocabulary of column=value
  # tokens, most frequent first; unseen values, and missing ones
  # (tf.Transform keeps '' out of vocabularies), go to the OOV bucket.
  vocabulary = [token.decode() for token in
                output.vocabulary_by_name(features.CATEGORIES)]
  assert sorted(vocabulary) == ['hour=7', 'hour=8', 'hour=9',
                                'payment=Card', 'payment=Cash']
  assert set(vocabulary[:2]) == {'hour=7', 'payment=Cash'}  # seen twice

  def tokens(row):  # columns in model_input_names order: hour, payment
    return [vocabulary[i] if i < len(vocabulary) else 'OOV'
            for i in row[features.CATEGORIES]]

  assert [tokens(row) for row in transformed] == [
      ['hour=7', 'payment=Cash'], ['hour=7', 'payment=Card'],
      ['hour=8', 'OOV'], ['hour=9', 'payment=Cash']]
  assert tokens(unseen_out) == ['OOV', 'OOV']  # hour 23, 'Bitcoin'
  # What the model's encoding relies on: vocabulary + OOV buckets.
  assert output.num_buckets_for_transformed_feature(
      features.CATEGORIES) == len(vocabulary) + 1

  # The label passes through; a missing label is NaN (the Trainer drops it).
  fares = [row['fare'] for row in transformed]
  assert fares[:3] == [5.0, 9.0, 7.0] and math.isnan(fares[3])


def test_each_numeric_column_gets_the_statistics_of_its_own_values(tmp_path):
  """All numeric columns are analyzed together, yet each column is z-scored
  with the mean and population standard deviation of its own present values
  (as tft.scale_to_z_score over that column's present values would), with
  missing cells in different rows of different columns."""
  rng = np.random.default_rng(6)
  rows_count = 40
  columns = {
      'a': rng.normal(5.0, 2.0, rows_count),
      'b': rng.uniform(-1000.0, 1000.0, rows_count),
      'c': rng.integers(0, 50, rows_count).astype(float),
      'constant': np.full(rows_count, 3.0),  # variance 0: x - mean
      'outlier': np.append(rng.normal(size=rows_count - 1), 1e4),
  }
  missing = {name: rng.random(rows_count) < 0.2 for name in columns}
  missing['outlier'][-1] = False
  raw_spec = {name: tf.io.VarLenFeature(tf.float32) for name in columns}
  raw_spec['fare'] = tf.io.VarLenFeature(tf.float32)
  rows = [dict({name: [] if missing[name][i] else [values[i]]
                for name, values in columns.items()}, fare=[1.0])
          for i in range(rows_count)]
  transformed, _, _ = _analyze_and_transform(
      tmp_path, rows, [], raw_spec,
      features.make_custom_config(label='fare', exclude_features=[],
                                  categorical_features=[], oov_buckets=1))

  assert set(transformed[0]) == {NUMBERS, 'fare'}
  for i, (name, values) in enumerate(sorted(columns.items())):
    present = values[~missing[name]].astype(np.float32).astype(np.float64)
    mean, std = present.mean(), present.std()  # population (ddof=0)
    expected = np.where(
        missing[name], 0.0,
        np.clip((values - mean) / (std or 1.0), -Z_SCORE_LIMIT,
                Z_SCORE_LIMIT))
    actual = [row[NUMBERS][i] for row in transformed]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4,
                               err_msg=name)
