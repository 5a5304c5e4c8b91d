"""The compiled Kubeflow pipeline, replayed as open-source KFP 2.x runs it
(tests/kfp_replay.py: KFP's driver and launcher, artifacts on an S3 server
on loopback under KFP's default MinIO root, conditions in CEL, each task's
own container command in a process of its own). The data and the served
models sit on a folder standing for the pipeline's volume claim.

Beam runs in memory here (`kubeflow.beam_profile=in-memory`): the
multi-process profile only adds worker start-up on this 2-core machine."""

from pathlib import Path

import pytest
import tensorflow_data_validation as tfdv

from tfx_e2e.components import data_gate
from tfx_e2e.components import served_baseline
from tfx_e2e.pipeline import kubeflow
from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline.config import (BUNDLED_TAXI_CSV, load_config,
                                     parse_overrides)
from tests import kfp_replay

pytestmark = pytest.mark.e2e  # runs the pipeline

GATED = (pipeline_def.TRANSFORM, pipeline_def.TRAINER, pipeline_def.BASELINE,
         pipeline_def.EVALUATOR, pipeline_def.PUSHER)


def _compile(volume: Path, name: str, *overrides: str, data: str = 'data'):
  """The pipeline compiled for Kubeflow with its volume at `volume`."""
  config = load_config(overrides=parse_overrides([
      f'kubeflow.volume_mount_path={volume}',
      f'kubeflow.data_path={volume}/{data}',
      f'kubeflow.serving_base={volume}/serving',
      'kubeflow.beam_profile=in-memory', *overrides]))
  return kubeflow.compile_pipeline(config, 'kubeflow',
                                   str(volume.parent / name)), config


def _versions(volume: Path, config) -> list:
  base = volume / 'serving' / config.model_name
  return sorted(p.name for p in base.iterdir()) if base.exists() else []


def _replay(spec, work: Path, volume: Path):
  result = kfp_replay.replay(spec, workdir=work, volumes=[volume])
  print(result.table())  # the time of each replayed task, in the test log
  return result


@pytest.fixture(scope='module')
def volume(tmp_path_factory):
  folder = tmp_path_factory.mktemp('replay') / 'volume'
  (folder / 'data').mkdir(parents=True)
  (folder / 'data' / 'taxi.csv').write_bytes(BUNDLED_TAXI_CSV.read_bytes())
  return folder


@pytest.fixture(scope='module')
def first_run(volume):
  spec, config = _compile(volume, 'first.yaml')
  return _replay(spec, volume.parent / 'first', volume), config


def test_the_pipeline_replays_to_a_pushed_model(first_run, volume):
  result, config = first_run
  assert result.states() == {name: kfp_replay.SUCCEEDED
                             for name in result.tasks}, result.table()
  # Nothing was served yet: the Evaluator ran without a baseline.
  baseline = result[pipeline_def.BASELINE].outputs[served_baseline.BASELINE]
  assert baseline.metadata[served_baseline.SERVED_VERSION] == 0
  anomalies = result[pipeline_def.EXAMPLE_VALIDATOR].outputs['anomalies']
  assert anomalies.metadata[data_gate.DATA_OK] == 1
  blessing = result[pipeline_def.EVALUATOR].outputs['blessing']
  assert blessing.metadata['blessed'] == 1
  (version,) = _versions(volume, config)
  assert (volume / 'serving' / config.model_name / version /
          'saved_model.pb').is_file()
  # Every artifact went through the object store, none to the volume.
  assert any('/Trainer/' in key for key in result.s3_objects)
  assert not (volume / 'mlpipeline').exists()


def test_a_second_run_is_judged_against_the_served_model(first_run, volume):
  """A worse model (heavily regularized) is refused by the change gate
  against the model the first run pushed, and nothing is pushed."""
  _, config = first_run
  (first_version,) = _versions(volume, config)
  spec, _ = _compile(volume, 'second.yaml', 'training.l2=1000000')
  result = _replay(spec, volume.parent / 'second', volume)
  assert result.states() == {name: kfp_replay.SUCCEEDED
                             for name in result.tasks}, result.table()
  baseline = result[pipeline_def.BASELINE].outputs[served_baseline.BASELINE]
  assert baseline.metadata[served_baseline.SERVED_VERSION] == int(
      first_version)
  blessing = result[pipeline_def.EVALUATOR].outputs['blessing']
  assert blessing.metadata['blessed'] == 0
  assert _versions(volume, config) == [first_version]


