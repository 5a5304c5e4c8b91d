"""The Evaluator's module code: regression metrics, natively in TFMA, from
one combiner; and its extractors (`custom_extractors`, below).

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

import collections
import math
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import apache_beam as beam
from google.protobuf.message import DecodeError
import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.extractors import features_extractor
from tensorflow_model_analysis.extractors import predictions_extractor
from tensorflow_model_analysis.extractors import slice_key_extractor
from tensorflow_model_analysis.extractors import unbatch_extractor
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util
from tensorflow_model_analysis.slicer import slicer_lib as slicer
from tensorflow_model_analysis.utils import util

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


def _r_squared(sums: List[float]) -> float:
  """1 - MSE / the labels' variance (both weighted); NaN where the labels
  do not vary, as no model is then better or worse than their mean."""
  if not sums[_WEIGHT] or sums[_SPREAD] <= 0:
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
# The coefficient of determination: > 0 where the model beats predicting the
# eval labels' mean. Not TFMA's name (TFMA has no R² metric).
RegressionRSquared = _metric('RegressionRSquared', 'r_squared', _r_squared)
ALL = [RegressionExampleCount, RegressionMeanSquaredError,
       RegressionRootMeanSquaredError, RegressionMeanAbsoluteError,
       RegressionMeanLabel, RegressionMeanPrediction, RegressionRSquared]


def _slicing_specs(eval_config: tfma.EvalConfig) -> List[tfma.SlicingSpec]:
  specs = list(eval_config.slicing_specs)
  for cross in eval_config.cross_slicing_specs:
    specs += [cross.baseline_spec, *cross.slicing_specs]
  return specs


def _slicing_features(eval_config: tfma.EvalConfig) -> Optional[set]:
  """The features that slicing reads, or None if that is not known."""
  specs = _slicing_specs(eval_config)
  if any(spec.slice_keys_sql for spec in specs):
    return None
  return {key for spec in specs
          for key in [*spec.feature_keys, *spec.feature_values]}


def _examples_inputs(eval_shared_model, eval_config: tfma.EvalConfig
                     ) -> set:
  """The models' input names for serialized examples: the signature's only
  input, if it is a string (none if a model's signature is not like that).
  """
  models = (eval_shared_model if isinstance(eval_shared_model, list)
            else [eval_shared_model] if eval_shared_model else [])
  signatures = {spec.name: spec.signature_name or 'serving_default'
                for spec in eval_config.model_specs}
  names = set()
  for model in models:
    saved_model = saved_model_pb2.SavedModel()
    try:
      with tf.io.gfile.GFile(
          os.path.join(model.model_path, 'saved_model.pb'), 'rb') as f:
        saved_model.ParseFromString(f.read())
    except (tf.errors.OpError, DecodeError):
      return set()
    signature = saved_model.meta_graphs[0].signature_def.get(
        signatures.get(model.model_name, 'serving_default'))
    if (signature is None or len(signature.inputs) != 1 or
        next(iter(signature.inputs.values())).dtype != types_pb2.DT_STRING):
      return set()
    names.add(next(iter(signature.inputs)))
  return names


def _add_examples_input(extracts: tfma.Extracts,
                        names: set) -> tfma.Extracts:
  features = extracts.get(constants.FEATURES_KEY)
  if not isinstance(features, dict) or names & set(features):
    return extracts
  examples = extracts[constants.INPUT_KEY]
  return dict(extracts, **{constants.FEATURES_KEY: dict(
      features, **{name: examples for name in names})})


def _model_spec_features(eval_config: tfma.EvalConfig) -> set:
  """The features that the model specs name: labels, weights and
  predictions."""
  names = set()
  for spec in eval_config.model_specs:
    names.update(name for name in (spec.label_key, spec.example_weight_key,
                                   spec.prediction_key) if name)
    for keyed in (spec.label_keys, spec.example_weight_keys,
                  spec.prediction_keys):
      names.update(keyed.values())
  return names


def _select_columns(extracts: tfma.Extracts, keep: set) -> tfma.Extracts:
  """The batch's columns in `keep`, and its serialized examples."""
  batch = extracts.get(constants.ARROW_RECORD_BATCH_KEY)
  if not isinstance(batch, pa.RecordBatch):
    return extracts
  keep = keep | {constants.ARROW_INPUT_COLUMN}
  fields = [field for field in batch.schema if field.name in keep]
  return dict(extracts, **{constants.ARROW_RECORD_BATCH_KEY:
                               pa.RecordBatch.from_arrays(
                                   [batch.column(field.name)
                                    for field in fields],
                                   schema=pa.schema(fields))})


def _select_features(extracts: tfma.Extracts, keep: Optional[set],
                     drop: set) -> tfma.Extracts:
  """Only the features in `keep` (all if None), less those in `drop`."""
  features = extracts.get(constants.FEATURES_KEY)
  if not isinstance(features, dict):
    return extracts
  return dict(extracts, **{constants.FEATURES_KEY: {
      name: value for name, value in features.items()
      if (keep is None or name in keep) and name not in drop}})


def _sums_by_slice(eval_config: tfma.EvalConfig) -> bool:
  """Whether the rows of a batch may reach the metrics as one element per
  slice: only this module's metrics, no example weights, nothing that
  counts, groups or resamples examples (slice sizes, queries, confidence
  intervals)."""
  options = eval_config.options
  return (
      options.HasField('include_default_metrics') and
      not options.include_default_metrics.value and
      not options.HasField('min_slice_size') and
      not options.compute_confidence_intervals.value and
      not any(spec.example_weight_key or spec.example_weight_keys
              for spec in eval_config.model_specs) and
      all(not spec.query_key and not spec.HasField('binarize') and
          not spec.HasField('aggregate') and
          all(metric.module == __name__ for metric in spec.metrics)
          for spec in eval_config.metrics_specs))


_ROW_KEYS = (constants.LABELS_KEY, constants.PREDICTIONS_KEY,
             constants.EXAMPLE_WEIGHTS_KEY)
# The output of batches that go TFMA's per-example way.
_PER_EXAMPLE = 'per_example'


def _leaves(value: Any) -> Iterator[Any]:
  if isinstance(value, dict):
    for item in value.values():
      yield from _leaves(item)
  elif value is not None:
    yield value


def _row_count(extracts: tfma.Extracts) -> Optional[int]:
  """The batch's rows, if its labels, predictions and weights are arrays
  with a row per example and slicing reads raw features only (TFMA slices
  on transformed features first, if any); else None."""
  if (not isinstance(extracts.get(constants.FEATURES_KEY), dict) or
      any(_leaves(extracts.get(constants.TRANSFORMED_FEATURES_KEY))) or
      constants.SLICE_KEY_TYPES_KEY in extracts):
    return None
  rows = {leaf.shape[0] if type(leaf) is np.ndarray and leaf.ndim else None
          for key in _ROW_KEYS for leaf in _leaves(extracts.get(key))}
  return rows.pop() if len(rows) == 1 and None not in rows else None


def _take(value: Any, rows: np.ndarray) -> Any:
  if isinstance(value, dict):
    return {key: _take(item, rows) for key, item in value.items()}
  return value[rows]


def _value_codes(features: Dict[str, Any], rows: int) -> Optional[np.ndarray]:
  """[rows, columns] codes of the slicing features' values, equal where the
  values are; None unless each feature is a [rows, k] array of values that
  compare (TFMA's form for one value a row)."""
  codes = []
  for value in features.values():
    if type(value) is not np.ndarray or value.ndim != 2 or len(value) != rows:  # pylint: disable=unidiomatic-typecheck
      return None
    for column in value.T:
      try:
        codes.append(np.unique(column, return_inverse=True)[1].reshape(-1))
      except TypeError:  # values of types that do not compare
        return None
  return np.stack(codes, axis=1) if codes else np.zeros((rows, 0), int)


def _groups(features: Dict[str, Any], rows: int
            ) -> Tuple[List[np.ndarray], List[Dict[str, Any]]]:
  """The rows grouped by their slicing features' values (each group's rows
  ascending, groups in order of their first row), and each group's values
  as TFMA splits them into rows."""
  codes = _value_codes(features, rows)
  if codes is not None:
    group = (np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)
             if codes.size else np.zeros(rows, int))
  else:  # row by row
    examples = util.split_extracts({constants.FEATURES_KEY: features})
    if len(examples) != rows:
      raise ValueError(f'a batch of {rows} labels has {len(examples)} rows '
                       'of features')
    keys = {}
    group = np.array([keys.setdefault(tuple(
        (name, tuple(np.asarray(value).ravel().tolist()))
        for name, value in example[constants.FEATURES_KEY].items()), len(keys))
                      for example in examples])
  order = np.argsort(group, kind='stable')
  groups = sorted(np.split(order, np.flatnonzero(np.diff(group[order])) + 1),
                  key=lambda group_rows: group_rows[0])
  firsts = np.array([group_rows[0] for group_rows in groups])
  values = ([examples[first] for first in firsts] if codes is None else
            util.split_extracts({constants.FEATURES_KEY: _take(features,
                                                               firsts)}))
  return groups, [example[constants.FEATURES_KEY] for example in values]


