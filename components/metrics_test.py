"""The regression metrics through TFMA's combiner API, in a Beam pipeline,
against numpy; and the sums they share are computed once."""

import apache_beam as beam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util

from tfx_e2e.components import metrics

LABELS = np.array([3.0, 5.0, 10.0, 0.5])
PREDICTIONS = np.array([2.0, 7.0, 10.5, 0.0])
EXPECTED = {
    'example_count': 4.0,
    'mean_squared_error': np.mean((LABELS - PREDICTIONS) ** 2),
    'root_mean_squared_error': np.sqrt(np.mean((LABELS - PREDICTIONS) ** 2)),
    'mean_absolute_error': np.mean(np.abs(LABELS - PREDICTIONS)),
    'mean_label': LABELS.mean(),
    'mean_prediction': PREDICTIONS.mean(),
    'r_squared': 1 - (np.mean((LABELS - PREDICTIONS) ** 2) / np.var(LABELS)),
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
  mean = np.average(labels, weights=weights)
  return [len(labels), weights.sum(), (weights * labels).sum(),
          (weights * predictions).sum(), (weights * errors ** 2).sum(),
          (weights * np.abs(errors)).sum(),
          (weights * (labels - mean) ** 2).sum()]


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


def test_example_weights_take_tfmas_conversion_and_rows_add_up():
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
  # Two rows (or values) in one element: a pair each, as TFMA's
  # conversion gives them.
  sums = _sums()
  accumulator = sums.add_input(sums.create_accumulator(),
                               metric_util.to_standard_metric_inputs({
                                   'labels': np.array([1.0, 2.0]),
                                   'predictions': np.array([0.5, 1.0])}))
  assert accumulator == pytest.approx([2.0, 2.0, 3.0, 1.5, 1.25, 1.5, 0.5])


def _weighted_r_squared(labels, predictions, weights):
  mse = np.average((labels - predictions) ** 2, weights=weights)
  mean = np.average(labels, weights=weights)
  return 1 - mse / np.average((labels - mean) ** 2, weights=weights)


def _r_squared(accumulator):
  """The metric's value, derived from `accumulator` as TFMA derives it."""
  sums, derived = metrics.RegressionRSquared().computations(
      example_weighted=True)
  (value,) = derived.result({sums.keys[0]: accumulator}).values()
  return value


@pytest.mark.parametrize('offset', [0.0, 1e8])
def test_r_squared_with_unequal_weights_matches_numpy(offset):
  rng = np.random.default_rng(7)
  labels = offset + rng.normal(size=200)
  predictions = labels + rng.normal(scale=0.5, size=200)
  weights = rng.uniform(0.1, 5.0, size=200)
  expected = _weighted_r_squared(labels - offset, predictions - offset,
                                 weights)
  # Example by example (TFMA's conversion, as for weighted examples), in
  # parts merged as the runner would; and rows of weight 1 in batches.
  merged = _weighted_accumulator(labels, predictions, weights, parts=3)
  assert merged == pytest.approx(_expected_sums(labels, predictions, weights))
  # Far from zero, a sum of squared labels would have lost every digit of
  # the variance (1e16 against 1).
  assert _r_squared(merged) == pytest.approx(expected, rel=1e-6)
  unweighted = _sums()
  batches = [unweighted.add_input(
      unweighted.create_accumulator(), metric_types.StandardMetricInputs(
          labels=labels[rows], predictions=predictions[rows]))
             for rows in np.array_split(np.arange(200), 4)]
  assert _r_squared(unweighted.merge_accumulators(batches)) == (
      pytest.approx(_weighted_r_squared(labels - offset, predictions - offset,
                                        np.ones(200)), rel=1e-6))
  # No model beats or misses the mean of labels that do not vary.
  constant = _weighted_accumulator(np.array([3.0]), np.array([2.0]),
                                  np.array([2.0]))
  assert np.isnan(_r_squared(constant))


# --- derived metrics with unequal weights, against numpy --------------------

def _numpy_metrics(labels, predictions, weights):
  """Each weighted metric as numpy's weighted average defines it."""
  errors = labels - predictions
  mse = np.average(errors ** 2, weights=weights)
  mean = np.average(labels, weights=weights)
  variance = np.average((labels - mean) ** 2, weights=weights)
  return {
      'example_count': np.sum(weights),  # as TFMA's, when weighted
      'mean_squared_error': mse,
      'root_mean_squared_error': np.sqrt(mse),
      'mean_absolute_error': np.average(np.abs(errors), weights=weights),
      'mean_label': mean,
      'mean_prediction': np.average(predictions, weights=weights),
      'r_squared': 1 - mse / variance if variance > 0 else float('nan'),
  }


def _weighted_accumulator(labels, predictions, weights, parts=1):
  """The shared sums of weighted examples, added one by one through TFMA's
  conversion in `parts` accumulators, merged as a runner merges them."""
  sums = _sums(example_weighted=True)
  accumulators = []
  for rows in np.array_split(np.arange(len(labels)), parts):
    accumulator = sums.create_accumulator()
    for row in rows:
      accumulator = sums.add_input(
          accumulator, metric_util.to_standard_metric_inputs({
              'labels': np.array([labels[row]]),
              'predictions': np.array([predictions[row]]),
              'example_weights': np.array([weights[row]])}))
    accumulators.append(accumulator)
  return sums.merge_accumulators(accumulators)


def _derived_values(accumulator):
  """Every metric of metrics.ALL, derived from `accumulator` by its own
  DerivedMetricComputation, as TFMA derives it."""
  values = {}
  for cls in metrics.ALL:
    sums, derived = cls().computations(example_weighted=True)
    for key, value in derived.result({sums.keys[0]: accumulator}).items():
      assert key.example_weighted
      values[key.name] = value
  return values


def test_every_derived_metric_with_unequal_weights_matches_numpy():
  labels = np.array([3.0, 5.0, 10.0, 0.5, -2.0, 7.5])
  predictions = np.array([2.0, 7.0, 10.5, 0.0, -1.0, 4.0])
  # Far from equal: an unweighted formula anywhere gives other numbers.
  weights = np.array([1.0, 20.0, 0.5, 3.0, 0.01, 8.0])
  expected = _numpy_metrics(labels, predictions, weights)
  unweighted = _numpy_metrics(labels, predictions, np.ones(len(labels)))
  assert all(abs(expected[name] - unweighted[name]) > 0.05
             for name in expected)
  for parts in (1, 2, 3):
    values = _derived_values(
        _weighted_accumulator(labels, predictions, weights, parts))
    assert values == pytest.approx(expected, rel=1e-9), parts


_FINITE = dict(allow_nan=False, allow_infinity=False)
# Three decimals: labels differ by 1e-3 or not at all (subnormal differences
# would make numpy's own variance round to 0).
_VALUES = st.floats(-1e4, 1e4, **_FINITE).map(lambda x: round(x, 3))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(st.tuples(_VALUES, _VALUES,
                               st.floats(1e-3, 1e3, **_FINITE)),
                     min_size=1, max_size=30),
       parts=st.integers(min_value=1, max_value=4))