def test_anomalies_close_the_gate(volume, tmp_path):
  """A curated schema that does not know a payment type of the data: the
  validator finds anomalies, and nothing after it runs."""
  statistics = tfdv.generate_statistics_from_csv(str(BUNDLED_TAXI_CSV))
  schema = tfdv.infer_schema(statistics)
  domain = tfdv.get_domain(schema, 'payment_type')
  domain.value[:] = [v for v in domain.value if v != 'Cash']
  schema_file = tmp_path / 'schema.pbtxt'
  tfdv.write_schema_text(schema, str(schema_file))
  serving = volume / 'serving'
  before = sorted(serving.rglob('*')) if serving.exists() else []
  spec, _ = _compile(volume, 'anomalies.yaml', f'data.schema={schema_file}')
  result = _replay(spec, tmp_path / 'work', volume)
  states = result.states()
  assert states[pipeline_def.EXAMPLE_VALIDATOR] == kfp_replay.SUCCEEDED
  anomalies = result[pipeline_def.EXAMPLE_VALIDATOR].outputs['anomalies']
  assert anomalies.metadata[data_gate.DATA_OK] == 0
  assert {states[node] for node in GATED} == {kfp_replay.SKIPPED}, states
  assert (sorted(serving.rglob('*')) if serving.exists() else []) == before


def test_a_bad_csv_is_refused_by_the_screening_step(volume, tmp_path):
  """A label column with text in it: CsvExampleGen's screening refuses the
  file with the data gate's message and exit code 2; nothing else runs."""
  rows = BUNDLED_TAXI_CSV.read_text().splitlines()
  header = rows[0].split(',')
  bad = rows[:200]
  fields = bad[5].split(',')
  fields[header.index('fare')] = 'twelve dollars'
  bad[5] = ','.join(fields)
  (volume / 'bad').mkdir(exist_ok=True)
  (volume / 'bad' / 'trips.csv').write_text('\n'.join(bad) + '\n')
  serving = volume / 'serving'
  before = sorted(serving.rglob('*')) if serving.exists() else []
  spec, _ = _compile(volume, 'bad.yaml', data='bad')
  result = _replay(spec, tmp_path / 'work', volume)
  example_gen = result[pipeline_def.EXAMPLE_GEN]
  assert example_gen.state == kfp_replay.FAILED
  assert example_gen.returncode == 2
  assert 'twelve dollars' in example_gen.stderr_tail
  assert 'Traceback' not in example_gen.stderr_tail
  assert {t.state for name, t in result.tasks.items()
          if name != pipeline_def.EXAMPLE_GEN} == {kfp_replay.NOT_RUN}
  assert (sorted(serving.rglob('*')) if serving.exists() else []) == before


def test_columns_the_cluster_would_read_differently_are_refused(volume,
                                                                tmp_path):
  """Compiled without seeing the data, the pipeline must name its columns
  as the data has them: a header the gate would rename is refused on the
  cluster, with the setting to write, instead of training on other
  columns."""
  rows = BUNDLED_TAXI_CSV.read_text().splitlines()[:300]
  rows[0] = rows[0].replace('fare', 'Fare ($)')
  (volume / 'renamed').mkdir(exist_ok=True)
  (volume / 'renamed' / 'trips.csv').write_text('\n'.join(rows) + '\n')
  spec, _ = _compile(volume, 'renamed.yaml', 'data.label=Fare ($)',
                     data='renamed')
  result = _replay(spec, tmp_path / 'work', volume)
  example_gen = result[pipeline_def.EXAMPLE_GEN]
  assert example_gen.returncode == 2, result.table()
  assert "data.label: 'Fare ($)' -> 'Fare'" in example_gen.stderr_tail
