"""The column-wise CsvExampleGen executor against TFX's own, on one CSV."""

import functools
import glob
import hashlib
import os

from google.protobuf import text_format
import pyarrow as pa
import pytest
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as tfx_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import proto_utils
from tfx_bsl.coders import example_coder

from tfx_e2e.components.executors import csv_example_gen
from tfx_e2e.formats import csv_rules

# Empty values in every type, a column of ints with one float (-> float),
# numbers as text in a string column, quoted commas, CRLF line ends, blank
# lines, a column empty in every row, and duplicate rows.
CSV = (
    'count,ratio,name,code,mixed,nothing\r\n'
    '1,0.5,"Smith, J",007,1,\r\n'
    ',2,plain,12,2.5,\r\n'
    '\r\n'
    '3,,"",x1,,\r\n'
    '-4,1e3,"say ""hi""",13,7,\r\n'
    '1,0.5,"Smith, J",007,1,\r\n'
) + ''.join(f'{i},{i / 4},row{i},{i % 7},{i},\r\n' for i in range(5, 60))


def run_executor(executor, input_dir, output_dir):
  """Each split's examples (as text) in the order of the files, and the
  output artifact."""
  examples = standard_artifacts.Examples()
  examples.uri = str(output_dir)
  executor.Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, {
      # The component's defaults.
      standard_component_specs.OUTPUT_DATA_FORMAT_KEY:
          example_gen_pb2.FORMAT_TF_EXAMPLE,
      standard_component_specs.OUTPUT_FILE_FORMAT_KEY:
          example_gen_pb2.FORMAT_TFRECORDS_GZIP,
      standard_component_specs.INPUT_BASE_KEY: str(input_dir),
      standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(
          example_gen_pb2.Input(splits=[
              example_gen_pb2.Input.Split(name='data', pattern='*.csv')])),
      standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(
          example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
              splits=[
                  example_gen_pb2.SplitConfig.Split(name='train',
                                                    hash_buckets=2),
                  example_gen_pb2.SplitConfig.Split(name='eval',
                                                    hash_buckets=1)]))),
  })
  splits = {}
  for split in ('train', 'eval'):
    files = sorted(glob.glob(os.path.join(output_dir, f'Split-{split}', '*')))
    splits[split] = [
        str(tf.train.Example.FromString(record.numpy()))
        for record in tf.data.TFRecordDataset(files, compression_type='GZIP')]
  return splits, examples


def _without(example_text, feature):
  example = text_format.Parse(example_text, tf.train.Example())
  del example.features.feature[feature]
  return str(example)


@pytest.fixture(scope='module')
def outputs(tmp_path_factory):
  root = tmp_path_factory.mktemp('csv')
  (root / 'in').mkdir()
  (root / 'in' / 'data.csv').write_bytes(CSV.encode())
  ours, ours_artifact = run_executor(csv_example_gen.Executor(),
                                     root / 'in', root / 'ours')
  again, _ = run_executor(csv_example_gen.Executor(), root / 'in',
                          root / 'again')
  theirs, theirs_artifact = run_executor(tfx_executor.Executor(),
                                         root / 'in', root / 'theirs')
  return ours, again, theirs, (ours_artifact, theirs_artifact)


def test_the_same_examples_as_tfx(outputs):
  ours, _, theirs, _ = outputs
  everything = sorted(ours['train'] + ours['eval'])
  assert len(everything) == 60
  # TFX writes the all-empty column as a feature without a type; it is
  # left out here.
  assert everything == sorted(_without(e, 'nothing')
                              for e in theirs['train'] + theirs['eval'])


def test_types_are_inferred_as_tfx_does(outputs):
  ours, _, _, _ = outputs
  feature = text_format.Parse(
      next(e for e in ours['train'] + ours['eval'] if 'say' in e),
      tf.train.Example()).features.feature
  assert feature['count'].int64_list.value == [-4]
  assert feature['ratio'].float_list.value == [1000.0]
  assert feature['name'].bytes_list.value == [b'say "hi"']
  assert feature['code'].bytes_list.value == [b'13']  # 'x1' makes it text
  assert feature['mixed'].float_list.value == [7.0]  # 2.5 makes it float


