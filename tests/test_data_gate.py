"""ExampleValidator anomalies stop the run before Transform/Trainer/Pusher,
those of either split alone too."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

from tfx_e2e.components.executors import csv_example_gen
from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports.results import load_run_results
from tests.conftest import PENGUINS_CSV, run_cli

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

GATED = (pipeline_def.TRANSFORM, pipeline_def.TRAINER, pipeline_def.BASELINE,
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


# A CSV the input check reads as it is (LF line ends, no missing values, no
# quoting): CsvExampleGen reads these very rows.
_COLORS = ('red', 'green', 'blue')
_UNSEEN = 'purple'


def _split_of(line: str, config: PipelineConfig) -> str:
  """The split CsvExampleGen puts `line` in: TFX's hash of the row's
  tf.Example, serialized deterministically."""
  color, x, y = line.split(',')
  example = tf.train.Example(features=tf.train.Features(feature={
      'color': tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[color.encode()])),
      'x': tf.train.Feature(float_list=tf.train.FloatList(value=[float(x)])),
      'y': tf.train.Feature(float_list=tf.train.FloatList(value=[float(y)])),
  }))
  total = config.split.train_buckets + config.split.eval_buckets
  key = example.SerializeToString(deterministic=True)
  return ('train' if csv_example_gen.bucket(key, total) <
          config.split.train_buckets else 'eval')


@pytest.fixture(scope='module')
def eval_only_anomaly(tmp_path_factory):
  """(CSV, curated schema): color has a value outside the schema's domain
  on some lines that hash to eval, and on none that hash to train."""
  config = PipelineConfig()
  rng = np.random.default_rng(0)
  lines, unseen = [], {'train': 0, 'eval': 0}
  for i in range(600):
    x = rng.normal()
    color = _COLORS[i % 3]
    y = 3 * x + _COLORS.index(color) + 0.1 * rng.normal()
    line = f'{color},{x:.4f},{y:.4f}'
    if i % 5 == 0:
      # The unseen value where its line lands in eval; else the line as is.
      candidate = f'{_UNSEEN},{x:.4f},{y:.4f}'
      if _split_of(candidate, config) == 'eval':
        line = candidate
    lines.append(line)
    if line.startswith(_UNSEEN):
      unseen[_split_of(line, config)] += 1
  assert unseen['train'] == 0 and unseen['eval'] >= 10, unseen
  folder = tmp_path_factory.mktemp('eval-only')
  data = folder / 'colors.csv'
  data.write_text('color,x,y\n' + '\n'.join(lines) + '\n')
  schema = folder / 'schema.pbtxt'
  schema.write_text(
      'feature { name: "color" type: BYTES domain: "color" }\n'
      'feature { name: "x" type: FLOAT }\n'
      'feature { name: "y" type: FLOAT }\n'
      'string_domain { name: "color" ' +
      ' '.join(f'value: "{c}"' for c in _COLORS) + ' }\n')
  return data, schema


def test_an_anomaly_in_one_split_stops_the_run(eval_only_anomaly, tmp_path):
  data, schema = eval_only_anomaly
  result = run_cli(['run', '--data', str(data), '--label', 'y',
                    '--schema', str(schema), '--output', str(tmp_path)])
  assert result.exit_code == runner.EXIT_NOT_PUSHED, (result.stdout +
                                                      result.stderr)
  results = load_run_results(PipelineConfig(pipeline_name='colors',
                                            output_dir=str(tmp_path)))
  # The validator passed train and failed eval, and said so per split.
  assert results.anomalies['train'] == []
  assert [a.split(':')[0] for a in results.anomalies['eval']] == ['color']
  anomalies = results.component(pipeline_def.EXAMPLE_VALIDATOR).output(
      'anomalies')
  blessed = anomalies.custom_properties['blessed'].struct_value
  assert dict(blessed) == {'train': 1.0, 'eval': 0.0}
  # Nothing after the validator ran.
  states = {c.node_id: c.state for c in results.components}
  assert states[pipeline_def.EXAMPLE_VALIDATOR] == 'complete'
  assert {node: states[node] for node in GATED} == {
      node: 'skipped' for node in GATED}, states
  assert not results.pushed and results.blessed is None
  assert not (tmp_path / 'serving').exists()
  assert 'eval: color: Unexpected string values' in result.stdout
  assert 'train:' not in result.stdout.split('Data anomalies')[1]
  assert 'the data gate stopped the run' in result.stdout
