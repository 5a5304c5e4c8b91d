"""tf.Transform preprocessing: impute, z-score numbers, vocabularize strings.

The feature set is whatever the data has (minus the label and the excluded
columns), so the same code serves any CSV: numeric columns are imputed with
their mean and z-scored; string columns, and numeric columns configured as
categorical, are mapped through a vocabulary with OOV buckets (a missing value
is '', which tf.Transform keeps out of vocabularies, so it lands in an OOV
bucket like an unseen value). The label passes through as float32, NaN where
it is missing or not finite, for the Trainer to drop.
"""

from typing import Any, Dict, Mapping

import tensorflow as tf
import tensorflow_transform as tft

from components import features


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


def _z_score_imputed(values: tf.Tensor) -> tf.Tensor:
  """Z-scores over the present values; a missing value gets 0, the mean.

  The same as imputing the mean and then z-scoring, but one analysis pass
  instead of two: the statistics do not depend on an earlier analyzer.
  """
  present = tf.math.is_finite(values)
  return tf.tensor_scatter_nd_update(
      tf.zeros_like(values), tf.where(present),
      tft.scale_to_z_score(tf.boolean_mask(values, present)))


def preprocessing_fn(inputs: Mapping[str, Any],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
  """tf.Transform entry point (Transform component's `preprocessing_fn`)."""
  categorical = set(custom_config[features.CATEGORICAL])
  outputs = {}
  for name in features.model_input_names(inputs, custom_config):
    tensor = inputs[name]
    if tensor.dtype == tf.string or name in categorical:
      outputs[features.transformed_name(name)] = (
          tft.compute_and_apply_vocabulary(
              _dense(tensor, tf.string, ''),
              num_oov_buckets=custom_config[features.OOV_BUCKETS],
              vocab_filename=name))
    else:
      outputs[features.transformed_name(name)] = _z_score_imputed(
          _numeric(tensor))
  label = custom_config[features.LABEL]
  outputs[label] = _numeric(inputs[label])
  return outputs
