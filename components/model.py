"""Trainer module: a linear regression y = XW + b over the transformed features.

X is the concatenation of the z-scored numeric features and the one-hot
encoded vocabulary ids, so W holds one weight per numeric feature and one per
category value (of any string or categorical column: they share a
vocabulary). By default W and b are the exact ridge regression solution,
from XᵀX and Xᵀy accumulated in one streaming pass over the training split
(`least_squares`); `sgd` fits them with mini-batch Adam steps instead, for
feature spaces too large for a d x d matrix. The exported SavedModel contains
the tf.Transform graph, so both serving signatures take raw data:

- `serving_default`: serialized tf.Example under `inputs` -> `outputs`
  (TFMA, Beam RunInference, TF Serving's regress API);
- `serving_raw`: one tensor per raw feature -> `outputs` (TF Serving's REST
  `instances`/`inputs` JSON). An empty string or a NaN means "missing" and
  is imputed as in training.
"""

import logging
import os
from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tensorflow.core.protobuf import saved_model_pb2
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx_bsl.tfxio import dataset_util

from tfx_e2e.components import features

_log = logging.getLogger(__name__)

PREDICTION_KEY = 'outputs'
EXAMPLES_KEY = 'inputs'
RAW_SIGNATURE = 'serving_raw'
# Rows per step of the least-squares pass: large, as only sums are kept.
LEAST_SQUARES_BATCH = 4096
# Records in SGD's shuffle buffer (tfx-bsl's default, as used before).
SHUFFLE_BUFFER = 10_000


@tf.autograph.experimental.do_not_convert  # no control flow to convert
def _drop_unlabelled(batch_features, labels):
  """Drops rows whose label is NaN (missing or not finite in the raw data)."""
  keep = tf.math.is_finite(labels)
  return ({k: tf.boolean_mask(v, keep) for k, v in batch_features.items()},
          tf.boolean_mask(labels, keep))


def _dataset(file_pattern: List[str], tft_output: tft.TFTransformOutput,
             label: str, batch_size: int,
             one_pass: bool = False) -> tf.data.Dataset:
  """Batches of (transformed features, label); endless and shuffled for
  SGD, or each row once and in order (`one_pass`).

  The files hold raw examples: Transform does not write transformed ones
  (a Beam pass over the data and a second copy of it on disk), because the
  transform graph applied here, batch by batch, costs less.

  Read with tf.data directly, not through the Trainer's data accessor: its
  tfx-bsl dataset passes every record through a parallel interleave, at
  ~20 us a record here (20 s for 1M rows, against 3 s this way).
  """
  patterns = tf.constant(file_pattern)
  records = tf.data.TFRecordDataset(
      tf.data.Dataset.list_files(patterns, shuffle=not one_pass),
      compression_type=dataset_util.detect_compression_type(patterns))
  if not one_pass:
    records = records.shuffle(SHUFFLE_BUFFER).repeat()
  raw_spec = tft_output.raw_feature_spec()
  transform = tft_output.transform_features_layer()

  # Not converted by autograph (tf.data's default): converting the
  # tf.Transform layer's code takes seconds, and it has no control flow.
  @tf.autograph.experimental.do_not_convert
  def transformed(serialized):
    batch_features = dict(transform(tf.io.parse_example(serialized,
                                                         raw_spec)))
    return batch_features, batch_features.pop(label)

  return (records.batch(batch_size, drop_remainder=not one_pass)
          .map(transformed, num_parallel_calls=tf.data.AUTOTUNE)
          .map(_drop_unlabelled).prefetch(tf.data.AUTOTUNE))


def label_moments(dataset: tf.data.Dataset, max_batches: int = 100):
  """Mean and standard deviation of the label over the first batches."""
  total = total_sq = count = 0.0
  for _, labels in dataset.take(max_batches):
    labels = tf.cast(labels, tf.float64)
    total += float(tf.reduce_sum(labels))
    total_sq += float(tf.reduce_sum(labels * labels))
    count += int(tf.size(labels))
  mean = total / max(count, 1)
  variance = max(total_sq / max(count, 1) - mean * mean, 0.0)
  return mean, (variance ** 0.5) or 1.0


class Block(NamedTuple):
  """A model input, and the columns of the design matrix X it makes."""
  name: str
  spec: Any  # its tf.io feature spec
  # Vocabulary ids: one column per vocabulary entry, counting the row's ids
  # (one per string or categorical column). None: numbers, one column per
  # value (a row of z-scores, one per numeric column, or a scalar).
  buckets: Optional[int]

  @property
  def width(self) -> int:
    """The number of X's columns this input makes."""
    if self.buckets is not None:
      return self.buckets
    return int(np.prod(self.spec.shape, dtype=np.int64))


