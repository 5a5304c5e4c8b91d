"""The regression metrics through TFMA's combiner API, in a Beam pipeline,
against numpy; and the sums they share are computed once."""

import apache_beam as beam
from apache_beam.testing import util as beam_testing
import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.extractors import unbatch_extractor
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util

from components import metrics

LABELS = np.array([3.0, 5.0, 10.0, 0.5])
PREDICTIONS = np.array([2.0, 7.0, 10.5, 0.0])
EXPECTED = {
    'example_count': 4.0,
    'mean_squared_error': np.mean((LABELS - PREDICTIONS) ** 2),
    'root_mean_squared_error': np.sqrt(np.mean((LABELS - PREDICTIONS) ** 2)),
    'mean_absolute_error': np.mean(np.abs(LABELS - PREDICTIONS)),
    'mean_label': LABELS.mean(),
    'mean_prediction': PREDICTIONS.mean(),
}


def test_metrics_match_numpy_and_share_one_combiner():
  computations = [c for cls in metrics.ALL for c in cls().computations()]
  combiners = {c for c in computations if not hasattr(c, 'result')}
  assert len(combiners) == 1  # TFMA computes identical computations once
  (sums,) = combiners
  derived = [c for c in computations if hasattr(c, 'result')]

  def check(combined):
    values = {}
    for computation in derived:
      values.update({key.name: value for key, value in
                     computation.result(combined).items()})
    assert values == pytest.approx(EXPECTED)

  with beam.Pipeline() as pipeline:
    _ = (pipeline
         | beam.Create([{'labels': np.array([label]),
                         'predictions': np.array([prediction]),
                         'example_weights': np.array([1.0])}
                        for label, prediction in zip(LABELS, PREDICTIONS)])
         | beam.Map(metric_util.to_standard_metric_inputs)
         | beam.CombineGlobally(sums.combiner)
         | beam.Map(check))


def _sums(model_name='', example_weighted=False):
  key = metric_types.MetricKey(name='sums', model_name=model_name,
                               example_weighted=example_weighted)
  return metrics._Sums(key, eval_config=None)  # pylint: disable=protected-access


def _expected_sums(labels, predictions, weights):
  errors = labels - predictions
  return [len(labels), weights.sum(), (weights * labels).sum(),
          (weights * predictions).sum(), (weights * errors ** 2).sum(),
          (weights * np.abs(errors)).sum()]


@pytest.mark.parametrize('dtype', [np.float32, np.int64])
def test_each_model_of_a_comparison_sums_its_own_predictions(dtype):
  # TFMA keys labels and predictions by model name when it evaluates a
  # candidate next to a baseline.
  baseline_predictions = PREDICTIONS + 1.0
  elements = [metric_types.StandardMetricInputs(
      labels={'candidate': np.array([label], dtype),
              'baseline': np.array([label], dtype)},
      predictions={'candidate': np.array([prediction], dtype),
                   'baseline': np.array([baseline], dtype)})
              for label, prediction, baseline in zip(
                  LABELS, PREDICTIONS, baseline_predictions)]
  ones = np.ones(len(LABELS))
  for model, predictions in (('candidate', PREDICTIONS),
                             ('baseline', baseline_predictions)):
    sums = _sums(model)
    accumulator = sums.create_accumulator()
    for element in elements:
      accumulator = sums.add_input(accumulator, element)
    assert accumulator == pytest.approx(_expected_sums(
        LABELS.astype(dtype), predictions.astype(dtype), ones))


def test_example_weights_and_several_values_take_tfmas_conversion():
  weights = np.array([1.0, 2.0, 0.5, 3.0])
  sums = _sums(example_weighted=True)
  accumulator = sums.create_accumulator()
  for label, prediction, weight in zip(LABELS, PREDICTIONS, weights):
    accumulator = sums.add_input(
        accumulator, metric_util.to_standard_metric_inputs({
            'labels': np.array([label]), 'predictions': np.array([prediction]),
            'example_weights': np.array([weight])}))
  assert accumulator == pytest.approx(_expected_sums(LABELS, PREDICTIONS,
                                                     weights))
  # Two values an example: a pair each, as TFMA's conversion gives them.
  sums = _sums()
  accumulator = sums.add_input(sums.create_accumulator(),
                               metric_util.to_standard_metric_inputs({
                                   'labels': np.array([1.0, 2.0]),
                                   'predictions': np.array([0.5, 1.0])}))
  assert accumulator == pytest.approx([2.0, 2.0, 3.0, 1.5, 1.25, 1.5])


def test_only_the_slicing_features_reach_the_per_example_stages():
  eval_config = tfma.EvalConfig(slicing_specs=[
      tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=['hour']),
      tfma.SlicingSpec(feature_values={'payment': 'Cash'})])
  extractors = metrics.custom_extractors(None, eval_config)
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
      e.stage_name for e in metrics.custom_extractors(None, sql)]
