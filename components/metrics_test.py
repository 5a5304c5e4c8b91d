"""The native RMSE through TFMA's own combiner, in a Beam pipeline."""

import apache_beam as beam
import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_util

from components import metrics


def test_rmse_is_the_root_of_tfma_mean_squared_error():
  labels = np.array([3.0, 5.0, 10.0, 0.5])
  predictions = np.array([2.0, 7.0, 10.5, 0.0])
  expected = np.sqrt(np.mean((labels - predictions) ** 2))
  mse, derived = metrics.RootMeanSquaredError().computations()

  def check(combined):
    (key, value), = derived.result(combined).items()
    assert key.name == metrics.NAME
    assert value == pytest.approx(expected)

  with beam.Pipeline() as pipeline:
    _ = (pipeline
         | beam.Create([{'labels': np.array([label]),
                         'predictions': np.array([prediction]),
                         'example_weights': np.array([1.0])}
                        for label, prediction in zip(labels, predictions)])
         | beam.Map(metric_util.to_standard_metric_inputs)
         | beam.CombineGlobally(mse.combiner)
         | beam.Map(check))
