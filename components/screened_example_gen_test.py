"""CsvExampleGen's executors with the data gate in front (`screened`): the
input refused with the gate's message, read through its normalized copy when
the gate makes one, and left alone when the settings say it was screened
already or there are none. Real executors, stock and fast, on real CSVs."""

import glob
import os

import pytest
import tensorflow as tf
from google.protobuf import wrappers_pb2
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as keys
from tfx.utils import proto_utils

from tfx_e2e.components import screened_example_gen
from tfx_e2e.components.executors import csv_example_gen
from tfx_e2e.pipeline import input_check
from tfx_e2e.pipeline.config import DataConfig, PipelineConfig
from tfx_e2e.pipeline.input_check import InputError

HEADER = 'miles,payment,fare\n'
CLEAN = HEADER + ''.join(f'{i},{"cash" if i % 2 else "card"},{i * 2.5}\n'
                         for i in range(1, 31))
# Markers, spaces, a row without a label: read through a copy.
MARKED = CLEAN + 'NA,card,4\n 7 ,cash,?\n8,?,9.5\n'
# A label that is text: refused.
BAD = HEADER + '1,cash,cheap\n2,card,dear\n'


def _settings(input_digest=''):
  config = PipelineConfig(output_dir='/compiled/elsewhere', data=DataConfig(
      label='fare', exclude_features=[], categorical_features=[],
      slice_features=[]))
  return input_check.example_gen_settings(config, 'code', input_digest)


def _packed(message):
  custom_config = example_gen_pb2.CustomConfig()
  custom_config.custom_config.Pack(message)
  return proto_utils.proto_to_json(custom_config)


def _properties(input_base, custom_config=None, pattern='*.csv'):
  properties = {
      keys.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
      keys.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
      keys.INPUT_BASE_KEY: str(input_base),
      keys.INPUT_CONFIG_KEY: proto_utils.proto_to_json(example_gen_pb2.Input(
          splits=[example_gen_pb2.Input.Split(name='data',
                                              pattern=pattern)])),
      keys.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(
          example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
              splits=[example_gen_pb2.SplitConfig.Split(name='train',
                                                        hash_buckets=2),
                      example_gen_pb2.SplitConfig.Split(name='eval',
                                                        hash_buckets=1)]))),
  }
  if custom_config is not None:
    properties[keys.CUSTOM_CONFIG_KEY] = custom_config
  return properties


def _input(tmp_path, text, name='d.csv'):
  folder = tmp_path / 'in'
  folder.mkdir(exist_ok=True)
  (folder / name).write_text(text)
  return folder


def _pattern(properties):
  config = example_gen_pb2.Input()
  proto_utils.json_to_proto(properties[keys.INPUT_CONFIG_KEY], config)
  return [(s.name, s.pattern) for s in config.splits]


def test_a_clean_input_is_read_as_it_is(tmp_path):
  properties = _properties(_input(tmp_path, CLEAN),
                           _packed(wrappers_pb2.StringValue(
                               value=_settings())))
  assert screened_example_gen.screened(
      properties, lambda: str(tmp_path / 'w')) is properties


def test_a_marked_input_is_read_through_its_copy(tmp_path):
  properties = _properties(_input(tmp_path, MARKED),
                           _packed(wrappers_pb2.StringValue(
                               value=_settings())))
  before = dict(properties)
  work = tmp_path / 'w'
  read = screened_example_gen.screened(properties, lambda: str(work))
  assert properties == before  # the caller's dictionary as it was
  assert read[keys.INPUT_BASE_KEY].startswith(str(work.resolve()))
  assert _pattern(read) == [('data', 'data.csv')]
  copy = os.path.join(read[keys.INPUT_BASE_KEY], 'data.csv')
  with open(copy) as f:
    lines = f.read().splitlines()
  assert lines[-3:] == ['30,card,75.0', ',card,4', '8,,9.5']
  assert {k: v for k, v in read.items()
          if k not in (keys.INPUT_BASE_KEY, keys.INPUT_CONFIG_KEY)} == {
              k: v for k, v in properties.items()
              if k not in (keys.INPUT_BASE_KEY, keys.INPUT_CONFIG_KEY)}