def test_each_range_writes_a_whole_file_in_each_split(outputs, tmp_path,
                                                     monkeypatch):
  ours, _, _, _ = outputs
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'data.csv').write_bytes(CSV.encode())
  monkeypatch.setattr(csv_example_gen, 'byte_ranges', functools.partial(
      csv_example_gen.byte_ranges, range_bytes=400))
  ranged, _ = run_executor(csv_example_gen.Executor(), tmp_path / 'in',
                   tmp_path / 'out')
  assert sorted(ranged['train']) == sorted(ours['train'])
  assert sorted(ranged['eval']) == sorted(ours['eval'])
  count = -(-len(CSV) // 400)
  for split in ('train', 'eval'):
    assert sorted(os.listdir(tmp_path / 'out' / f'Split-{split}')) == [
        f'data_tfrecord-{i:05d}-of-{count:05d}.gz' for i in range(count)]
    assert sorted(os.listdir(tmp_path / 'out' / 'columns' / f'Split-{split}')
                  ) == [f'data_tfrecord-{i:05d}-of-{count:05d}.gz.arrow'
                        for i in range(count)]
  # Nothing staged is left behind.
  assert sorted(os.listdir(tmp_path / 'out')) == ['Split-eval',
                                                  'Split-train', 'columns']


def test_the_artifact_names_its_splits_and_formats(outputs):
  ours, theirs = outputs[3]
  for key in ('split_names', 'payload_format', 'file_format'):
    assert ours.get_string_custom_property(key) == (
        theirs.get_string_custom_property(key)), key
  assert ours.split_names == '["train", "eval"]'


def test_rows_are_shuffled_the_same_way_in_every_run(outputs):
  ours, again, _, _ = outputs
  # Written without TFX's global reshuffle: within a range, rows are in a
  # fixed random order.
  assert ours['train'] == again['train'] and ours['eval'] == again['eval']
  data_rows = [e for e in ours['train'] if 'row' in e]
  assert data_rows != sorted(data_rows, key=lambda e: int(
      e.split('row')[1].split('"')[0]))


def test_each_row_lands_in_the_split_tfx_puts_it_in(outputs):
  ours, again, theirs, _ = outputs
  assert ours['train'] and ours['eval']
  # Identical lines land in the same split.
  smith = [split for split, examples in ours.items()
           for e in examples if 'Smith' in e]
  assert len(smith) == 2 and smith[0] == smith[1]
  # TFX hashes each row's tf.Example, serialized deterministically, with
  # the all-empty column in it as a feature without a type: the split of
  # every row is TFX's, the typeless column included in the hash.
  for split in ('train', 'eval'):
    assert sorted(ours[split]) == sorted(
        _without(e, 'nothing') for e in theirs[split]), split
  # TFX's rule, as base_example_gen_executor._PartitionFn writes it.
  for key in (b'1,0.5', b'', b'x' * 1000):
    assert csv_example_gen.bucket(key, 1000003) == int(
        hashlib.sha256(key).hexdigest(), 16) % 1000003


@pytest.mark.parametrize('range_bytes', [40, 200, 10**6])
def test_byte_ranges_hold_every_line_once(tmp_path, range_bytes):
  path = tmp_path / 'data.csv'
  path.write_bytes(CSV.encode())
  lines = []
  for byte_range in csv_example_gen.byte_ranges(str(path), range_bytes):
    range_lines, columns = csv_example_gen.parse_range(*byte_range)
    assert all(len(c) == len(range_lines) for c in columns.values())
    lines += range_lines
  expected = [line.rstrip('\r').encode()
              for line in CSV.split('\n')[1:] if line.rstrip('\r')]
  assert lines == expected


def test_a_quoted_newline_is_refused_with_the_file_named(tmp_path):
  path = tmp_path / 'data.csv'
  path.write_bytes(b'a,b\n1,"two\nlines"\n')
  with pytest.raises(ValueError, match='data.csv: bytes 0-.*spanning lines'):
    csv_example_gen.parse_range(str(path), 0, path.stat().st_size)


def test_lines_may_end_in_a_lone_carriage_return(tmp_path):
  path = tmp_path / 'data.csv'
  path.write_bytes(b'a,b\r1,x\r\r2,y\r')
  lines, columns = csv_example_gen.parse_range(str(path), 0,
                                               path.stat().st_size)
  assert lines == [b'1,x', b'2,y']
  assert columns['b'].to_pylist() == ['x', 'y']


@pytest.mark.parametrize('last, kind', [
    ('7', csv_example_gen.INT), ('2.5', csv_example_gen.FLOAT),
    ('x', csv_example_gen.STRING)])
def test_a_value_beyond_the_type_sample_decides_the_type(last, kind):
  values = ['', '1'] * csv_rules.TYPE_SAMPLE + [last]
  assert csv_example_gen.column_type(pa.array(values)) == kind


def test_examples_are_encoded_as_tfx_bsl_encodes_them():
  # Each type with and without missing values; varints of every size (a
  # negative int takes ten bytes); NaN, infinity and -0.0; strings whose
  # lengths take one, two and three varint bytes; a name beyond ASCII.
  rows = 10
  batch = pa.RecordBatch.from_arrays([
      pa.array([[v] for v in [0, 1, -1, 127, 128, 16383, 16384, 2**35,
                              -2**63, 2**63 - 1]], pa.list_(pa.int64())),
      pa.array([[1.5], [], [float('nan')], [float('inf')], [-0.0], [],
                [3e38], [-1e-3], [], [2.0]], pa.list_(pa.float32())),
      pa.array([[b'x'], [], [b'a' * 200], [b'b' * 20000], [], [b'\xff\0'],
                [b'c'], [], [b'd'], [b'e']], pa.list_(pa.binary())),
      pa.array([[], [5], [], [-7]] + [[]] * 6, pa.list_(pa.int64())),
      pa.array([[]] * rows, pa.list_(pa.float32())),
  ], ['count', 'ratio', 'name', 'čas', 'nothing'])
  ours = csv_example_gen.record_batch_to_examples(batch)
  theirs = example_coder.RecordBatchToExamples(batch)
  # The same message, and the same size: only the features' order differs.
  assert [len(record) for record in ours] == [len(r) for r in theirs]
  canonical = lambda record: tf.train.Example.FromString(
      record).SerializeToString(deterministic=True)
  assert [canonical(r) for r in ours] == [canonical(r) for r in theirs]
  with pytest.raises(ValueError, match='name: more than one value'):
    csv_example_gen.record_batch_to_examples(pa.RecordBatch.from_arrays(
        [pa.array([[b'a', b'b']], pa.list_(pa.binary()))], ['name']))
