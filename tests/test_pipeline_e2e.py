"""End to end: the real TFX pipeline on a sample of the bundled taxi data.

One output directory serves the tests in order: the first run pushes, the
second is served from the cache, an edit to the model code retrains, and an
impossible threshold pushes nothing.
"""

import importlib
import importlib.util
import math
from pathlib import Path
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports.results import OVERALL, RMSE, load_run_results
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

SLICE_FEATURES = ('payment_type', 'trip_start_hour')


@pytest.fixture(scope='module')
def output_dir(taxi_run) -> Path:
  return taxi_run[1]


def _args(taxi_sample, output_dir, *extra):
  return ['run', '--set', f'data.path={taxi_sample}', '--output',
          str(output_dir), *extra]


def _config(output_dir) -> PipelineConfig:
  return PipelineConfig(output_dir=str(output_dir))


def _versions(output_dir):
  base = Path(_config(output_dir).serving_model_dir)
  return sorted(p.name for p in base.iterdir()) if base.exists() else []


def _eval_examples(output_dir):
  """The tf.Examples that ExampleGen put in the eval split (held out)."""
  results = load_run_results(_config(output_dir))
  examples = results.component(pipeline_def.EXAMPLE_GEN).output('examples')
  files = tf.io.gfile.glob(f'{examples.uri}/Split-eval/*')
  eval_examples = [tf.train.Example.FromString(r.numpy()) for r in
                   tf.data.TFRecordDataset(files, compression_type='GZIP')]
  return eval_examples


@pytest.fixture(scope='module')
def first_run(taxi_run):
  return taxi_run[0]


def test_first_run_pushes_a_blessed_model(first_run, output_dir):
  assert first_run.exit_code == runner.EXIT_PUSHED, first_run.stderr
  results = load_run_results(_config(output_dir))
  assert [c.state for c in results.components] == ['complete'] * 9
  assert results.blessed is True
  versions = _versions(output_dir)
  assert len(versions) == 1 and versions[0].isdigit()
  version_dir = Path(_config(output_dir).serving_model_dir) / versions[0]
  assert (version_dir / 'saved_model.pb').is_file()
  assert results.pushed_version == versions[0]
  # The summary says what happened.
  assert 'Blessing: BLESSED' in first_run.stdout
  assert f'Pushed: version {versions[0]}' in first_run.stdout
  assert 'RMSE <= 10 (absolute): pass' in first_run.stdout


def test_every_artifact_is_there(first_run, output_dir):
  results = load_run_results(_config(output_dir))
  examples = results.component(pipeline_def.EXAMPLE_GEN).output('examples')
  for split in ('train', 'eval'):
    assert tf.io.gfile.glob(f'{examples.uri}/Split-{split}/*.gz')
  schema = results.component(pipeline_def.SCHEMA_GEN).output('schema')
  assert Path(schema.uri, 'schema.pbtxt').is_file()
  graph = results.component(pipeline_def.TRANSFORM).output('transform_graph')
  assert Path(graph.uri, 'transform_fn', 'saved_model.pb').is_file()
  model = results.component(pipeline_def.TRAINER).output('model')
  assert Path(model.uri, 'Format-Serving', 'saved_model.pb').is_file()
  assert results.anomalies == {'train': [], 'eval': []}


def test_metrics_for_every_slice(first_run, taxi_sample, output_dir):
  results = load_run_results(_config(output_dir))
  eval_examples = _eval_examples(output_dir)
  expected_slices = {OVERALL}
  for feature in SLICE_FEATURES:
    for example in eval_examples:
      values = example.features.feature[feature]
      value = (values.bytes_list.value or values.int64_list.value)[0]
      if isinstance(value, bytes):
        value = value.decode()
      expected_slices.add(f'{feature}={value}')
  assert set(results.metrics) == expected_slices
  for name, metrics in results.metrics.items():
    for metric in ('example_count', RMSE, 'mean_squared_error',
                   'mean_absolute_error', 'mean_label', 'mean_prediction'):
      assert math.isfinite(metrics[metric]), (name, metric)
  overall = results.metrics[OVERALL]
  assert overall['example_count'] == len(eval_examples)
  assert overall[RMSE] == pytest.approx(
      math.sqrt(overall['mean_squared_error']), rel=1e-5)


