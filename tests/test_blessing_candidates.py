"""A candidate really worse than its baseline is refused, a better one is
blessed, and the summary's gate lines say what the Evaluator applied.

Three runs of the taxi task in one output directory: a model without
trip_miles (pushed), a model barely trained with SGD (much worse: refused by
the change gate, evaluation.max_rmse_increase, though within the absolute
bound), then the full model (better than the first, the last blessed).

Everything is checked against what the Evaluator had: the eval config it was
given (its execution property in MLMD), the one it stored with its
evaluation (eval_config.json: what it applied), its validation result and
the blessing artifact, not against the settings passed.
"""

from pathlib import Path
import re

import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.writers import eval_config_writer
from google.protobuf import json_format

from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports import results as results_lib
from tfx_e2e.reports.results import OVERALL, RMSE
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

RMSE_BOUND = 1000.0  # far above any of these models: never the reason
MAX_INCREASE = 0.1   # the gate under test: RMSE - baseline RMSE <= 0.1
GATES = ['--set', f'evaluation.rmse_upper_bound={RMSE_BOUND:g}',
         '--set', f'evaluation.max_rmse_increase={MAX_INCREASE:g}']
# The display names the summary uses, by TFMA metric class.
DISPLAY = {'RegressionRootMeanSquaredError': 'RMSE',
           'RegressionRSquared': 'R²'}


def _without_trip_miles():
  return ['--exclude', ','.join(
      PipelineConfig().data.exclude_features + ['trip_miles'])]


class Run:
  """One run's CLI result and what its Evaluator had and decided."""

  def __init__(self, result, output):
    self.result = result
    self.config = PipelineConfig(output_dir=str(output))
    self.results = results_lib.load_run_results(self.config)
    uri = self.results.evaluation_uri
    self.stored, *_ = eval_config_writer.load_eval_run(uri)
    self.validation = tfma.load_validation_result(uri)
    evaluator = self.results.component(pipeline_def.EVALUATOR)
    blessing = evaluator.output('blessing')
    self.blessing_property = blessing.custom_properties['blessed'].int_value
    self.blessing_file = sorted(
        p.name for p in Path(blessing.uri).iterdir())
    self.given = json_format.Parse(
        _execution_property(self.config, 'eval_config'), tfma.EvalConfig(),
        ignore_unknown_fields=True)
    self.rmse = self.results.metrics[OVERALL][RMSE]


def _execution_property(config, name):
  """A property of the latest Evaluator execution, straight from MLMD."""
  store = results_lib.open_store(config.metadata_path)
  node = f'{config.pipeline_name}.{pipeline_def.EVALUATOR}'
  (context,) = [c for c in store.get_contexts_by_type('node')
                if c.name == node]
  execution = max(store.get_executions_by_context(context.id),
                  key=lambda e: e.id)
  return execution.custom_properties[name].string_value


@pytest.fixture(scope='module')
def runs(taxi_sample, tmp_path_factory):
  output = tmp_path_factory.mktemp('candidates')
  base = ['run', '--set', f'data.path={taxi_sample}', '--output', str(output),
          *GATES]
  made = []
  for extra in (_without_trip_miles(),
                ['--set', 'training.solver=sgd',
                 '--set', 'training.train_steps=1'],
                []):
    made.append(Run(run_cli(base + extra), output))
  return made


def _overall_thresholds(eval_config):
  """{(metric class, bound): (value, Generic*Threshold)} of the overall
  slice."""
  found = {}
  for spec in eval_config.metrics_specs:
    for metric in spec.metrics:
      for per_slice in metric.per_slice_thresholds:
        if tfma.SlicingSpec() not in per_slice.slicing_specs:
          continue
        for kind in ('value_threshold', 'change_threshold'):
          if not per_slice.threshold.HasField(kind):
            continue
          part = getattr(per_slice.threshold, kind)
          for bound in ('upper_bound', 'lower_bound', 'absolute', 'relative'):
            if (bound in part.DESCRIPTOR.fields_by_name and
                part.HasField(bound)):
              found[(metric.class_name, bound)] = (
                  getattr(part, bound).value, part)
  return found


def _failures(validation):
  return [f for per_slice in validation.metric_validations_per_slice
          if not per_slice.slice_key.single_slice_keys
          for f in per_slice.failures]


def _gate_lines(stdout):
  """The summary's lines under 'Blessing:', up to 'Pushed:'."""
  lines = stdout.splitlines()
  start = next(i for i, line in enumerate(lines)
               if line.startswith('Blessing: '))
  end = next(i for i, line in enumerate(lines) if line.startswith('Pushed: '))
  return lines[start + 1:end]


def _expected_gate_lines(run):
  """The summary's gate lines as the Evaluator's artifacts dictate them."""
  applied = _overall_thresholds(run.stored)
  failed = _failures(run.validation)
  metrics = run.results.metrics.get(OVERALL, {})
  diff = {name: metrics[name] - value for name, value in
          run.results.baseline_metrics.get(OVERALL, {}).items()
          if name in metrics}
  lines = []
  for (class_name, bound), (threshold, part) in applied.items():
    name = DISPLAY[class_name]
    metric = {'RMSE': RMSE, 'R²': results_lib.R_SQUARED}[name]
    text = {'upper_bound': f'{name} <= {threshold:g} (absolute)',
            'lower_bound': f'{name} >= {threshold:g} (absolute)',
            'absolute': f'{name} - baseline {name} <= {threshold:g} (change)',
            }[bound]
    change = bound in ('absolute', 'relative')
    value = diff[metric] if change else metrics[metric]
    kind = 'change_threshold' if change else 'value_threshold'
    fails = any(f.metric_key.name == metric and f.metric_key.is_diff == change
                and getattr(f.metric_threshold, kind) == part for f in failed)
    lines.append(f'  {text}: {"FAIL" if fails else "pass"} (value '
                 f'{value:.4g}) [evaluation.'
                 f'{_setting(class_name, bound)}]')
  for (class_name, bound), (threshold, _) in _overall_thresholds(
      run.given).items():
    if (class_name, bound) in applied:
      continue
    name = DISPLAY[class_name]
    assert bound == 'absolute', 'only a change gate waits for a baseline'
    lines.append(f'  {name} - baseline {name} <= {threshold:g} (change): not '
                 'checked (no model served yet) [evaluation.'
                 f'{_setting(class_name, bound)}]')
  return lines


