"""The pipeline on data with no string or categorical column at all.

The numeric columns of the taxi sample (real data, with its outliers): no
vocabulary, so the model's design matrix is z-scores only, and the default
least-squares Trainer has no one-hot counts to assemble.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline import runner
from pipeline.config import PipelineConfig
from pipeline.results import load_run_results
from tests.conftest import read_csv, run_cli, write_csv

LABEL = 'fare'
FEATURES = ['trip_miles', 'trip_seconds']


@pytest.fixture(scope='module')
def numeric_run(taxi_sample, tmp_path_factory):
  header, rows = read_csv(taxi_sample)
  picks = [header.index(name) for name in [LABEL] + FEATURES]
  data = write_csv(tmp_path_factory.mktemp('numeric-data') / 'numeric.csv',
                   [LABEL] + FEATURES,
                   [[row[i] for i in picks] for row in rows])
  output = tmp_path_factory.mktemp('numeric')
  result = run_cli(['run', '--data', str(data), '--label', LABEL,
                    '--output', str(output),
                    # Fares are in dollars: the taxi's bound.
                    '--set', 'evaluation.rmse_upper_bound=10'])
  return result, PipelineConfig(pipeline_name='numeric', model_name='numeric',
                                output_dir=str(output))


def test_all_numeric_data_trains_and_pushes(numeric_run):
  result, config = numeric_run
  assert result.exit_code == runner.EXIT_PUSHED, result.stdout + result.stderr
  results = load_run_results(config)
  assert results.blessed and results.pushed


def test_the_pushed_model_takes_exactly_the_numeric_columns(numeric_run):
  _, config = numeric_run
  pushed = sorted(Path(config.serving_model_dir).iterdir())
  assert len(pushed) == 1
  signature = tf.saved_model.load(str(pushed[0])).signatures['serving_raw']
  inputs = signature.structured_input_signature[1]
  assert set(inputs) == set(FEATURES)
  predictions = signature(
      trip_miles=tf.constant([1.0, 10.0, float('nan')]),  # NaN = missing
      trip_seconds=tf.constant([300, 1800, 600], inputs['trip_seconds'].dtype),
  )['outputs'].numpy()
  assert np.isfinite(predictions).all()
  assert predictions[1] > predictions[0] + 10  # ten miles cost more than one