def test_pushed_model_predicts_held_out_rows(first_run, taxi_sample,
                                             output_dir):
  version_dir = (Path(_config(output_dir).serving_model_dir) /
                 _versions(output_dir)[0])
  model = tf.saved_model.load(str(version_dir))
  examples = _eval_examples(output_dir)
  labels = np.array([e.features.feature['fare'].float_list.value[0]
                     for e in examples])
  for e in examples:
    del e.features.feature['fare']  # serving sees no label
  serialized = tf.constant([e.SerializeToString() for e in examples])
  predictions = model.signatures['serving_default'](
      inputs=serialized)['outputs'].numpy()
  assert predictions.shape == labels.shape
  assert np.isfinite(predictions).all()
  rmse = float(np.sqrt(np.mean((predictions - labels) ** 2)))
  # Far better than always predicting the mean fare.
  assert rmse < 0.7 * float(np.std(labels)), (rmse, np.std(labels))

  # The raw-feature signature gives the same predictions for the same rows.
  raw_signature = model.signatures['serving_raw']
  raw = {}
  for name, spec in raw_signature.structured_input_signature[1].items():
    column = []
    for e in examples:
      feature = e.features.feature[name]
      values = (feature.bytes_list.value or feature.float_list.value or
                feature.int64_list.value)
      missing = b'' if spec.dtype == tf.string else (
          float('nan') if spec.dtype.is_floating else 0)
      column.append(values[0] if values else missing)
    raw[name] = tf.constant(column, dtype=spec.dtype)
  raw_predictions = raw_signature(**raw)['outputs'].numpy()
  np.testing.assert_allclose(raw_predictions, predictions, rtol=1e-5,
                             atol=1e-4)


def test_second_run_is_served_from_cache(first_run, taxi_sample, output_dir):
  second = run_cli(_args(taxi_sample, output_dir))
  assert second.exit_code == runner.EXIT_PUSHED, second.stderr
  results = load_run_results(_config(output_dir))
  states = {c.node_id: c.state for c in results.components}
  for node in (pipeline_def.EXAMPLE_GEN, pipeline_def.STATISTICS_GEN,
               pipeline_def.SCHEMA_GEN, pipeline_def.EXAMPLE_VALIDATOR,
               pipeline_def.TRANSFORM, pipeline_def.TRAINER):
    assert states[node] == 'cached', states
  # The Evaluator re-runs: its baseline (the first run's model) is new.
  assert results.baseline_metrics[OVERALL][RMSE] == pytest.approx(
      results.metrics[OVERALL][RMSE])
  assert [c.passed for c in results.thresholds] == [True, True]


def test_edited_model_code_reruns_the_trainer(first_run, taxi_sample,
                                              output_dir, tmp_path,
                                              monkeypatch):
  # tfx_e2e.components.model with one line added, loaded from its own file in place
  # of the original: the Trainer must run the edited code, not reuse the
  # model cached for the old code.
  original = importlib.import_module('tfx_e2e.components.model')
  edited_file = tmp_path / 'model.py'
  edited_file.write_text(Path(original.__file__).read_text() + '\n# Edit.\n')
  spec = importlib.util.spec_from_file_location(original.__name__,
                                                edited_file)
  edited = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(edited)
  monkeypatch.setitem(sys.modules, original.__name__, edited)
  result = run_cli(_args(taxi_sample, output_dir))
  assert result.exit_code == runner.EXIT_PUSHED, result.stderr
  states = {c.node_id: c.state for c in
            load_run_results(_config(output_dir)).components}
  assert states[pipeline_def.TRANSFORM] == 'cached', states
  assert states[pipeline_def.TRAINER] == 'complete', states


def test_impossible_threshold_pushes_nothing(first_run, taxi_sample,
                                             output_dir):
  before = _versions(output_dir)
  result = run_cli(_args(taxi_sample, output_dir, '--set',
                         'evaluation.rmse_upper_bound=0.001'))
  assert result.exit_code == runner.EXIT_NOT_PUSHED
  assert _versions(output_dir) == before
  results = load_run_results(_config(output_dir))
  assert results.blessed is False and not results.pushed
  assert 'RMSE <= 0.001 (absolute): FAIL' in result.stdout
  assert 'Pushed: nothing (the model was not blessed)' in result.stdout
  report = (output_dir / 'report.html').read_text()
  assert 'NOT BLESSED' in report and 'FAIL' in report
  assert f'Report: {output_dir / "report.html"}' in result.stdout