def _rows_by_slice(extracts: tfma.Extracts,
                   slice_spec: List[slicer.SingleSliceSpec]
                   ) -> Iterator[tfma.Extracts]:
  """A batch -> an extract per slice, holding the rows of that slice; a
  batch of another form (ragged labels, say) as is, to `_PER_EXAMPLE`.

  The slices of a row are TFMA's, generated once per distinct combination
  of the slicing features' values in the batch (found with numpy where the
  features are arrays).
  """
  rows = _row_count(extracts)
  if not rows:
    yield beam.pvalue.TaggedOutput(_PER_EXAMPLE, extracts)
    return
  features = extracts[constants.FEATURES_KEY]
  groups, values = (_groups(features, rows) if features else
                    ([np.arange(rows)], [{}]))
  rows_of = collections.defaultdict(list)
  for group_rows, group_values in zip(groups, values):
    for slice_key in set(slicer.get_slices_for_features_dicts(
        [], group_values, slice_spec)):
      rows_of[slice_key].append(group_rows)
  for slice_key, parts in rows_of.items():
    index = np.concatenate(parts)
    yield {constants.SLICE_KEY_TYPES_KEY:
               slicer.slice_keys_to_numpy_array([slice_key]),
           **{key: _take(extracts[key], index) for key in _ROW_KEYS
              if extracts.get(key) is not None}}


