"""A native TFMA root mean squared error, for the Evaluator's metrics and gates.

TFMA has no RMSE of its own: `class_name='RootMeanSquaredError'` resolves to
the Keras metric, which TFMA runs through its TF metric wrapper, a TF call
per batch and per slice. This one derives the square root from TFMA's native
MeanSquaredError (a Beam combiner), under the same metric name.
"""

import math
from typing import Any, Dict, Optional

from tensorflow_model_analysis.metrics import mean_regression_error
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util

NAME = 'root_mean_squared_error'


class RootMeanSquaredError(metric_types.Metric):
  """sqrt(mean((label - prediction)^2)), per slice."""

  def __init__(self, name: str = NAME):
    super().__init__(metric_util.merge_per_key_computations(_computations),
                     name=name)


def _computations(name: str, eval_config=None,
                  model_name: Optional[str] = None,
                  output_name: Optional[str] = None,
                  example_weighted: bool = False,
                  sub_key=None, **_: Any) -> metric_types.MetricComputations:
  mse = mean_regression_error.MeanSquaredError().computations(
      eval_config=eval_config, model_names=[model_name],
      output_names=[output_name], example_weighted=example_weighted)
  mse_key = mse[-1].keys[0]
  key = metric_types.MetricKey(
      name=name, model_name=model_name, output_name=output_name,
      sub_key=sub_key, example_weighted=example_weighted)

  def result(metrics: Dict[metric_types.MetricKey, Any]):
    return {key: math.sqrt(metrics[mse_key])}

  return mse + [metric_types.DerivedMetricComputation(keys=[key],
                                                      result=result)]