def test_weighted_metrics_match_numpy_for_any_weights(data, parts):
  labels, predictions, weights = map(np.array, zip(*data))
  expected = _numpy_metrics(labels, predictions, weights)
  values = _derived_values(_weighted_accumulator(
      labels, predictions, weights, min(parts, len(labels))))
  scale = max(1.0, float(np.max(np.abs(np.concatenate([labels,
                                                       predictions])))))
  for name in ('example_count', 'mean_label', 'mean_prediction',
               'mean_absolute_error',
               'root_mean_squared_error'):
    assert values[name] == pytest.approx(expected[name], rel=1e-9,
                                         abs=1e-12 * scale), name
  assert values['mean_squared_error'] == pytest.approx(
      expected['mean_squared_error'], rel=1e-9, abs=1e-12 * scale ** 2)
  if np.ptp(labels) == 0:  # labels that do not vary: no R²
    assert np.isnan(values['r_squared'])
  else:
    variance = np.average((labels - np.average(labels, weights=weights)) ** 2,
                          weights=weights)
    # 1 - R² = MSE / variance: its error is relative to that ratio, and
    # grows as the labels' spread shrinks next to their scale.
    tolerance = 1e-9 * (1 + abs(1 - expected['r_squared'])) * (
        1 + scale / np.sqrt(variance))
    assert values['r_squared'] == pytest.approx(expected['r_squared'],
                                                abs=tolerance)


@pytest.mark.parametrize('case', ['rows of weight 1, in one batch',
                                  'weighted examples'])
def test_labels_that_do_not_vary_have_no_r_squared(case):
  if case == 'weighted examples':
    label = -4604.266
    weights = np.array([40.97448296267075, 16.528619000893567,
                        813.2704259300332, 912.7556645221445,
                        606.6361691314041])
    accumulator = _weighted_accumulator(np.full(5, label),
                                        np.full(5, label + 1.0), weights)
  else:
    sums = _sums()
    accumulator = sums.add_input(
        sums.create_accumulator(), metric_types.StandardMetricInputs(
            labels=np.array([0.1, 0.1, 0.1]),
            predictions=np.array([0.2, 0.2, 0.2])))
  assert np.isnan(_derived_values(accumulator)['r_squared'])


def test_a_weighted_example_count_is_tfmas():
  from tensorflow_model_analysis.metrics import example_count  # pylint: disable=import-outside-toplevel
  weights = np.array([1.0, 20.0, 0.5, 3.0])
  inputs = [metric_util.to_standard_metric_inputs({
      'labels': np.array([label]), 'predictions': np.array([prediction]),
      'example_weights': np.array([weight])})
            for label, prediction, weight in zip(LABELS, PREDICTIONS,
                                                 weights)]
  (tfma,) = example_count.ExampleCount().computations(example_weighted=True)
  accumulator = tfma.combiner.create_accumulator()
  for element in inputs:
    accumulator = tfma.combiner.add_input(accumulator, element)
  (tfma_count,) = tfma.combiner.extract_output(accumulator).values()
  assert tfma_count == pytest.approx(weights.sum())
  sums, derived = metrics.RegressionExampleCount().computations(
      example_weighted=True)
  (count,) = derived.result({sums.keys[0]: _weighted_accumulator(
      LABELS, PREDICTIONS, weights)}).values()
  assert count == pytest.approx(tfma_count)
