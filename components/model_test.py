"""run_fn on data from a known linear function, through a real tf.Transform.

The label is an exact linear function of the features, so a trained linear
model must reproduce it through both exported serving signatures, from raw
features (the transform graph is inside the SavedModel).
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import metadata_io
from tensorflow_transform.tf_metadata import schema_utils
from tfx import v1 as tfx
from tfx.components.trainer import fn_args_utils
from tfx.components.util import tfxio_utils
from tfx.types import standard_artifacts

from tfx_e2e.components import features
from tfx_e2e.components import model
from tfx_e2e.components.preprocessing import (FORCE_TF_COMPAT_V1,
                                              preprocessing_fn)

LABEL = 'fare'
CUSTOM_CONFIG = features.make_custom_config(
    label=LABEL, exclude_features=[], categorical_features=['hour'],
    oov_buckets=1)
RAW_SPEC = {
    'miles': tf.io.VarLenFeature(tf.float32),
    'payment': tf.io.VarLenFeature(tf.string),
    'hour': tf.io.VarLenFeature(tf.int64),
    LABEL: tf.io.VarLenFeature(tf.float32),
}
PAYMENT_EFFECT = {'Cash': 0.0, 'Card': 3.0}
HOUR_EFFECT = {1: 0.0, 2: -1.0, 3: 2.0}


def _true_fare(miles, payment, hour):
  return 2.5 * miles + PAYMENT_EFFECT[payment] + HOUR_EFFECT[hour] + 1.0


def _rows(count, seed):
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(count):
    miles = float(rng.uniform(0, 10))
    payment = str(rng.choice(list(PAYMENT_EFFECT)))
    hour = int(rng.choice(list(HOUR_EFFECT)))
    rows.append({'miles': [miles], 'payment': [payment.encode()],
                 'hour': [hour], LABEL: [_true_fare(miles, payment, hour)]})
  return rows


def _example(row, with_label=True):
  feature = {
      'miles': tf.train.Feature(float_list=tf.train.FloatList(
          value=row['miles'])),
      'payment': tf.train.Feature(bytes_list=tf.train.BytesList(
          value=row['payment'])),
      'hour': tf.train.Feature(int64_list=tf.train.Int64List(
          value=row['hour'])),
  }
  if with_label:
    feature[LABEL] = tf.train.Feature(float_list=tf.train.FloatList(
        value=row[LABEL]))
  return tf.train.Example(features=tf.train.Features(feature=feature))


def _transform(tmp_path, rows, raw_spec=None, custom_config=None,
               example=_example):
  """Writes the transform graph and the raw examples, as TFX does (Transform
  does not materialize transformed examples: run_fn transforms them)."""
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(raw_spec or RAW_SPEC))
  graph_dir = tmp_path / 'transform_graph'
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'examples')
  examples.split_names = '["train", "eval"]'
  with tft_beam.Context(temp_dir=str(tmp_path / 'tmp'),
                        force_tf_compat_v1=FORCE_TF_COMPAT_V1):
    transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(
        functools.partial(preprocessing_fn,
                          custom_config=custom_config or CUSTOM_CONFIG))
    _ = transform_fn | tft_beam.WriteTransformFn(str(graph_dir))
  metadata_io.write_metadata(
      metadata, str(graph_dir / tft.TFTransformOutput.RAW_METADATA_DIR))
  for split in ('train', 'eval'):
    split_dir = tmp_path / 'examples' / f'Split-{split}'
    split_dir.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split_dir / 'data.gz'),
                              options='GZIP') as writer:
      for row in rows:
        writer.write(example(row).SerializeToString())
  return graph_dir, examples


def _fn_args(tmp_path, graph_dir, examples, custom_config, solver):
  return tfx.components.FnArgs(
      train_files=[f'{examples.uri}/Split-train/*'],
      eval_files=[f'{examples.uri}/Split-eval/*'],
      transform_output=str(graph_dir),
      serving_model_dir=str(tmp_path / 'serving_model'),
      train_steps=600, eval_steps=5,
      custom_config=dict(custom_config, solver=solver, l2=1e-6,
                         batch_size=32, learning_rate=0.1),
      data_accessor=fn_args_utils.DataAccessor(
          tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact(
              [examples], []),
          record_batch_factory=None, data_view_decode_fn=None))


@pytest.mark.parametrize('solver, tolerance', [
    ('least_squares', 0.02),  # exact, but for the small ridge penalty
    ('sgd', 0.3)])
def test_run_fn_exports_signatures_that_reproduce_a_linear_function(
    tmp_path, solver, tolerance):
  graph_dir, examples = _transform(tmp_path, _rows(400, seed=0))
  serving_dir = tmp_path / 'serving_model'
  model.run_fn(_fn_args(tmp_path, graph_dir, examples, CUSTOM_CONFIG, solver))

  loaded = tf.saved_model.load(str(serving_dir))
  assert {'serving_default', model.RAW_SIGNATURE} <= set(loaded.signatures)
  # TF Serving's regress API needs the regress method on serving_default.
  saved_model = saved_model_pb2.SavedModel.FromString(
      (serving_dir / 'saved_model.pb').read_bytes())
  signature_defs = saved_model.meta_graphs[0].signature_def
  assert (signature_defs['serving_default'].method_name ==
          'tensorflow/serving/regress')
  assert (signature_defs[model.RAW_SIGNATURE].method_name ==
          'tensorflow/serving/predict')
  held_out = _rows(50, seed=1)
  expected = np.array([row[LABEL][0] for row in held_out])

  serialized = tf.constant([_example(r, with_label=False).SerializeToString()
                            for r in held_out])
  from_examples = loaded.signatures['serving_default'](
      **{model.EXAMPLES_KEY: serialized})[model.PREDICTION_KEY].numpy()
  np.testing.assert_allclose(from_examples, expected, atol=tolerance)

  from_raw = loaded.signatures[model.RAW_SIGNATURE](
      miles=tf.constant([r['miles'][0] for r in held_out]),
      payment=tf.constant([r['payment'][0] for r in held_out]),
      hour=tf.constant([r['hour'][0] for r in held_out], tf.int64),
  )[model.PREDICTION_KEY].numpy()
  np.testing.assert_allclose(from_raw, from_examples, rtol=1e-6, atol=1e-5)

  # Missing values in raw requests ('' and NaN) are imputed, not errors.
  imputed = loaded.signatures[model.RAW_SIGNATURE](
      miles=tf.constant([float('nan')]), payment=tf.constant(['']),
      hour=tf.constant([1], tf.int64))[model.PREDICTION_KEY].numpy()
  assert np.isfinite(imputed).all()

  # Columns of different lengths are an error, whichever one is short.
  columns = dict(miles=tf.constant([2.0, 3.0]),
                 payment=tf.constant(['Cash', 'Card']),
                 hour=tf.constant([1, 2], tf.int64))
  for name, column in columns.items():
    with pytest.raises(tf.errors.InvalidArgumentError):
      loaded.signatures[model.RAW_SIGNATURE](**dict(columns,
                                                    **{name: column[:1]}))


# Feature sets at the extremes: no vocabulary ids at all (all numeric), no
# numbers at all, one feature. Each column's effect on the label is linear
# in the model's encoding (a z-score, or one weight per category value).
SECONDS_EFFECT = 0.01
FEATURE_SETS = {
    'all numeric': ['miles', 'seconds'],
    'only categorical': ['hour', 'payment'],
    'one numeric feature': ['miles'],
    'one categorical feature': ['payment'],
}
FULL_SPEC = dict(RAW_SPEC, seconds=tf.io.VarLenFeature(tf.int64))


def _subset_rows(names, count, seed):
  """Rows of `names` only, labelled by their effects alone."""
  rng = np.random.default_rng(seed)
  effects = {
      'miles': lambda v: 2.5 * v, 'seconds': lambda v: SECONDS_EFFECT * v,
      'payment': lambda v: PAYMENT_EFFECT[v.decode()],
      'hour': lambda v: HOUR_EFFECT[v]}
  draws = {
      'miles': lambda: float(rng.uniform(0, 10)),
      'seconds': lambda: int(rng.integers(60, 3600)),
      'payment': lambda: str(rng.choice(list(PAYMENT_EFFECT))).encode(),
      'hour': lambda: int(rng.choice(list(HOUR_EFFECT)))}
  rows = []
  for _ in range(count):
    row = {name: [draws[name]()] for name in names}
    row[LABEL] = [1.0 + sum(effects[n](row[n][0]) for n in names)]
    rows.append(row)
  return rows


def _subset_example(row):
  def feature(values):
    if isinstance(values[0], bytes):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if isinstance(values[0], int):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))
  return tf.train.Example(features=tf.train.Features(feature={
      name: feature(values) for name, values in row.items()}))


@pytest.mark.parametrize('feature_set, solver, tolerance', [
    *[(name, 'least_squares', 0.02) for name in FEATURE_SETS],
    ('all numeric', 'sgd', 0.3)])
def test_run_fn_trains_exports_and_serves_any_mix_of_features(
    tmp_path, feature_set, solver, tolerance):
  names = FEATURE_SETS[feature_set]
  raw_spec = {name: FULL_SPEC[name] for name in names + [LABEL]}
  custom_config = dict(CUSTOM_CONFIG, **{
      features.CATEGORICAL: sorted({'hour'} & set(names))})
  graph_dir, examples = _transform(
      tmp_path, _subset_rows(names, 400, seed=4), raw_spec, custom_config,
      example=_subset_example)
  model.run_fn(_fn_args(tmp_path, graph_dir, examples, custom_config,
                        solver))

  loaded = tf.saved_model.load(str(tmp_path / 'serving_model'))
  raw_signature = loaded.signatures[model.RAW_SIGNATURE]
  assert set(raw_signature.structured_input_signature[1]) == set(names)
  held_out = _subset_rows(names, 50, seed=5)
  expected = np.array([row[LABEL][0] for row in held_out])
  serialized = tf.constant([
      _subset_example({n: row[n] for n in names}).SerializeToString()
      for row in held_out])
  from_examples = loaded.signatures['serving_default'](
      **{model.EXAMPLES_KEY: serialized})[model.PREDICTION_KEY].numpy()
  np.testing.assert_allclose(from_examples, expected, atol=tolerance)
  from_raw = raw_signature(**{
      name: tf.constant([row[name][0] for row in held_out],
                        FULL_SPEC[name].dtype)
      for name in names})[model.PREDICTION_KEY].numpy()
  np.testing.assert_allclose(from_raw, from_examples, rtol=1e-6, atol=1e-5)


def test_least_squares_is_the_ridge_solution(tmp_path):
  """The streamed fit equals numpy's ridge solution on the materialized X."""
  graph_dir, examples = _transform(tmp_path, _rows(300, seed=2))
  tft_output = tft.TFTransformOutput(str(graph_dir))
  # Batches of 64: the sums must add up across batches.
  dataset = model._dataset([f'{examples.uri}/Split-train/*'], tft_output,  # pylint: disable=protected-access
                           LABEL, 64, one_pass=True)
  linear = model.build_model(tft_output, LABEL, 0.1)
  l2 = 0.05
  rmse = model.fit_least_squares(linear, model.design_blocks(tft_output, LABEL),
                                 dataset, l2)

  design = tf.keras.Model(linear.inputs, linear.get_layer('linear').input)
  x, y = [], []
  for batch, labels in dataset:
    x.append(design(batch).numpy())
    y.append(labels.numpy())
  x = np.hstack([np.concatenate(x), np.ones((300, 1))]).astype(np.float64)
  y = np.concatenate(y).astype(np.float64)
  penalty = np.diag([l2 * len(y)] * (x.shape[1] - 1) + [0.0])
  expected = np.linalg.solve(x.T @ x + penalty, x.T @ y)
  kernel, bias = linear.get_layer('linear').get_weights()
  np.testing.assert_allclose(np.append(kernel[:, 0], bias), expected,
                             rtol=1e-4, atol=1e-4)
  assert rmse == pytest.approx(np.sqrt(np.mean((x @ expected - y) ** 2)),
                               rel=1e-4)