def design_blocks(tft_output: tft.TFTransformOutput, label: str
                  ) -> List[Block]:
  """Every transformed feature but the label, in the order of X's columns."""
  return [Block(name, spec, tft_output.num_buckets_for_transformed_feature(
      name) if spec.dtype.is_integer else None)
          for name, spec in sorted(
              tft_output.transformed_feature_spec().items())
          if name != label]


def build_model(tft_output: tft.TFTransformOutput, label: str,
                learning_rate: float, label_mean: float = 0.0,
                label_std: float = 1.0) -> keras.Model:
  """The linear model over every transformed feature except the label.

  The linear layer works in label standard deviations and the output is
  rescaled to label units (still y = XW + b), so the optimizer's step size
  suits any label scale: grams, dollars or millions.
  """
  inputs, columns = {}, []
  for block in design_blocks(tft_output, label):
    name, spec, buckets = block
    inputs[name] = keras.Input(shape=tuple(spec.shape), name=name,
                               dtype=spec.dtype)
    if buckets is not None:  # ids in the shared vocabulary, one a column
      # Counts: one weight per vocabulary entry, so X holds a 1 for each
      # column's value (and counts columns that share an OOV bucket). As
      # one-hot rows summed: the graph is a few ops, where Keras's
      # CategoryEncoding adds ~20 (bincount and its range checks) to every
      # serving call. Ids are always in range: the vocabulary has OOV buckets.
      one_hot = tf.one_hot(inputs[name], buckets)
      columns.append(tf.reduce_sum(one_hot, axis=1) if spec.shape else one_hot)
    else:
      columns.append(keras.layers.Reshape((block.width,))(inputs[name]))
  x = keras.layers.Concatenate()(columns) if len(columns) > 1 else columns[0]
  linear = keras.layers.Dense(1, name='linear')(x)
  prediction = keras.layers.Rescaling(scale=label_std, offset=label_mean,
                                      name='to_label_units')(linear)
  model = keras.Model(inputs=inputs, outputs=prediction)
  model.compile(
      optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
      loss='mean_squared_error',
      metrics=[keras.metrics.RootMeanSquaredError(name='rmse')])
  return model


def _gram_fn(blocks: List[Block]):
  """A function of a batch -> the sums of products of X's columns (with the
  intercept's and the label's), without X; and where X's columns, then the
  intercept's, are in those sums assembled as one matrix over [numbers,
  intercept, label, counts].

  Multiplying X by itself would cost rows x d^2 (d ~230 here, nearly all of
  it one-hot counts); most of those products are zeros. Instead, for D the
  numbers, the intercept and the label (float64) and C the counts:
  DᵀD is a small product; CᵀD sums each row of D into the entries of the
  row's ids; CᵀC counts the pairs of ids in each row. An id out of its
  vocabulary's range counts nowhere, as in the model's one-hot encoding.
  """
  number_blocks = [b for b in blocks if b.buckets is None]
  starts = np.cumsum([0] + [b.width for b in number_blocks])
  numbers = int(starts[-1])  # D's columns of numbers
  start_of = {b.name: int(start) for b, start in zip(number_blocks, starts)}
  id_blocks, width, order = [], 0, []
  for block in blocks:
    if block.buckets is None:
      start = start_of[block.name]
    else:
      id_blocks.append((block.name, block.buckets, width))
      start = numbers + 2 + width
      width += block.buckets
    order.extend(range(start, start + block.width))
  order.append(numbers)  # the intercept
  nowhere = width  # one more column, dropped

  @tf.function(reduce_retracing=True, autograph=False)
  def gram(batch, labels):
    labels = tf.cast(labels, tf.float64)
    rows = tf.shape(labels)[0]
    dense = tf.concat(
        [tf.cast(tf.reshape(batch[b.name], [rows, b.width]), tf.float64)
         for b in number_blocks] +
        [tf.ones_like(labels)[:, None], labels[:, None]], axis=1)
    dense_gram = tf.matmul(dense, dense, transpose_a=True)
    if not id_blocks:
      # No counts (all-numeric data): empty blocks, but shaped to fit next
      # to DᵀD when fit_least_squares assembles the one matrix.
      return (dense_gram, tf.zeros([0, numbers + 2], tf.float64),
              tf.zeros([0, 0], tf.float64))
    ids = tf.concat([
        tf.where((raw >= 0) & (raw < buckets), raw + offset, nowhere)
        for name, buckets, offset in id_blocks
        for raw in [tf.reshape(tf.cast(batch[name], tf.int32), [rows, -1])]
    ], axis=1)
    per_row = tf.shape(ids)[1]
    counts_dense = tf.math.unsorted_segment_sum(
        tf.repeat(dense, per_row, axis=0), tf.reshape(ids, [-1]), width + 1)
    pairs = tf.reshape(ids[:, :, None] * (width + 1) + ids[:, None, :], [-1])
    counts_gram = tf.reshape(tf.math.bincount(
        pairs, minlength=(width + 1) ** 2, maxlength=(width + 1) ** 2,
        dtype=tf.float64), [width + 1, width + 1])
    return dense_gram, counts_dense[:width], counts_gram[:width, :width]

  return gram, order


