"""tf.Transform preprocessing: impute, z-score numbers, vocabularize strings.

The feature set is whatever the data has (minus the label and the excluded
columns), so the same code serves any CSV: numeric columns are z-scored
(clipped to +-5), with missing values imputed by the mean, and become one
row of z-scores (`numeric_xf`, one per column); string columns, and numeric
columns configured as categorical, share one vocabulary of `column=value`
tokens with OOV buckets, and become one row of vocabulary ids
(`categorical_ids`, one id per column). Both rows are in model_input_names
order. One output and one analysis for all the numeric columns rather than
one per column: a z-score analyzer per column costs Transform about a
second per column, and the Trainer's tf.Transform layer walks the graph once
per output (0.14 s per output at 300 columns). One vocabulary rather than
one per column: each tf.Transform vocabulary is its own Beam sub-pipeline,
a second or more of fixed cost. A missing value is '', which tf.Transform
keeps out of vocabularies, so it lands in an OOV bucket like an unseen
value. The label passes through as float32, NaN where it is missing or not
finite, for the Trainer to drop.
"""

from typing import Any, Dict, Mapping

import tensorflow as tf
import tensorflow_transform as tft

from tfx_e2e.components import features


# tf.Transform traces preprocessing_fn as a TF1 graph rather than as a
# tf.function: 2-2.5 s less per Transform run on the bundled data, and the
# exported layer loads faster wherever the model is loaded (the Evaluator,
# serving). The transformed values are the same.
FORCE_TF_COMPAT_V1 = True

NUMBERS = features.NUMBERS


def _dense(tensor, dtype, missing):
  """A [batch] tensor of `dtype` from a [batch, 1] dense or a [batch, <=1]
  sparse input (a CSV column with empty cells), `missing` where absent."""
  if isinstance(tensor, tf.sparse.SparseTensor):
    values = tf.SparseTensor(tensor.indices, _cast(tensor.values, dtype),
                             [tensor.dense_shape[0], 1])
    return tf.squeeze(tf.sparse.to_dense(values, default_value=missing), axis=1)
  return tf.reshape(_cast(tensor, dtype), [-1])


def _cast(tensor, dtype):
  if dtype == tf.string and tensor.dtype != tf.string:
    return tf.strings.as_string(tensor)
  return tf.cast(tensor, dtype)


def _numeric(tensor) -> tf.Tensor:
  """float32 values, NaN where missing or not finite."""
  dense = _dense(tensor, tf.float32, float('nan'))
  return tf.where(tf.math.is_finite(dense), dense, float('nan'))


# Z-scores are clipped to this: a linear model extrapolates, and one absurd
# value (the taxi data has a 1,710-mile trip; z up to 93) would otherwise
# make an absurd prediction. On the taxi eval split, clipping took the RMSE
# from 8.2 to 4.2.
Z_SCORE_LIMIT = 5.0


def _z_scores_imputed(values: tf.Tensor) -> tf.Tensor:
  """Clipped z-scores of each column of [batch, n] `values` over its present
  values; a missing value gets 0, the column's mean.

  The same as imputing the mean and then z-scoring, but one analysis pass
  instead of two: the statistics do not depend on an earlier analyzer. One
  elementwise analyzer for all the columns: tf.Transform's per-column mean
  and (population) variance leave NaNs out of each column's count and sums,
  so each column gets the statistics of its present values only.
  """
  z_scores = tf.clip_by_value(tft.scale_to_z_score(values, elementwise=True),
                              -Z_SCORE_LIMIT, Z_SCORE_LIMIT)
  return tf.where(tf.math.is_finite(values), z_scores, tf.zeros_like(values))


def _token(name: str, values: tf.Tensor) -> tf.Tensor:
  """`name=value`, or '' where the value is missing."""
  return tf.where(tf.equal(values, ''), values,
                  tf.strings.join([f'{name}=', values]))


def preprocessing_fn(inputs: Mapping[str, Any],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
  """The Transform component's entry point: raw features to model inputs.

  Args:
    inputs: the raw features, by column name, as the schema parses them
      (every column variable-length: it may be missing in any row).
    custom_config: from `features.make_custom_config`: the label, excluded
      and categorical features, and the out-of-vocabulary buckets.

  Returns:
    `NUMBERS`: a [batch, n] float tensor of the numeric columns' clipped
    z-scores (0 where missing); `CATEGORIES`: a [batch, m] int tensor of the
    string and categorical columns' vocabulary ids; each only if there is
    such a column; and the label, by its name, as a dense float.
  """
  categorical = set(custom_config[features.CATEGORICAL])
  outputs, tokens, numbers = {}, [], []
  for name in features.model_input_names(inputs, custom_config):
    tensor = inputs[name]
    if tensor.dtype == tf.string or name in categorical:
      tokens.append(_token(name, _dense(tensor, tf.string, '')))
    else:
      numbers.append(_numeric(tensor))
  if numbers:
    outputs[NUMBERS] = _z_scores_imputed(tf.stack(numbers, axis=1))
  if tokens:
    tokens = tf.stack(tokens, axis=1)
    outputs[features.CATEGORIES] = tft.compute_and_apply_vocabulary(
        tokens,
        num_oov_buckets=custom_config[features.OOV_BUCKETS],
        vocab_filename=features.CATEGORIES,
        # Weights of one give the same counts, and so the same vocabulary,
        # but tf.Transform then counts each batch's tokens in TensorFlow:
        # unweighted, it hands every token to Beam as an element to count,
        # a third of Transform's time at 1.5M rows.
        weights=tf.ones_like(tokens, tf.float32))
  label = custom_config[features.LABEL]
  outputs[label] = _numeric(inputs[label])
  return outputs