def test_a_bad_input_is_refused_with_the_gate_s_message(tmp_path):
  folder = _input(tmp_path, BAD)
  properties = _properties(folder, _packed(wrappers_pb2.StringValue(
      value=_settings())))
  with pytest.raises(InputError) as screened:
    screened_example_gen.screened(properties, lambda: str(tmp_path / 'w'))
  with pytest.raises(InputError) as local:
    input_check.check_input(PipelineConfig(
        output_dir=str(tmp_path / 'out'), data=DataConfig(
            path=str(folder), label='fare', exclude_features=[],
            categorical_features=[], slice_features=[])))
  assert str(screened.value) == str(local.value)


@pytest.mark.parametrize('custom_config', [
    None, '',
    # Screened by the local runner before the pipeline started.
    _packed(wrappers_pb2.StringValue(value=_settings(input_digest='f00d'))),
    # Another message packed, or TFX's own free text.
    _packed(wrappers_pb2.Int64Value(value=3)),
    _packed(wrappers_pb2.StringValue(value='{"anything": "else"}')),
])
def test_nothing_to_screen_reads_nothing(tmp_path, custom_config):
  properties = _properties(tmp_path / 'does-not-exist', custom_config)
  assert screened_example_gen.screened(
      properties, lambda: str(tmp_path / 'w')) is properties
  assert not (tmp_path / 'w').exists()


def _examples(output_dir):
  """Every example the executor wrote, as (miles, payment, fare) with None
  for a missing value, sorted."""
  rows = []
  for path in glob.glob(os.path.join(output_dir, 'Split-*', '*')):
    for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
      example = tf.train.Example.FromString(record.numpy())
      row = []
      for name in ('miles', 'payment', 'fare'):
        feature = example.features.feature[name]
        values = (list(feature.int64_list.value) or
                  list(feature.float_list.value) or
                  [v.decode() for v in feature.bytes_list.value])
        row.append(values[0] if values else None)
      rows.append(tuple(row))
  return sorted(rows, key=repr)


def _executor(kind, tmp_path):
  context = base_beam_executor.BaseBeamExecutor.Context(
      tmp_dir=str(tmp_path / 'tmp'), unique_id='1')
  return kind(context)


EXECUTORS = [screened_example_gen.Executor, csv_example_gen.Executor]


@pytest.mark.parametrize('kind', EXECUTORS, ids=['stock', 'fast'])
def test_the_executors_read_the_normalized_rows(tmp_path, kind):
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'examples')
  _executor(kind, tmp_path).Do(
      {}, {keys.EXAMPLES_KEY: [examples]},
      _properties(_input(tmp_path, MARKED),
                  _packed(wrappers_pb2.StringValue(value=_settings()))))
  rows = _examples(examples.uri)
  assert len(rows) == 32  # 30 clean, 2 of 3 marked (one has no label)
  assert (None, 'card', 4.0) in rows
  assert (8, None, 9.5) in rows
  assert not [r for r in rows if r[2] is None]


@pytest.mark.parametrize('kind', EXECUTORS, ids=['stock', 'fast'])
def test_the_executors_refuse_a_bad_input(tmp_path, kind):
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'examples')
  with pytest.raises(InputError, match='fare'):
    _executor(kind, tmp_path).Do(
        {}, {keys.EXAMPLES_KEY: [examples]},
        _properties(_input(tmp_path, BAD),
                    _packed(wrappers_pb2.StringValue(value=_settings()))))
  assert not glob.glob(os.path.join(examples.uri, 'Split-*', '*'))


@pytest.mark.parametrize('kind', EXECUTORS, ids=['stock', 'fast'])
def test_an_executor_without_context_and_nothing_to_screen(tmp_path, kind):
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'examples')
  kind().Do({}, {keys.EXAMPLES_KEY: [examples]},
            _properties(_input(tmp_path, CLEAN)))
  assert len(_examples(examples.uri)) == 30
