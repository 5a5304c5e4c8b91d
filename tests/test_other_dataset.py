"""The same pipeline, unchanged, on another real dataset of another shape.

Palmer penguins (tests/data/penguins.csv, CC0): string categoricals, missing
values in several columns, two rows without the label, a numeric label on
another scale (grams). Run with the BeamDagRunner and the multi-process
DirectRunner profile, so both orchestrators and both local Beam profiles run
the whole pipeline in the suite.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports.results import OVERALL, RMSE, load_run_results
from tests.conftest import PENGUINS_CSV, run_cli

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

ARGS = ['run', '--data', str(PENGUINS_CSV), '--label', 'body_mass_g',
        '--categorical', 'year', '--slice', 'species,island',
        '--orchestrator', 'beam', '--set', 'beam.profile=multi-process',
        '--set', 'evaluation.rmse_upper_bound=600']


@pytest.fixture(scope='module')
def penguins_run(tmp_path_factory):
  output = tmp_path_factory.mktemp('penguins')
  result = run_cli(ARGS + ['--output', str(output)])
  return result, PipelineConfig(pipeline_name='penguins',
                                model_name='penguins', output_dir=str(output))


def test_runs_and_pushes_without_code_changes(penguins_run):
  result, config = penguins_run
  assert result.exit_code == runner.EXIT_PUSHED, result.stdout + result.stderr
  assert '344 rows, 2 dropped for a missing or non-finite label' in (
      result.stdout)
  results = load_run_results(config)
  assert results.blessed and results.pushed
  assert set(results.metrics) == {
      OVERALL, 'species=Adelie', 'species=Chinstrap', 'species=Gentoo',
      'island=Biscoe', 'island=Dream', 'island=Torgersen'}
  # The first model has no baseline; its report says so.
  report = (Path(config.output_dir) / 'report.html').read_text()
  assert 'No baseline: no model was served when this one was evaluated' in report
  # Body mass has a standard deviation of about 800 g.
  assert results.metrics[OVERALL][RMSE] < 500
  assert results.metrics[OVERALL]['example_count'] > 80


def test_raw_signature_takes_the_inferred_features(penguins_run):
  _, config = penguins_run
  base = Path(config.serving_model_dir)
  model = tf.saved_model.load(str(next(base.iterdir())))
  signature = model.signatures['serving_raw']
  inputs = signature.structured_input_signature[1]
  assert set(inputs) == {'species', 'island', 'bill_length_mm',
                         'bill_depth_mm', 'flipper_length_mm', 'sex', 'year'}
  assert inputs['species'].dtype == tf.string
  assert inputs['bill_length_mm'].dtype == tf.float32
  assert inputs['year'].dtype == tf.int64
  assert inputs['flipper_length_mm'].dtype == tf.int64  # whole numbers in CSV
  predictions = signature(
      species=tf.constant(['Gentoo', 'Adelie', 'Adelie']),
      island=tf.constant(['Biscoe', 'Torgersen', 'Dream']),
      bill_length_mm=tf.constant([47.5, 38.8, float('nan')]),
      bill_depth_mm=tf.constant([15.0, 18.3, 18.3]),
      flipper_length_mm=tf.constant([217, 190, 190], tf.int64),
      sex=tf.constant(['male', 'female', '']),  # '' = missing
      year=tf.constant([2008, 2008, 2009], tf.int64),
  )['outputs'].numpy()
  assert np.isfinite(predictions).all()
  assert predictions[0] > predictions[1] + 800  # Gentoos are heavier
  assert 2500 < predictions[2] < 5000
