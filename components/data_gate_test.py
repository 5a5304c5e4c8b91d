"""The data gate's verdict, `data_ok`: TFX's ExampleValidator run on real
TFDV statistics, and the one integer the pipeline's condition reads (1 only
when every validated split is free of anomalies)."""

import os

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from tfx.components.example_validator import component as tfx_validator
from tfx.types import artifact_utils
from tfx.types import channel
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import json_utils

from tfx_e2e.components import data_gate

TRAIN = pd.DataFrame({'miles': [1.0, 2.5, 3.0, 4.0],
                      'payment': ['cash', 'card', 'cash', 'card'],
                      'fare': [5.0, 7.5, 9.0, 11.0]})
SPLITS = {
    'clean': TRAIN.iloc[::-1].reset_index(drop=True),
    # A column the schema does not have.
    'new_column': TRAIN.assign(surprise=['a', 'b', 'c', 'd']),
    # A numeric column now text.
    'type_change': TRAIN.assign(miles=['1', 'two', '3', '4']),
}


@pytest.fixture(scope='module')
def statistics(tmp_path_factory):
  """Per split name, its statistics (TFDV's, from a data frame)."""
  return {name: tfdv.generate_statistics_from_dataframe(frame)
          for name, frame in dict(SPLITS, train=TRAIN).items()}


def _validate(tmp_path, statistics, splits, exclude=None):
  """The anomalies artifact of the data gate's executor on `splits` (split
  name -> which statistics), as StatisticsGen lays them out."""
  stats = standard_artifacts.ExampleStatistics()
  stats.uri = str(tmp_path / 'stats')
  stats.split_names = artifact_utils.encode_split_names(list(splits))
  for split, which in splits.items():
    os.makedirs(os.path.join(stats.uri, f'Split-{split}'))
    with open(os.path.join(stats.uri, f'Split-{split}', 'FeatureStats.pb'),
              'wb') as f:
      f.write(statistics[which].SerializeToString())
  schema = standard_artifacts.Schema()
  schema.uri = str(tmp_path / 'schema')
  os.makedirs(schema.uri)
  tfdv.write_schema_text(tfdv.infer_schema(statistics['train']),
                         os.path.join(schema.uri, 'schema.pbtxt'))
  anomalies = standard_artifacts.ExampleAnomalies()
  anomalies.uri = str(tmp_path / 'anomalies')
  properties = {}
  if exclude is not None:
    properties[standard_component_specs.EXCLUDE_SPLITS_KEY] = (
        json_utils.dumps(exclude))
  data_gate.Executor().Do(
      {standard_component_specs.STATISTICS_KEY: [stats],
       standard_component_specs.SCHEMA_KEY: [schema]},
      {standard_component_specs.ANOMALIES_KEY: [anomalies]}, properties)
  return anomalies


def _data_ok(anomalies):
  value = anomalies.mlmd_artifact.custom_properties[data_gate.DATA_OK]
  # An int, not a struct or a double: what every orchestrator hands back.
  assert value.WhichOneof('value') == 'int_value'
  return value.int_value


def test_every_split_clean(tmp_path, statistics):
  anomalies = _validate(tmp_path, statistics,
                        {'train': 'train', 'eval': 'clean'})
  assert anomalies.get_json_value_custom_property('blessed') == {
      'train': 1, 'eval': 1}
  assert _data_ok(anomalies) == 1


@pytest.mark.parametrize('bad', ['new_column', 'type_change'])
def test_one_bad_split_closes_the_gate(tmp_path, statistics, bad):
  anomalies = _validate(tmp_path, statistics,
                        {'train': 'train', 'eval': bad})
  # TFX's own verdict says the same, per split.
  assert anomalies.get_json_value_custom_property('blessed') == {
      'train': 1, 'eval': 0}
  assert _data_ok(anomalies) == 0


def test_the_bad_split_first(tmp_path, statistics):
  anomalies = _validate(tmp_path, statistics,
                        {'eval': 'type_change', 'train': 'train'})
  assert _data_ok(anomalies) == 0


def test_no_split_validated_is_no_verdict(tmp_path, statistics):
  anomalies = _validate(tmp_path, statistics,
                        {'train': 'train', 'eval': 'clean'},
                        exclude=['train', 'eval'])
  assert not anomalies.get_json_value_custom_property('blessed')
  assert _data_ok(anomalies) == 0


def test_only_validated_splits_count(tmp_path, statistics):
  anomalies = _validate(tmp_path, statistics,
                        {'train': 'train', 'eval': 'new_column'},
                        exclude=['eval'])
  assert _data_ok(anomalies) == 1


def test_the_component_is_tfx_s_with_this_executor():
  statistics = channel.Channel(type=standard_artifacts.ExampleStatistics)
  schema = channel.Channel(type=standard_artifacts.Schema)
  ours = data_gate.ExampleValidator(statistics=statistics, schema=schema)
  theirs = tfx_validator.ExampleValidator(statistics=statistics,
                                          schema=schema)
  assert ours.id == theirs.id
  assert type(ours.spec) is type(theirs.spec)  # pylint: disable=unidiomatic-typecheck
  assert ours.EXECUTOR_SPEC.executor_class is data_gate.Executor
