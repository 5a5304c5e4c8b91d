"""The regression metrics through TFMA's combiner API, in a Beam pipeline,
against numpy; and the sums they share are computed once."""

import apache_beam as beam
import numpy as np
import pytest
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
