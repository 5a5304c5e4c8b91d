"""The pipeline on data with no string or categorical column at all.

The numeric columns of the taxi sample (real data, with its outliers): no
vocabulary, so the model's design matrix is z-scores only, and the default
least-squares Trainer has no one-hot counts to assemble. And a wide CSV of
300 numeric columns: Transform analyzes them together, the Trainer solves a
301 x 301 system, and `serving_raw` takes 300 arguments.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfx_e2e.components import features
from tfx_e2e.pipeline import input_check, runner
from tfx_e2e.pipeline.config import DataConfig, PipelineConfig
from tfx_e2e.reports.results import load_run_results
from tests.conftest import read_csv, run_cli, write_csv

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

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


WIDE_COLUMNS = 300
WIDE_ROWS = 1500


def _wide_rows(count, weights, rng, missing=0.0):
  """Rows of [label, x0, x1, ...]: a linear label, some cells empty."""
  x = rng.normal(size=(count, len(weights)))
  y = x @ weights + 3.0
  cells = np.char.mod('%.6g', x)
  cells[rng.random(x.shape) < missing] = ''
  return x, y, [[f'{label:.6g}'] + list(row) for label, row in zip(y, cells)]


@pytest.fixture(scope='module')
def wide_run(tmp_path_factory):
  rng = np.random.default_rng(7)
  weights = rng.normal(size=WIDE_COLUMNS)
  names = [f'x{i}' for i in range(WIDE_COLUMNS)]
  _, _, rows = _wide_rows(WIDE_ROWS, weights, rng, missing=0.01)
  data = write_csv(tmp_path_factory.mktemp('wide-data') / 'wide.csv',
                   ['y'] + names, rows)
  output = tmp_path_factory.mktemp('wide')
  result = run_cli(['run', '--data', str(data), '--label', 'y', '--output',
                    str(output), '--set', 'evaluation.rmse_upper_bound=1000'])
  return result, PipelineConfig(pipeline_name='wide', model_name='wide',
                                output_dir=str(output)), weights, rng


def test_300_numeric_columns_train_export_and_serve(wide_run):
  result, config, weights, rng = wide_run
  assert result.exit_code == runner.EXIT_PUSHED, result.stdout + result.stderr
  pushed = sorted(Path(config.serving_model_dir).iterdir())
  signature = tf.saved_model.load(str(pushed[0])).signatures['serving_raw']
  assert set(signature.structured_input_signature[1]) == {
      f'x{i}' for i in range(WIDE_COLUMNS)}
  x, y, _ = _wide_rows(200, weights, rng)
  predictions = signature(**{
      f'x{i}': tf.constant(x[:, i], tf.float32)
      for i in range(WIDE_COLUMNS)})['outputs'].numpy()
  # The label's standard deviation is ~17; a linear model of the right
  # columns, each with its own z-score, predicts it nearly exactly (the
  # missing cells of training, imputed, cost a little).
  assert np.sqrt(np.mean((predictions - y) ** 2)) < 0.1 * np.std(y)


def test_a_label_named_as_the_numeric_feature_is_refused(tmp_path):
  """The numbers' transformed feature sits beside the label in Transform's
  outputs: a label of that name would replace it."""
  data = write_csv(tmp_path / 'd.csv', ['miles', features.NUMBERS],
                   [['1', '2'], ['3', '4']])
  config = PipelineConfig(output_dir=str(tmp_path / 'out'), data=DataConfig(
      path=str(data), label=features.NUMBERS, exclude_features=[],
      categorical_features=[], slice_features=[]))
  with pytest.raises(input_check.InputError,
                     match='named as a transformed feature'):
    input_check.check_input(config)
