"""The Evaluator's extractors: TFMA's stages rearranged for speed, with the
same extracts and metrics as TFMA's own."""

import apache_beam as beam
from apache_beam.testing import util as beam_testing
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.extractors import slice_key_extractor
from tensorflow_model_analysis.extractors import unbatch_extractor
from tensorflow_model_analysis.utils import util

from tfx_e2e.components import metrics
from tfx_e2e.components.executors import extractors as extractors_lib


def test_only_the_slicing_features_reach_the_per_example_stages():
  eval_config = tfma.EvalConfig(slicing_specs=[
      tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=['hour']),
      tfma.SlicingSpec(feature_values={'payment': 'Cash'})])
  extractors = extractors_lib.custom_extractors(None, eval_config)
  stages = [e.stage_name for e in extractors]
  keep = stages.index('KeepSlicingFeatures')
  assert stages[keep + 1] == unbatch_extractor.UNBATCH_EXTRACTOR_STAGE_NAME
  batch = {'features': {'hour': np.array([1, 2]), 'payment': np.array(
      [b'Cash', b'Card']), 'miles': np.array([1.0, 2.0])},
           'labels': np.array([3.0, 4.0])}
  with beam.Pipeline() as pipeline:
    kept = (pipeline | beam.Create([batch])
            | extractors[keep].ptransform
            | beam.Map(lambda e: (sorted(e['features']), list(e['labels']))))
    beam_testing.assert_that(kept, beam_testing.equal_to(
        [(['hour', 'payment'], [3.0, 4.0])]))
  # Slices defined in SQL may read any feature: nothing is dropped.
  sql = tfma.EvalConfig(slicing_specs=[tfma.SlicingSpec(
      slice_keys_sql='SELECT STRUCT(hour) FROM example.hour')])
  assert 'KeepSlicingFeatures' not in [
      e.stage_name for e in extractors_lib.custom_extractors(None, sql)]


def _our_metrics_config(**options) -> tfma.EvalConfig:
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(label_key='fare', **options)],
      slicing_specs=[tfma.SlicingSpec(),
                     tfma.SlicingSpec(feature_keys=['hour']),
                     tfma.SlicingSpec(feature_keys=['payment', 'hour'])],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name=m.__name__, module=metrics.__name__)
          for m in metrics.ALL])],
      options=tfma.Options(include_default_metrics={'value': False}))


def _labels_per_slice(extracts, label):
  """(slice key, sorted labels of the rows that reach it)."""
  return (extracts
          | f'{label}Labels' >> beam.FlatMap(lambda e: [
              (key, util.to_tensor_value(e['labels']).ravel().tolist())
              for key in e[constants.SLICE_KEY_TYPES_KEY]])
          | f'{label}Sorted' >> beam.CombinePerKey(
              lambda lists: sorted(sum(lists, []))))


@pytest.mark.parametrize('feature_form, with_numpy', [
    (lambda column: column, True),  # [rows, k] arrays
    (lambda column: column[:, 0], False),  # anything else: row by row
])
def test_a_batch_reaches_the_metrics_once_per_slice_with_tfmas_slices(
    feature_form, with_numpy):
  eval_config = _our_metrics_config()
  stages = extractors_lib.custom_extractors(None, eval_config)
  assert stages[-1].stage_name == (
      slice_key_extractor.SLICE_KEY_EXTRACTOR_STAGE_NAME)
  tfmas = tfma.default_extractors(eval_config=eval_config)[-2:]
  assert [s.stage_name for s in tfmas] == [
      unbatch_extractor.UNBATCH_EXTRACTOR_STAGE_NAME,
      slice_key_extractor.SLICE_KEY_EXTRACTOR_STAGE_NAME]
  batch = {
      'features': {'hour': feature_form(np.array([[1], [2], [1], [1]])),
                   'payment': feature_form(np.array(
                       [[b'Cash'], [b'Card'], [b'Cash'], [b'Card']],
                       dtype=object))},
      'labels': np.array([[3.0], [5.0], [10.0], [0.5]]),
      'predictions': np.array([2.0, 7.0, 10.5, 0.0])}
  # Ragged labels (a row without one) take TFMA's stages, one example each.
  ragged = dict(batch, labels=tfma.types.VarLenTensorValue(
      values=np.array([3.0, 5.0, 10.0]), indices=np.array(
          [[0, 0], [1, 0], [2, 0]]), dense_shape=np.array([4, 1])))
  assert extractors_lib._row_count(batch) == 4  # pylint: disable=protected-access
  assert extractors_lib._row_count(ragged) is None  # pylint: disable=protected-access
  assert (extractors_lib._value_codes(batch['features'], 4) is not None) == (  # pylint: disable=protected-access
      with_numpy)

  with beam.Pipeline() as pipeline:
    batches = pipeline | beam.Create([batch])
    ours = batches | 'Ours' >> stages[-1].ptransform
    theirs = batches
    for stage in tfmas:
      theirs = theirs | f'TFMA{stage.stage_name}' >> stage.ptransform
    # Overall, hour 1 and 2, and (payment, hour) Cash-1, Card-2, Card-1:
    # one element each.
    beam_testing.assert_that(
        ours | beam.combiners.Count.Globally(), beam_testing.equal_to([6]),
        label='OnePerSlice')
    same = ({'ours': _labels_per_slice(ours, 'Ours'),
             'tfma': _labels_per_slice(theirs, 'TFMA')}
            | beam.CoGroupByKey()
            | beam.MapTuple(lambda key, labels: (
                key, labels['ours'] == labels['tfma'])))
    beam_testing.assert_that(same | beam.Values(),
                             beam_testing.equal_to([True] * 6), label='Same')
    overall = (_labels_per_slice(
        pipeline | 'RaggedBatch' >> beam.Create([ragged])
        | 'OursRagged' >> stages[-1].ptransform, 'Ragged')
               | 'Overall' >> beam.Filter(lambda kv: kv[0] == ()))
    beam_testing.assert_that(overall, beam_testing.equal_to(
        [((), [3.0, 5.0, 10.0])]), label='Ragged')