def fit_least_squares(model: keras.Model, blocks: List[Block],
                      dataset: tf.data.Dataset, l2: float) -> float:
  """Sets the model's linear layer to the ridge regression solution.

  Minimises mean((y - XW - b)^2) + l2 * |W|^2 over one pass of `dataset`,
  keeping only XᵀX and Xᵀy (d x d, d = the width of X), never the rows. The
  penalty makes the problem well-posed although each one-hot group sums to
  the intercept's column. `model` must output its linear layer in label
  units (build_model's defaults), from `blocks` (design_blocks). Returns
  the training RMSE.
  """
  gram, order = _gram_fn(blocks)
  sums = None
  for batch, labels in dataset:
    batch_sums = [t.numpy() for t in gram(batch, labels)]
    sums = batch_sums if sums is None else [
        total + more for total, more in zip(sums, batch_sums)]
  dense_gram, counts_dense, counts_gram = sums
  # One matrix over [numbers, intercept, label, counts], then X's columns
  # (and the intercept's) picked from it in the model's order.
  intercept, label = order[-1], order[-1] + 1
  everything = np.block([[dense_gram, counts_dense.T],
                         [counts_dense, counts_gram]])
  xtx = everything[np.ix_(order, order)]
  xty = everything[order, label][:, None]
  yty, rows = everything[label, label], everything[intercept, intercept]
  if not rows:
    raise ValueError('no training rows with a label')
  penalty = np.full(len(xtx), l2 * rows)
  penalty[-1] = 0.0  # the intercept is not penalised
  weights = np.linalg.lstsq(xtx + np.diag(penalty), xty, rcond=None)[0]
  model.get_layer('linear').set_weights(
      [weights[:-1].astype(np.float32), weights[-1].astype(np.float32)])
  squared_error = yty - 2 * float(weights.T @ xty) + float(
      weights.T @ xtx @ weights)
  return (max(squared_error, 0.0) / rows) ** 0.5


def _raw_input_spec(tft_output: tft.TFTransformOutput,
                    custom_config: Dict[str, Any]) -> Dict[str, Any]:
  raw_spec = tft_output.raw_feature_spec()
  return {name: raw_spec[name]
          for name in features.model_input_names(raw_spec, custom_config)}


def _as_parsed(raw: Dict[str, tf.Tensor], raw_spec) -> Dict[str, Any]:
  """[batch] tensors shaped as tf.io.parse_example would for `raw_spec`.

  Columns with missing values are VarLenFeatures (sparse). '' and NaN mark a
  missing value there; integers have no such mark, so every row has one.
  Serving runs these ops on every call: the row indices of integer columns
  are built once for all of them, and any columns of different lengths
  still fail in the transform graph, as they did when parsed one by one.
  """
  def sparse(row_ids, values, value):  # row_ids: [n, 1]
    return tf.SparseTensor(
        indices=tf.concat([row_ids, tf.zeros_like(row_ids)], axis=1),
        values=values,
        dense_shape=tf.stack([tf.shape(value, out_type=tf.int64)[0],
                              tf.constant(1, tf.int64)]))

  # Its indices and dense_shape serve every integer column; its values are
  # not used.
  first = next(iter(raw.values()))
  every_row = sparse(tf.expand_dims(tf.range(tf.shape(
      first, out_type=tf.int64)[0]), 1), first, first)
  parsed = {}
  for name, spec in raw_spec.items():
    value = raw[name]
    if isinstance(spec, tf.io.FixedLenFeature):
      parsed[name] = tf.reshape(value, [-1] + list(spec.shape))
    elif value.dtype == tf.string or value.dtype.is_floating:
      present = (tf.not_equal(value, '') if value.dtype == tf.string
                 else tf.math.is_finite(value))
      row_ids = tf.where(present)
      # gather_nd, not boolean_mask: the same values in one op instead of ~10
      parsed[name] = sparse(row_ids, tf.gather_nd(value, row_ids), value)
    else:
      parsed[name] = tf.SparseTensor(every_row.indices, value,
                                     every_row.dense_shape)
  return parsed


