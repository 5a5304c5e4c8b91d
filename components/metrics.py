"""The Evaluator's module code: regression metrics, natively in TFMA, from
one combiner; and its extractors (`custom_extractors`, below).

TFMA runs one combiner per metric and slice, each converting every example
to (label, prediction, weight) again: for the six metrics here, most of the
Evaluator's time at scale (0.6 ms an example at 1.5M rows). These metrics
are derived from one set of sums (count, weights, labels, predictions,
squared and absolute errors), which TFMA computes once per example and
slice, since identical computations are shared. They keep TFMA's metric
names. TFMA has no RMSE of its own: `class_name='RootMeanSquaredError'`
would resolve to the Keras metric, run through TFMA's TF metric wrapper.
"""

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.extractors import unbatch_extractor
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util

_SUMS = '_regression_sums'
# Positions in the sums.
_COUNT, _WEIGHT, _LABEL, _PREDICTION, _SQUARED, _ABSOLUTE = range(6)


def _label_and_prediction(element: metric_types.StandardMetricInputs,
                          model_name: str) -> Optional[Tuple[float, float]]:
  """A model's label and prediction when each is one number, else None.

  The common case, taken directly: TFMA's general conversion
  (to_label_prediction_example_weight) costs 40-70 us, and runs for every
  example, slice and model. Anything else (several outputs or values,
  labels keyed by name, non-numeric values) goes the general way.
  """
  label, prediction = element.label, element.prediction
  if model_name:  # several models: values keyed by model name
    if type(prediction) is not dict:
      return None
    prediction = prediction.get(model_name)
    if type(label) is dict:
      label = label.get(model_name)
  if (type(label) is np.ndarray and type(prediction) is np.ndarray and
      label.size == 1 and prediction.size == 1 and
      label.dtype.kind in 'fiu' and prediction.dtype.kind in 'fiu'):
    return float(label.flat[0]), float(prediction.flat[0])
  return None


def _add(sums: List[float], label: float, prediction: float,
         weight: float) -> None:
  error = label - prediction
  sums[_COUNT] += 1.0
  sums[_WEIGHT] += weight
  sums[_LABEL] += weight * label
  sums[_PREDICTION] += weight * prediction
  sums[_SQUARED] += weight * error * error
  sums[_ABSOLUTE] += weight * abs(error)


class _Sums(beam.CombineFn):
  """Per slice: example count, then weighted sums of weights, labels,
  predictions, squared errors and absolute errors."""

  def __init__(self, key: metric_types.MetricKey, eval_config: Any):
    self._key = key
    self._eval_config = eval_config

  # The sums are a list of floats: updating six numpy elements from a tuple
  # costs 3x as much, for every example, slice and model.
  def create_accumulator(self) -> List[float]:
    return [0.0] * 6

  def add_input(self, sums: List[float],
                element: metric_types.StandardMetricInputs) -> List[float]:
    pair = (None if self._key.example_weighted or self._key.output_name
            else _label_and_prediction(element, self._key.model_name))
    if pair is not None:
      _add(sums, *pair, 1.0)
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
    merged = [0.0] * 6
    for sums in accumulators:
      merged = [a + b for a, b in zip(merged, sums)]
    return merged

  def extract_output(self, sums: List[float]) -> Dict[Any, Any]:
    return {self._key: sums}


def _mean(position: int) -> Callable[[List[float]], float]:
  return lambda sums: (sums[position] / sums[_WEIGHT] if sums[_WEIGHT]
                       else float('nan'))


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
RegressionExampleCount = _metric('RegressionExampleCount', 'example_count',
                                 lambda sums: float(sums[_COUNT]))
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
ALL = [RegressionExampleCount, RegressionMeanSquaredError,
       RegressionRootMeanSquaredError, RegressionMeanAbsoluteError,
       RegressionMeanLabel, RegressionMeanPrediction]


def _slicing_features(eval_config: tfma.EvalConfig) -> Optional[set]:
  """The features that slicing reads, or None if that is not known."""
  specs = list(eval_config.slicing_specs)
  for cross in eval_config.cross_slicing_specs:
    specs += [cross.baseline_spec, *cross.slicing_specs]
  if any(spec.slice_keys_sql for spec in specs):
    return None
  return {key for spec in specs
          for key in [*spec.feature_keys, *spec.feature_values]}


def _keep_features(extracts: tfma.Extracts, names: set) -> tfma.Extracts:
  features = extracts.get(constants.FEATURES_KEY)
  if not isinstance(features, dict):
    return extracts
  return dict(extracts, **{constants.FEATURES_KEY: {
      name: value for name, value in features.items() if name in names}})


def custom_extractors(eval_shared_model, eval_config: tfma.EvalConfig,
                      tensor_adapter_config=None
                      ) -> List[tfma.extractors.Extractor]:
  """TFMA's default extractors, with the features that slicing does not read
  dropped before the batches of examples are split into single examples.

  Labels, weights and predictions are extracted from the batches before
  that, and the metrics here read only those. Splitting every feature of
  every example was a third of the Evaluator's time at scale; the taxi
  data has 18 columns, and slicing reads two.
  """
  extractors = tfma.default_extractors(
      eval_shared_model=eval_shared_model, eval_config=eval_config,
      tensor_adapter_config=tensor_adapter_config)
  names = _slicing_features(eval_config)
  stages = [e.stage_name for e in extractors]
  unbatch = unbatch_extractor.UNBATCH_EXTRACTOR_STAGE_NAME
  if names is None or unbatch not in stages:
    return extractors
  at = stages.index(unbatch)
  keep = tfma.extractors.Extractor(
      stage_name='KeepSlicingFeatures',
      ptransform=beam.Map(_keep_features, names=names))
  return extractors[:at] + [keep] + extractors[at:]