@pytest.mark.parametrize('options', [
    {'example_weight_key': 'tips'},
])
def test_weights_or_tfmas_own_metrics_keep_one_element_an_example(options):
  unbatch = unbatch_extractor.UNBATCH_EXTRACTOR_STAGE_NAME
  weighted = _our_metrics_config(**options)
  assert unbatch in [e.stage_name for e in extractors_lib.custom_extractors(
      None, weighted)]
  tfmas_metric = _our_metrics_config()
  tfmas_metric.metrics_specs[0].metrics.add(class_name='ExampleCount')
  assert unbatch in [e.stage_name for e in extractors_lib.custom_extractors(
      None, tfmas_metric)]


def _examples_model(path, eval_config):
  """A model whose signature takes serialized examples, as TFMA's."""
  module = tf.Module()
  module.predict = tf.function(
      lambda examples: {'outputs': tf.strings.length(examples)},
      input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  tf.saved_model.save(module, str(path), signatures={
      'serving_default': module.predict})
  return tfma.default_eval_shared_model(str(path), eval_config=eval_config)


def test_the_model_gets_the_examples_by_its_input_name(tmp_path):
  eval_config = _our_metrics_config()
  model = _examples_model(tmp_path, eval_config)
  extractors = extractors_lib.custom_extractors(model, eval_config)
  stages = [e.stage_name for e in extractors]
  assert stages.index('ExamplesAsModelInput') + 1 == stages.index(
      'ExtractPredictions')
  batch = {'input': np.array([b'ab', b'cde'], dtype=object),
           'features': {'hour': np.array([[1], [2]])}}
  with beam.Pipeline() as pipeline:
    seen = (pipeline | beam.Create([batch])
            | extractors[stages.index('ExamplesAsModelInput')].ptransform
            | beam.Map(lambda e: sorted(e['features'])))
    beam_testing.assert_that(seen, beam_testing.equal_to(
        [['examples', 'hour']]))


def test_only_the_columns_that_labels_and_slicing_read_become_features(
    tmp_path):
  eval_config = _our_metrics_config(example_weight_key='tips')
  extractors = extractors_lib.custom_extractors(
      _examples_model(tmp_path, eval_config), eval_config)
  stages = [e.stage_name for e in extractors]
  keep = stages.index('KeepNeededColumns')
  assert stages[keep + 1] == 'ExtractFeatures'
  batch = pa.RecordBatch.from_pydict({
      'fare': [[3.0], [5.0]], 'tips': [[1.0], [0.0]], 'hour': [[1], [2]],
      'payment': [[b'Cash'], [b'Card']], 'miles': [[1.5], [2.5]],
      constants.ARROW_INPUT_COLUMN: [[b'a'], [b'b']]})
  with beam.Pipeline() as pipeline:
    seen = (pipeline | beam.Create([{constants.ARROW_RECORD_BATCH_KEY: batch}])
            | extractors[keep].ptransform
            | extractors[keep + 1].ptransform
            | beam.Map(lambda e: (sorted(e['features']), list(e['input']))))
    beam_testing.assert_that(seen, beam_testing.equal_to([(
        ['fare', 'hour', 'payment', 'tips'], [b'a', b'b'])]))
  # A model that takes features, or slices in SQL, may read any column.
  assert 'KeepNeededColumns' not in [
      e.stage_name for e in extractors_lib.custom_extractors(None, eval_config)]
  sql = _our_metrics_config()
  sql.slicing_specs.add(slice_keys_sql='SELECT STRUCT(hour) FROM example.hour')
  assert 'KeepNeededColumns' not in [
      e.stage_name for e in extractors_lib.custom_extractors(
          _examples_model(tmp_path / 'sql', sql), sql)]