def _serving_signatures(model: keras.Model, tft_output: tft.TFTransformOutput,
                        custom_config: Dict[str, Any]) -> Dict[str, Any]:
  """The two serving signatures, both applying the transform graph first."""
  model.tft_layer = tft_output.transform_features_layer()  # tracked for export
  raw_spec = _raw_input_spec(tft_output, custom_config)

  def predict(raw_features):
    transformed = model.tft_layer(raw_features)
    transformed.pop(custom_config[features.LABEL], None)
    return {PREDICTION_KEY: tf.squeeze(model(transformed), axis=1)}

  # No autograph here or below: the code has no tensor-dependent Python
  # control flow, and converting the Keras and tf.Transform layers they call
  # costs seconds per export.
  @tf.function(input_signature=[
      tf.TensorSpec(shape=[None], dtype=tf.string, name=EXAMPLES_KEY)],
               autograph=False)
  def serve_examples(inputs):
    return predict(tf.io.parse_example(inputs, raw_spec))

  @tf.function(input_signature=[{
      name: tf.TensorSpec(shape=[None], dtype=spec.dtype, name=name)
      for name, spec in raw_spec.items()}], autograph=False)
  def serve_raw(raw):
    return predict(_as_parsed(raw, raw_spec))

  return {
      'serving_default': serve_examples.get_concrete_function(),
      RAW_SIGNATURE: serve_raw.get_concrete_function(),
  }


def run_fn(fn_args: FnArgs) -> None:
  """The TFX Trainer's entry point: trains the linear model and exports it.

  Args:
    fn_args: the Trainer's arguments. Used: `train_files` and `eval_files`
      (raw tf.Examples), `transform_output` (the tf.Transform graph),
      `serving_model_dir` (where the SavedModel goes), `train_steps` and
      `eval_steps` (SGD only), and `custom_config`: the label, excluded and
      categorical features (`features.make_custom_config`), `solver`
      ('least_squares' or 'sgd'), `l2`, `batch_size` and `learning_rate`.

  Returns:
    None. Writes a SavedModel to `fn_args.serving_model_dir` whose
    `serving_default` signature takes serialized tf.Examples (`inputs`) and
    returns the prediction (`outputs`), with TF Serving's regress method
    name; `_serving_signatures` adds the others.
  """
  custom_config = fn_args.custom_config
  label = custom_config[features.LABEL]
  tft_output = tft.TFTransformOutput(fn_args.transform_output)
  if custom_config['solver'] == 'least_squares':
    model = build_model(tft_output, label, custom_config['learning_rate'])
    rmse = fit_least_squares(
        model, design_blocks(tft_output, label),
        _dataset(fn_args.train_files, tft_output, label, LEAST_SQUARES_BATCH,
                 one_pass=True),
        custom_config['l2'])
    _log.info('Least squares fitted: training RMSE %.4g', rmse)
  else:
    model = _fit_sgd(fn_args, tft_output, label)
  # Without Keras's per-layer call traces (seconds to trace): every consumer
  # (TFMA, TF Serving, the prediction jobs) calls the signatures.
  model.save(fn_args.serving_model_dir, save_format='tf', save_traces=False,
             signatures=_serving_signatures(model, tft_output, custom_config))
  mark_as_regression_signature(fn_args.serving_model_dir, 'serving_default')


def _fit_sgd(fn_args: FnArgs,
             tft_output: tft.TFTransformOutput, label: str) -> keras.Model:
  custom_config = fn_args.custom_config
  batch_size = custom_config['batch_size']
  train = _dataset(fn_args.train_files, tft_output, label, batch_size)
  evaluation = _dataset(fn_args.eval_files, tft_output, label, batch_size)
  mean, std = label_moments(train)
  _log.info('Label %s: mean %.4g, standard deviation %.4g', label, mean, std)
  model = build_model(tft_output, label, custom_config['learning_rate'],
                      label_mean=mean, label_std=std)
  history = model.fit(
      train, steps_per_epoch=fn_args.train_steps, epochs=1,
      validation_data=evaluation, validation_steps=fn_args.eval_steps,
      verbose=0)
  _log.info('Training finished: %s',
               {k: v[-1] for k, v in history.history.items()})
  return model


def mark_as_regression_signature(saved_model_dir: str, signature: str) -> None:
  """Gives `signature` TF Serving's regress method name.

  tf.saved_model.save writes every signature as a predict signature, but
  TF Serving's Regress API (gRPC and REST `:regress`) accepts only
  signatures whose method is `tensorflow/serving/regress`; its Predict API
  accepts those too. The signature's tensors already follow the regression
  convention: one serialized tf.Example input `inputs`, one output `outputs`.
  """
  path = os.path.join(saved_model_dir, 'saved_model.pb')
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(path, 'rb') as f:
    saved_model.ParseFromString(f.read())
  for meta_graph in saved_model.meta_graphs:
    meta_graph.signature_def[signature].method_name = (
        tf.saved_model.REGRESS_METHOD_NAME)
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(saved_model.SerializeToString())
