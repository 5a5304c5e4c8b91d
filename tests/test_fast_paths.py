"""The fast executors against TFX's stock ones, and the switch between them.

`beam.fast_paths=false` builds TFX's stock CsvExampleGen, StatisticsGen,
Transform and Evaluator. On the same data both must give the same examples in
the same splits, the same schema, the same model quality and blessing.
"""

import collections
import logging
from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from google.protobuf import text_format

from tfx_e2e.components import executors
from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports import results as results_lib
from tfx_e2e.reports.results import OVERALL, RMSE, load_run_results
from tests.conftest import assert_same_metrics, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def stock_run(taxi_sample, tmp_path_factory):
  output = tmp_path_factory.mktemp('stock-run')
  result = run_cli(['run', '--set', f'data.path={taxi_sample}', '--set',
                    'beam.fast_paths=false', '--output', str(output)])
  assert result.exit_code == runner.EXIT_PUSHED, result.stderr
  return output


def _results(output: Path):
  return load_run_results(PipelineConfig(output_dir=str(output)))


def _canonical(record: bytes) -> bytes:
  """A tf.Example serialized deterministically (features in name order),
  without the features that have no value list: TFX writes a column empty
  in every row that way, the fast ExampleGen leaves it out."""
  example = tf.train.Example.FromString(record)
  features = example.features.feature
  for name in [name for name, feature in features.items()
               if feature.WhichOneof('kind') is None]:
    del features[name]
  return example.SerializeToString(deterministic=True)


def _examples(output: Path):
  """Each split's tf.Examples, canonical, as a multiset."""
  examples = _results(output).component(pipeline_def.EXAMPLE_GEN).output(
      'examples')
  splits = {}
  for split in ('train', 'eval'):
    files = tf.io.gfile.glob(f'{examples.uri}/Split-{split}/*.gz')
    assert files, f'no {split} files under {examples.uri}'
    splits[split] = collections.Counter(
        _canonical(record.numpy()) for record in tf.data.TFRecordDataset(
            files, compression_type='GZIP'))
  return splits


def _typeless_features(output: Path) -> set:
  """The features that no example of the run has a value list for."""
  examples = _results(output).component(pipeline_def.EXAMPLE_GEN).output(
      'examples')
  files = tf.io.gfile.glob(f'{examples.uri}/Split-*/*.gz')
  typed, seen = set(), set()
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    for name, feature in tf.train.Example.FromString(
        record.numpy()).features.feature.items():
      seen.add(name)
      if feature.WhichOneof('kind') is not None:
        typed.add(name)
  return seen - typed


def _schema(output: Path) -> schema_pb2.Schema:
  artifact = _results(output).component(pipeline_def.SCHEMA_GEN).output(
      'schema')
  return text_format.Parse(
      Path(artifact.uri, 'schema.pbtxt').read_text(), schema_pb2.Schema())


def test_stock_and_fast_runs_split_encode_and_bless_alike(taxi_run,
                                                           stock_run):
  fast_result, fast = taxi_run
  assert fast_result.exit_code == runner.EXIT_PUSHED, fast_result.stderr
  fast_examples, stock_examples = _examples(fast), _examples(stock_run)
  # The same rows in each split, with the same features and values.
  for split in ('train', 'eval'):
    assert sum(fast_examples[split].values()) == sum(
        stock_examples[split].values())
    assert fast_examples[split] == stock_examples[split], split
  # TFX's ExampleGen writes a column empty in every row as a feature
  # without a type, which its SchemaGen keeps (BYTES, never present); the
  # fast ExampleGen leaves it out. Otherwise the schemas are the same.
  stock_schema, fast_schema = _schema(stock_run), _schema(fast)
  typeless = _typeless_features(stock_run)
  assert typeless == {'pickup_census_tract'}  # empty in the taxi sample
  kept = [f for f in stock_schema.feature if f.name not in typeless]
  del stock_schema.feature[:]
  stock_schema.feature.extend(kept)
  assert fast_schema == stock_schema
  fast_results, stock_results = _results(fast), _results(stock_run)
  assert stock_results.blessed is fast_results.blessed is True
  assert stock_results.metrics[OVERALL][RMSE] == pytest.approx(
      fast_results.metrics[OVERALL][RMSE], rel=1e-5)
  assert_same_metrics(fast_results, stock_results, rel=1e-4)


def test_each_run_used_the_executors_it_was_asked_for(taxi_run, stock_run):
  """Otherwise the comparison above would compare a path with itself."""
  _, fast = taxi_run
  assert pipeline_def.implementation(PipelineConfig()) != pipeline_def.STOCK
  assert pipeline_def.implementation(_stock_config()) == pipeline_def.STOCK
  steps = (pipeline_def.EXAMPLE_GEN, pipeline_def.STATISTICS_GEN,
           pipeline_def.TRANSFORM, pipeline_def.EVALUATOR)
  fast_types, stock_types = _component_types(fast), _component_types(
      stock_run)
  for step in steps:
    assert fast_types[step].startswith('tfx_e2e.components.executors.'), (
        fast_types[step])
  # TFX's own components; the Evaluator with the served-model baseline rule
  # around TFX's executor (components/served_baseline.py).
  assert {step: stock_types[step] for step in steps} == {
      pipeline_def.EXAMPLE_GEN:
          'tfx.components.example_gen.component.FileBasedExampleGen',
      pipeline_def.STATISTICS_GEN:
          'tfx.components.statistics_gen.component.StatisticsGen',
      pipeline_def.TRANSFORM: 'tfx.components.transform.component.Transform',
      pipeline_def.EVALUATOR: 'tfx_e2e.components.served_baseline.Evaluator'}


def _stock_config() -> PipelineConfig:
  config = PipelineConfig()
  config.beam.fast_paths = False
  return config


def _component_types(output: Path):
  """Each node's component type, as TFX recorded it in MLMD."""
  config = PipelineConfig(output_dir=str(output))
  prefix = f'{config.pipeline_name}.'
  store = results_lib.open_store(config.metadata_path)
  types = {}
  for execution in store.get_executions():
    for context in store.get_contexts_by_execution(execution.id):
      if context.type == 'node' and context.name.startswith(prefix):
        types[context.name[len(prefix):]] = (
            store.get_execution_types_by_id([execution.type_id])[0].name)
  return types


def test_other_library_versions_fall_back_to_stock_with_one_warning(
    monkeypatch, caplog):
  installed = dict(executors.WRITTEN_FOR, tfx='1.17.0')
  assert executors.mismatches(installed) == [
      'tfx 1.17.0 (written for 1.16.0)']
  assert executors.mismatches(dict(executors.WRITTEN_FOR)) == []
  assert 'not installed' in executors.mismatches(
      {k: v for k, v in executors.WRITTEN_FOR.items() if k != 'tfx-bsl'})[0]

  monkeypatch.setattr(executors, '_installed', installed.get)
  executors.usable.cache_clear()
  try:
    with caplog.at_level(logging.WARNING, logger=executors.__name__):
      assert pipeline_def.implementation(PipelineConfig()) == (
          pipeline_def.STOCK)
      assert pipeline_def.implementation(PipelineConfig()) == (
          pipeline_def.STOCK)
    warnings = [r for r in caplog.records if r.name == executors.__name__]
    assert len(warnings) == 1
    assert 'tfx 1.17.0 (written for 1.16.0)' in warnings[0].getMessage()
  finally:
    executors.usable.cache_clear()
