"""The blessing gates of a `--data` run fit any label scale.

Real pipeline runs on a price (the taxi sample's fare in thousandths of a
dollar, so in the thousands) and on a label that is pure noise. What is
checked is what the Evaluator applied and decided: the eval config stored
with its evaluation and its validation result.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.writers import eval_config_writer

from tfx_e2e.cli import commands as cli
from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import ConfigError, PipelineConfig, load_config
from tfx_e2e.reports.results import OVERALL, R_SQUARED, RMSE, load_run_results
from tests.conftest import read_csv, run_cli, write_csv

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

PRICE_COLUMNS = ['trip_miles', 'trip_seconds', 'payment_type', 'company']


@pytest.fixture(scope='module')
def prices(taxi_sample, tmp_path_factory) -> Path:
  """Taxi trips with their fare as a price in thousandths (3,000-40,000)."""
  header, rows = read_csv(taxi_sample)
  at = {name: header.index(name) for name in PRICE_COLUMNS + ['fare']}
  return write_csv(
      tmp_path_factory.mktemp('prices') / 'prices.csv', PRICE_COLUMNS +
      ['price'], [[row[at[name]] for name in PRICE_COLUMNS] +
                  [f'{float(row[at["fare"]]) * 1000:.0f}'
                   if row[at['fare']] else ''] for row in rows])


def _evaluator_decision(output: Path, name: str):
  """(RunResults, stored eval config, validation result) of the latest run."""
  results = load_run_results(PipelineConfig(
      pipeline_name=name, model_name=name, output_dir=str(output)))
  stored, *_ = eval_config_writer.load_eval_run(results.evaluation_uri)
  return (results, stored,
          tfma.load_validation_result(results.evaluation_uri))


def _thresholds(stored, class_name):
  """The overall thresholds of one metric in a stored eval config."""
  (metric,) = [m for spec in stored.metrics_specs for m in spec.metrics
               if m.class_name == class_name]
  return [t.threshold for t in metric.per_slice_thresholds
          if t.threshold.ByteSize()]


def _overall_failures(validation):
  return [failure for per_slice in validation.metric_validations_per_slice
          if not per_slice.slice_key.single_slice_keys
          for failure in per_slice.failures]


@pytest.fixture(scope='module')
def price_runs(prices, tmp_path_factory):
  """Three runs on one output directory: a model without trip_seconds, one
  without trip_miles either (worse), then one with both (better than the
  first, the last blessed)."""
  output = tmp_path_factory.mktemp('price-runs')
  runs = []
  for exclude in ('trip_seconds', 'trip_seconds,trip_miles', None):
    result = run_cli(['run', '--data', str(prices), '--label', 'price',
                      '--output', str(output)] +
                     (['--exclude', exclude] if exclude else []))
    runs.append((result, *_evaluator_decision(output, 'prices'),
                 sorted(p.name for p in (output / 'serving' / 'prices')
                        .iterdir()) if (output / 'serving').exists() else []))
  return runs


def test_a_label_in_the_thousands_is_blessed_and_pushed(price_runs):
  result, results, stored, validation, versions = price_runs[0]
  assert result.exit_code == runner.EXIT_PUSHED, result.stdout + result.stderr
  assert validation.validation_ok and results.blessed and results.pushed
  assert len(versions) == 1
  assert results.metrics[OVERALL][RMSE] > 1000  # the taxi bound was 10
  # Only scale-free gates: R² >= 0 and no bound on the RMSE in dollars.
  # The change gate is stripped for the first model (no baseline).
  assert [t.value_threshold.lower_bound.value for t in _thresholds(
      stored, 'RegressionRSquared')] == [0.0]
  assert _thresholds(stored, 'RegressionRootMeanSquaredError') == []
  assert results.metrics[OVERALL][R_SQUARED] > 0
  assert 'R² >= 0 (absolute): pass' in result.stdout
  assert ('(RMSE - baseline RMSE) / baseline RMSE <= 0.01 (change): not '
          'checked') in result.stdout


def test_a_worse_candidate_is_refused_by_the_change_gate(price_runs):
  first = price_runs[0][1]
  result, results, stored, validation, versions = price_runs[1]
  assert result.exit_code == runner.EXIT_NOT_PUSHED, result.stderr
  assert not validation.validation_ok and results.blessed is False
  assert versions == price_runs[0][4]  # nothing pushed
  assert results.baseline_metrics[OVERALL][RMSE] == pytest.approx(
      first.metrics[OVERALL][RMSE])
  worse = results.metrics[OVERALL][RMSE] / first.metrics[OVERALL][RMSE] - 1
  assert worse > 0.01
  # The one gate that failed: RMSE's change, relative to the baseline's.
  (failure,) = _overall_failures(validation)
  assert (failure.metric_key.name, failure.metric_key.is_diff) == (RMSE, True)
  assert failure.metric_threshold.change_threshold.relative.value == 0.01
  assert not failure.metric_threshold.change_threshold.HasField('absolute')
  assert [c.passed for c in results.thresholds if c.bound == 'relative'] == [
      False]
  assert 'Pushed: nothing (the model was not blessed)' in result.stdout
  assert (f'failed: (RMSE - baseline RMSE) / baseline RMSE <= 0.01 (change), '
          f'value {worse:.4g}; to change the gate: --set '
          'evaluation.max_relative_rmse_increase=VALUE') in result.stdout


def test_a_better_candidate_is_blessed_against_the_last_blessed(price_runs):
  first = price_runs[0][1]
  result, results, stored, validation, versions = price_runs[2]
  assert result.exit_code == runner.EXIT_PUSHED, result.stdout + result.stderr
  assert validation.validation_ok and results.pushed
  assert len(versions) == 2
  # The baseline is the first model (the second was not blessed), and the
  # relative change gate was applied to it.
  assert results.baseline_metrics[OVERALL][RMSE] == pytest.approx(
      first.metrics[OVERALL][RMSE])
  assert results.metrics[OVERALL][RMSE] < first.metrics[OVERALL][RMSE]
  assert [t.change_threshold.relative.value for t in _thresholds(
      stored, 'RegressionRootMeanSquaredError')] == [0.01]
  assert [c.passed for c in results.thresholds] == [True, True]


@pytest.fixture(scope='module')
def noise_run(tmp_path_factory):
  """A price that is noise, independent of its features; one of them an
  id-like code that the model can fit to the training rows only."""
  rng = np.random.default_rng(0)
  rows = [[f'c{i % 400}', f'{rng.normal():.4f}',
           f'{50000 + 1000 * rng.normal():.2f}'] for i in range(2000)]
  data = write_csv(tmp_path_factory.mktemp('noise') / 'noise.csv',
                   ['code', 'x', 'price'], rows)
  output = tmp_path_factory.mktemp('noise-run')
  result = run_cli(['run', '--data', str(data), '--label', 'price',
                    '--output', str(output)])
  return (result, *_evaluator_decision(output, 'noise'), output)


def test_a_model_worse_than_the_mean_predictor_is_refused(noise_run):
  result, results, stored, validation, output = noise_run
  assert result.exit_code == runner.EXIT_NOT_PUSHED, result.stderr
  assert not validation.validation_ok and results.blessed is False
  assert not (output / 'serving').exists()
  (failure,) = _overall_failures(validation)
  assert failure.metric_key.name == R_SQUARED
  assert failure.metric_value.double_value.value < 0
  assert failure.metric_threshold.value_threshold.lower_bound.value == 0.0
  r_squared = results.metrics[OVERALL][R_SQUARED]
  assert r_squared == pytest.approx(failure.metric_value.double_value.value)
  assert (f'failed: R² >= 0 (absolute), value {r_squared:.4g}; to change the '
          'gate: --set evaluation.min_r_squared=VALUE') in result.stdout
  report = (output / 'report.html').read_text()
  assert 'Failed: R² &gt;= 0 (absolute)' in report
  assert 'evaluation.min_r_squared' in report


def test_a_data_run_starts_from_scale_free_gates():
  data = cli.load_config(cli.build_parser().parse_args(
      ['run', '--data', 'houses.csv', '--label', 'price']))
  assert (data.evaluation.rmse_upper_bound, data.evaluation.min_r_squared,
          data.evaluation.max_rmse_increase,
          data.evaluation.max_relative_rmse_increase) == (None, 0.0, None,
                                                          0.01)
  # The bundled taxi task keeps its gates.
  taxi = cli.load_config(cli.build_parser().parse_args(['run']))
  assert (taxi.evaluation.rmse_upper_bound,
          taxi.evaluation.max_rmse_increase) == (10.0, 1e-6)


@pytest.mark.parametrize('override, message', [
    ('evaluation.min_r_squared=1.5', 'evaluation.min_r_squared must be <= 1'),
    ('evaluation.rmse_upper_bound=-1',
     'evaluation.rmse_upper_bound must be >= 0'),
    ('evaluation.max_relative_rmse_increase=-1',
     'evaluation.max_relative_rmse_increase must be > -1'),
    ('evaluation.max_rmse_increase=nan',
     'evaluation.max_rmse_increase must be a finite number or none'),
    # No gate that a first model can be checked against.
    ('evaluation.rmse_upper_bound=none',
     'evaluation.rmse_upper_bound or evaluation.min_r_squared must be set'),
])
def test_gate_settings_out_of_range_are_refused(override, message):
  key, value = override.split('=')
  section, name = key.split('.')
  with pytest.raises(ConfigError, match=message.replace('(', r'\(')):
    load_config(overrides={section: {name: value}})