def test_the_sums_of_products_are_those_of_the_design_matrix():
  """X's sums of products, without X: with two id blocks, ids of several
  columns in a row, repeated ids, ids out of range (counted nowhere), and
  numbers as a scalar and as a row of several (as preprocessing's
  z-scores)."""
  blocks = [model.Block('a_ids', tf.io.FixedLenFeature([2], tf.int64), 3),
            model.Block('b', tf.io.FixedLenFeature([], tf.float32), None),
            model.Block('c_ids', tf.io.FixedLenFeature([], tf.int64), 2),
            model.Block('d', tf.io.FixedLenFeature([2], tf.float32), None)]
  rng = np.random.default_rng(3)
  rows = 50
  batch = {'a_ids': rng.integers(-1, 4, (rows, 2)),
           'b': rng.normal(size=rows).astype(np.float32),
           'c_ids': rng.integers(0, 3, rows),
           'd': rng.normal(size=(rows, 2)).astype(np.float32)}
  labels = rng.normal(size=rows).astype(np.float32)

  def counts(ids, buckets):
    return np.stack([np.bincount(row[(row >= 0) & (row < buckets)],
                                 minlength=buckets) for row in ids])

  x = np.hstack([counts(batch['a_ids'], 3), batch['b'][:, None],
                 counts(batch['c_ids'][:, None], 2), batch['d'],
                 np.ones((rows, 1))]).astype(np.float64)
  y = labels.astype(np.float64)
  gram, order = model._gram_fn(blocks)  # pylint: disable=protected-access
  dense_gram, counts_dense, counts_gram = (
      t.numpy() for t in gram(
          {k: tf.constant(v) for k, v in batch.items()}, tf.constant(labels)))
  # [numbers b, d0, d1, intercept, label] and [counts a0-a2, c0-c1]
  dense = np.stack([x[:, 3], x[:, 6], x[:, 7], x[:, 8], y], axis=1)
  count_columns = x[:, [0, 1, 2, 4, 5]]
  np.testing.assert_allclose(dense_gram, dense.T @ dense)
  np.testing.assert_allclose(counts_dense, count_columns.T @ dense)
  np.testing.assert_array_equal(counts_gram, count_columns.T @ count_columns)
  # Assembled, then picked in `order`: XᵀX in the model's column order.
  everything = np.block([[dense_gram, counts_dense.T],
                         [counts_dense, counts_gram]])
  np.testing.assert_allclose(everything[np.ix_(order, order)], x.T @ x)


def test_rows_without_a_label_are_dropped_from_training():
  batch = {'x': tf.constant([1.0, 2.0, 3.0])}
  labels = tf.constant([1.0, float('nan'), 3.0])
  kept_features, kept_labels = model._drop_unlabelled(batch, labels)  # pylint: disable=protected-access
  np.testing.assert_array_equal(kept_features['x'].numpy(), [1.0, 3.0])
  np.testing.assert_array_equal(kept_labels.numpy(), [1.0, 3.0])
