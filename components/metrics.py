"""The Evaluator's module code: regression metrics, natively in TFMA, from
one combiner. (The Evaluator's faster extractors, which are executor code,
not metric definitions, are in `executors/extractors.py`.)

TFMA runs one combiner per metric and slice, each converting every example
to (label, prediction, weight) again: for the seven metrics here, most of the
Evaluator's time at scale (0.6 ms an example at 1.5M rows). These metrics
are derived from one set of sums (count, weights, labels, predictions,
squared and absolute errors, and the labels' squared deviations from their
mean), which TFMA computes once per example and slice, since identical
computations are shared. They keep TFMA's metric names where TFMA has one.
TFMA has no RMSE of its own: `class_name='RootMeanSquaredError'` would
resolve to the Keras metric, run through TFMA's TF metric wrapper.

`r_squared` (1 - MSE / the eval labels' variance) is the scale-free one: 0
is the error of predicting the labels' mean, whatever the labels' units,
so a blessing gate on it fits any dataset.
"""

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util

_SUMS = '_regression_sums'
# Positions in the sums. _SPREAD is the weighted sum of the labels' squared
# deviations from their weighted mean (_LABEL / _WEIGHT): kept about the
# mean, not as a sum of squared labels, since the variance derived from the
# latter cancels catastrophically for labels far from zero (a timestamp,
# a price in cents). It is merged as in Chan et al. (1979), not added.
_COUNT, _WEIGHT, _LABEL, _PREDICTION, _SQUARED, _ABSOLUTE, _SPREAD = range(7)
_SIZE = 7


def _merged_spread(weight_a: float, mean_a: float, weight_b: float,
                   mean_b: float) -> float:
  """What merging two groups adds to the sum of their spreads."""
  total = weight_a + weight_b
  if total <= 0 or not weight_a or not weight_b:
    return 0.0
  delta = mean_b - mean_a
  return delta * delta * weight_a * weight_b / total