@beam.ptransform_fn
def _SliceRows(extracts, slice_spec: List[slicer.SingleSliceSpec],  # pylint: disable=invalid-name
               per_example: List[tfma.extractors.Extractor]):
  """Batches -> an extract per batch and slice; a batch of another form
  goes through `per_example`, TFMA's own stages."""
  split = extracts | 'RowsBySlice' >> beam.FlatMap(
      _rows_by_slice, slice_spec).with_outputs(_PER_EXAMPLE, main='by_slice')
  other = split[_PER_EXAMPLE]
  for stage in per_example:
    other = other | stage.stage_name >> stage.ptransform
  return (split.by_slice, other) | 'Merge' >> beam.Flatten()


def custom_extractors(eval_shared_model, eval_config: tfma.EvalConfig,
                      tensor_adapter_config=None
                      ) -> List[tfma.extractors.Extractor]:
  """TFMA's default extractors, with three changes for speed:

  - the model gets the serialized examples under its input's name. TFMA
    otherwise calls the signature with them as a positional argument, which
    TensorFlow first tries to bind by structure and fails, formatting the
    whole batch into its error message (9% of the Evaluator's time);
  - where the model takes the serialized examples, only the columns that
    labels, weights and slicing read become features (the taxi data has 18
    columns; converting them all was 14% of the Evaluator's time), and
    those that slicing does not read are dropped before the batches are
    split;
  - with this module's metrics only (`_sums_by_slice`), a batch is split by
    slice rather than by example: one element per slice and batch, instead
    of one per example and slice, reaches the metrics (`_rows_by_slice`).
    The sums are the same.
  """
  extractors = tfma.default_extractors(
      eval_shared_model=eval_shared_model, eval_config=eval_config,
      tensor_adapter_config=tensor_adapter_config)
  stages = [e.stage_name for e in extractors]
  inputs = _examples_inputs(eval_shared_model, eval_config)
  predict = predictions_extractor.PREDICTIONS_EXTRACTOR_STAGE_NAME
  if inputs and predict in stages:
    at = stages.index(predict)
    extractors.insert(at, tfma.extractors.Extractor(
        stage_name='ExamplesAsModelInput',
        ptransform=beam.Map(_add_examples_input, names=inputs)))
    stages.insert(at, 'ExamplesAsModelInput')
  names = _slicing_features(eval_config)
  extract = features_extractor._FEATURES_EXTRACTOR_STAGE_NAME  # pylint: disable=protected-access
  if inputs and names is not None and extract in stages:
    at = stages.index(extract)
    extractors.insert(at, tfma.extractors.Extractor(
        stage_name='KeepNeededColumns',
        ptransform=beam.Map(_select_columns,
                            keep=names | _model_spec_features(eval_config))))
    stages.insert(at, 'KeepNeededColumns')
  unbatch = unbatch_extractor.UNBATCH_EXTRACTOR_STAGE_NAME
  if unbatch not in stages:
    return extractors
  at = stages.index(unbatch)
  if names is not None or inputs:
    extractors.insert(at, tfma.extractors.Extractor(
        stage_name='KeepSlicingFeatures',
        ptransform=beam.Map(_select_features, keep=names,
                            drop=inputs - (names or set()))))
    at += 1
  slice_keys = slice_key_extractor.SLICE_KEY_EXTRACTOR_STAGE_NAME
  if (names is not None and _sums_by_slice(eval_config) and
      [e.stage_name for e in extractors[at:]] == [unbatch, slice_keys]):
    spec = [slicer.SingleSliceSpec(spec=s) for s in _slicing_specs(
        eval_config)] or [slicer.SingleSliceSpec()]
    # The metrics evaluator runs after the stage of this name.
    extractors[at:] = [tfma.extractors.Extractor(
        stage_name=slice_keys,
        ptransform=_SliceRows(spec, extractors[at:]))]  # pylint: disable=no-value-for-parameter
  return extractors