def _setting(class_name, bound):
  return {('RegressionRootMeanSquaredError', 'upper_bound'):
          'rmse_upper_bound',
          ('RegressionRSquared', 'lower_bound'): 'min_r_squared',
          ('RegressionRootMeanSquaredError', 'absolute'): 'max_rmse_increase',
          ('RegressionRootMeanSquaredError', 'relative'):
          'max_relative_rmse_increase'}[(class_name, bound)]


def _rmse_gates(eval_config):
  return {bound: (value, part) for (class_name, bound), (value, part)
          in _overall_thresholds(eval_config).items()
          if class_name == 'RegressionRootMeanSquaredError'}


def test_each_setting_is_the_threshold_the_evaluator_applied(runs):
  first, worse, better = runs
  # The settings as the Evaluator got them: an upper bound on RMSE and a
  # bound on its increase over the baseline's, lower being better.
  for run in runs:
    given = _rmse_gates(run.given)
    assert {b: v for b, (v, _) in given.items()} == {
        'upper_bound': RMSE_BOUND, 'absolute': MAX_INCREASE}
    assert given['absolute'][1].direction == tfma.MetricDirection.LOWER_IS_BETTER
  # Applied: the change gate only once there is a blessed baseline.
  assert {b: v for b, (v, _) in _rmse_gates(first.stored).items()} == {
      'upper_bound': RMSE_BOUND}
  for run in (worse, better):
    assert {b: v for b, (v, _) in _rmse_gates(run.stored).items()} == {
        'upper_bound': RMSE_BOUND, 'absolute': MAX_INCREASE}


@pytest.mark.parametrize('index', [0, 1, 2])
def test_summary_gate_lines_are_what_the_evaluator_applied(runs, index):
  run = runs[index]
  assert _gate_lines(run.result.stdout) == _expected_gate_lines(run), (
      run.result.stdout)


def test_first_model_is_blessed_and_pushed(runs):
  first = runs[0]
  assert first.result.exit_code == runner.EXIT_PUSHED, first.result.stderr
  assert first.validation.validation_ok
  assert first.blessing_property == 1 and first.blessing_file == ['BLESSED']
  assert first.results.blessed and first.results.pushed
  assert first.results.baseline_metrics == {}


def test_a_worse_candidate_is_refused_by_the_change_gate_only(runs):
  first, worse, _ = runs
  assert worse.result.exit_code == runner.EXIT_NOT_PUSHED, worse.result.stderr
  assert worse.blessing_property == 0 and worse.blessing_file == [
      'NOT_BLESSED']
  assert not worse.validation.validation_ok
  assert worse.results.blessed is False and not worse.results.pushed
  # Compared with the first model, and really worse than it.
  assert worse.results.baseline_metrics[OVERALL][RMSE] == pytest.approx(
      first.rmse)
  assert worse.rmse - first.rmse > MAX_INCREASE
  assert worse.rmse < RMSE_BOUND
  # The one failure is the change gate, at the threshold set.
  (failure,) = _failures(worse.validation)
  assert (failure.metric_key.name, failure.metric_key.is_diff) == (RMSE, True)
  change = failure.metric_threshold.change_threshold
  assert change.absolute.value == MAX_INCREASE
  assert failure.metric_value.double_value.value == pytest.approx(
      worse.rmse - first.rmse)
  assert [(c.bound, c.passed) for c in worse.results.thresholds] == [
      ('upper_bound', True), ('absolute', False)]
  assert ('failed: RMSE - baseline RMSE <= 0.1 (change), value '
          f'{worse.rmse - first.rmse:.4g}; to change the gate: --set '
          'evaluation.max_rmse_increase=VALUE') in worse.result.stdout


def test_a_better_candidate_is_blessed_against_the_last_blessed(runs):
  first, worse, better = runs
  assert better.result.exit_code == runner.EXIT_PUSHED, better.result.stderr
  assert better.blessing_property == 1 and better.blessing_file == ['BLESSED']
  assert better.validation.validation_ok and not _failures(better.validation)
  assert better.results.blessed and better.results.pushed
  assert better.results.pushed_version != first.results.pushed_version
  # The baseline is the first model, the last blessed, not the refused one.
  baseline = better.results.baseline_metrics[OVERALL][RMSE]
  assert baseline == pytest.approx(first.rmse)
  assert baseline != pytest.approx(worse.rmse)
  # Really better: the change gate compared a negative difference.
  assert better.rmse < first.rmse - 0.05
  assert [(c.bound, c.passed) for c in better.results.thresholds] == [
      ('upper_bound', True), ('absolute', True)]
  assert re.search(r'RMSE - baseline RMSE <= 0\.1 \(change\): pass \(value '
                   r'-[0-9.]+\)', better.result.stdout)