def _labels_and_predictions(element: metric_types.StandardMetricInputs,
                            model_name: str
                            ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
  """A model's labels and predictions as two numeric arrays of one value a
  row, else None.

  The common case, taken directly: TFMA's general conversion
  (to_label_prediction_example_weight) costs 40-70 us a value, and runs for
  every example, slice and model. An element holds one example, or the rows
  of a batch that share a slice (`custom_extractors`). Anything else (several
  outputs, labels keyed by name, non-numeric values) goes the general way,
  which also pairs the i-th label with the i-th prediction.
  """
  label, prediction = element.label, element.prediction
  if model_name:  # several models: values keyed by model name
    if type(prediction) is not dict:
      return None
    prediction = prediction.get(model_name)
    if type(label) is dict:
      label = label.get(model_name)
  if (type(label) is np.ndarray and type(prediction) is np.ndarray and
      label.size == prediction.size and label.size and
      label.dtype.kind in 'fiu' and prediction.dtype.kind in 'fiu'):
    return label, prediction
  return None


def _add(sums: List[float], label: float, prediction: float,
         weight: float) -> None:
  error = label - prediction
  total = sums[_WEIGHT]
  if total > 0 and weight > 0:  # _merged_spread, inline: per example
    deviation = label - sums[_LABEL] / total
    sums[_SPREAD] += deviation * deviation * total * weight / (total + weight)
  sums[_COUNT] += 1.0
  sums[_WEIGHT] += weight
  sums[_LABEL] += weight * label
  sums[_PREDICTION] += weight * prediction
  sums[_SQUARED] += weight * error * error
  sums[_ABSOLUTE] += weight * abs(error)


def _add_rows(sums: List[float], labels: np.ndarray,
              predictions: np.ndarray) -> None:
  """Adds rows of weight 1: one value each, in the same order."""
  if labels.size == 1:  # one example: plain floats are 5x faster
    _add(sums, float(labels.flat[0]), float(predictions.flat[0]), 1.0)
    return
  labels = labels.ravel().astype(np.float64)
  errors = labels - predictions.ravel()
  mean = float(labels.mean())
  deviations = labels - mean
  if sums[_WEIGHT]:
    sums[_SPREAD] += _merged_spread(sums[_WEIGHT], sums[_LABEL] / sums[_WEIGHT],
                                    labels.size, mean)
  sums[_SPREAD] += float(np.dot(deviations, deviations))
  sums[_COUNT] += labels.size
  sums[_WEIGHT] += labels.size
  sums[_LABEL] += float(labels.sum())
  sums[_PREDICTION] += float(predictions.sum(dtype=np.float64))
  sums[_SQUARED] += float(np.dot(errors, errors))
  sums[_ABSOLUTE] += float(np.abs(errors).sum())


class _Sums(beam.CombineFn):
  """Per slice: example count, then weighted sums of weights, labels,
  predictions, squared errors, absolute errors and the labels' squared
  deviations from their mean."""

  def __init__(self, key: metric_types.MetricKey, eval_config: Any):
    self._key = key
    self._eval_config = eval_config

  # The sums are a list of floats: updating six numpy elements from a tuple
  # costs 3x as much, for every example, slice and model.
  def create_accumulator(self) -> List[float]:
    return [0.0] * _SIZE

  def add_input(self, sums: List[float],
                element: metric_types.StandardMetricInputs) -> List[float]:
    pair = (None if self._key.example_weighted or self._key.output_name
            else _labels_and_predictions(element, self._key.model_name))
    if pair is not None:
      _add_rows(sums, *pair)
      return sums
    for label, prediction, weight in (
        metric_util.to_label_prediction_example_weight(
            element, eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=self._key.example_weighted)):
      _add(sums, float(label.sum()), float(prediction.sum()),
           float(weight.sum()))
    return sums

  def merge_accumulators(self, accumulators) -> List[float]:
    merged = [0.0] * _SIZE
    for sums in accumulators:
      spread = (_merged_spread(
          merged[_WEIGHT], merged[_LABEL] / merged[_WEIGHT], sums[_WEIGHT],
          sums[_LABEL] / sums[_WEIGHT])
                if merged[_WEIGHT] and sums[_WEIGHT] else 0.0)
      merged = [a + b for a, b in zip(merged, sums)]
      merged[_SPREAD] += spread
    return merged

  def extract_output(self, sums: List[float]) -> Dict[Any, Any]:
    return {self._key: sums}


def _mean(position: int) -> Callable[[List[float]], float]:
  return lambda sums: (sums[position] / sums[_WEIGHT] if sums[_WEIGHT]
                       else float('nan'))


# Labels that do not vary leave a spread of rounding error in their running
# mean: up to ~(float64 epsilon * mean)^2 per unit of weight, ~5e-32 * mean^2.
# A spread below this share of weight * mean^2 is such noise, not variance:
# 1e-24 still counts labels that differ by one part in 10^12.
_NO_SPREAD = 1e-24


def _r_squared(sums: List[float]) -> float:
  """1 - MSE / the labels' variance (both weighted); NaN where the labels
  do not vary, as no model is then better or worse than their mean."""
  weight = sums[_WEIGHT]
  if not weight:
    return float('nan')
  mean = sums[_LABEL] / weight
  if sums[_SPREAD] <= _NO_SPREAD * weight * mean * mean:
    return float('nan')
  return 1.0 - sums[_SQUARED] / sums[_SPREAD]


def _metric(class_name: str, default_name: str,
            value: Callable[[List[float]], float]):
  """A TFMA metric class whose value is `value(sums)`."""

  def computations(name: str, eval_config=None,
                   model_name: Optional[str] = None,
                   output_name: Optional[str] = None,
                   example_weighted: bool = False, sub_key=None,
                   **_: Any) -> metric_types.MetricComputations:
    sums_key = metric_types.MetricKey(
        name=_SUMS, model_name=model_name, output_name=output_name,
        example_weighted=example_weighted)
    key = metric_types.MetricKey(
        name=name, model_name=model_name, output_name=output_name,
        sub_key=sub_key, example_weighted=example_weighted)
    return [
        metric_types.MetricComputation(
            keys=[sums_key], preprocessors=None,
            combiner=_Sums(sums_key, eval_config)),
        metric_types.DerivedMetricComputation(
            keys=[key], result=lambda metrics: {key: value(metrics[sums_key])}),
    ]

  # code_sha256: the digest of this module's code, which the pipeline puts
  # in every metric's config so that the Evaluator's cache key changes with
  # the code; not a setting of the metric.
  def __init__(self, name: str = default_name, code_sha256: str = ''):
    del code_sha256
    metric_types.Metric.__init__(
        self, metric_util.merge_per_key_computations(computations), name=name)

  return type(class_name, (metric_types.Metric,), {
      '__init__': __init__, '__module__': __name__,
      '__doc__': f'{default_name}, from the shared regression sums.'})


# The metric names are TFMA's own; the class names are not, as TFMA resolves
# the names it has registered to its own classes, whatever the module.
# As TFMA's example_count: the examples, or the sum of their weights when
# weighted (unweighted, each weighs 1).
RegressionExampleCount = _metric('RegressionExampleCount', 'example_count',
                                 lambda sums: float(sums[_WEIGHT]))
RegressionMeanSquaredError = _metric(
    'RegressionMeanSquaredError', 'mean_squared_error', _mean(_SQUARED))
RegressionRootMeanSquaredError = _metric(
    'RegressionRootMeanSquaredError', 'root_mean_squared_error',
    lambda sums: math.sqrt(_mean(_SQUARED)(sums)))
RegressionMeanAbsoluteError = _metric(
    'RegressionMeanAbsoluteError', 'mean_absolute_error', _mean(_ABSOLUTE))
RegressionMeanLabel = _metric('RegressionMeanLabel', 'mean_label',
                              _mean(_LABEL))
RegressionMeanPrediction = _metric('RegressionMeanPrediction',
                                   'mean_prediction', _mean(_PREDICTION))
# The coefficient of determination: > 0 where the model beats predicting the
# eval labels' mean. Not TFMA's name (TFMA has no R² metric).
RegressionRSquared = _metric('RegressionRSquared', 'r_squared', _r_squared)
ALL = [RegressionExampleCount, RegressionMeanSquaredError,
       RegressionRootMeanSquaredError, RegressionMeanAbsoluteError,
       RegressionMeanLabel, RegressionMeanPrediction, RegressionRSquared]
