"""ExampleValidator anomalies stop the run before Transform/Trainer/Pusher."""

import pytest
import tensorflow_data_validation as tfdv

from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports.results import load_run_results
from tests.conftest import PENGUINS_CSV, run_cli

GATED = (pipeline_def.TRANSFORM, pipeline_def.TRAINER, pipeline_def.RESOLVER,
         pipeline_def.EVALUATOR, pipeline_def.PUSHER)


@pytest.fixture(scope='module')
def curated_schema(tmp_path_factory):
  """A curated schema whose island domain lacks a value that the data has."""
  statistics = tfdv.generate_statistics_from_csv(str(PENGUINS_CSV))
  schema = tfdv.infer_schema(statistics)
  island = tfdv.get_domain(schema, 'island')
  island.value[:] = [v for v in island.value if v != 'Torgersen']
  path = tmp_path_factory.mktemp('schema') / 'schema.pbtxt'
  tfdv.write_schema_text(schema, str(path))
  return path


def _args(schema, output, *extra):
  return ['run', '--data', str(PENGUINS_CSV), '--label', 'body_mass_g',
          '--schema', str(schema), '--output', str(output),
          '--set', 'evaluation.rmse_upper_bound=600', *extra]


def test_anomalies_stop_the_run_and_are_listed(curated_schema, tmp_path):
  result = run_cli(_args(curated_schema, tmp_path))
  assert result.exit_code == runner.EXIT_NOT_PUSHED, result.stderr
  config = PipelineConfig(pipeline_name='penguins', output_dir=str(tmp_path))
  results = load_run_results(config)
  states = {c.node_id: c.state for c in results.components}
  assert states[pipeline_def.EXAMPLE_VALIDATOR] == 'complete'
  assert all(states[node] != 'complete' for node in GATED), states
  assert not results.pushed
  assert any(a.startswith('island:') for a in results.anomalies['train'])
  assert 'Data anomalies (ExampleValidator):' in result.stdout
  assert 'island: Unexpected string values' in result.stdout
  assert 'the data gate stopped the run' in result.stdout
  assert '[5/9] Transform ... skipped' in result.stdout
  assert not (tmp_path / 'serving').exists()
  # The run's report says what is missing instead of failing.
  report = (tmp_path / 'report.html').read_text()
  assert 'The Evaluator did not run in this run: the data gate stopped it' \
      in report
  assert 'Nothing was pushed in this run.' in report

  # The documented escape hatch: proceed, still listing the anomalies.
  allowed = run_cli(_args(curated_schema, tmp_path, '--allow-anomalies'))
  assert allowed.exit_code == runner.EXIT_PUSHED, allowed.stderr
  assert 'island: Unexpected string values' in allowed.stdout
  results = load_run_results(config)
  assert results.pushed and results.has_anomalies
