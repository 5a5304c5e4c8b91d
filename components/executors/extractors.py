"""The Evaluator's extractors: TFMA's defaults, rearranged for speed.

`custom_extractors` is what TFX's Evaluator calls (its `module_path` names
this module). It keeps TFMA's stages and adds or replaces a few by their stage
names; the metrics it can split by slice are those of `components/metrics.py`.
"""

import collections
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

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
from tensorflow_model_analysis.slicer import slicer_lib as slicer
from tensorflow_model_analysis.utils import util


from tfx_e2e.components import metrics


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
          all(metric.module == metrics.__name__ for metric in spec.metrics)
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
