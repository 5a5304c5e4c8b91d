"""FileBatchedRecords reads the same RecordBatches as tfx-bsl's
TFExampleRecord, from a columns file where CsvExampleGen wrote one;
StatisticsGen's executor reads with it and computes the same statistics as
TFX's."""

import apache_beam as beam
from apache_beam.testing import util as beam_testing
from google.protobuf import text_format
import pyarrow as pa
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx.components.statistics_gen import executor as tfx_statistics_gen
from tfx.components.util import tfxio_utils
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx_bsl.coders import example_coder
from tfx_bsl.tfxio import record_based_tfxio
from tfx_bsl.tfxio import tf_example_record

from tfx_e2e.components.executors import csv_example_gen
from tfx_e2e.components.executors import csv_example_gen_test
from tfx_e2e.components.executors import examples_io


def _example(i: int) -> bytes:
  feature = {'id': tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
             'score': tf.train.Feature(float_list=tf.train.FloatList(
                 value=[i / 7.0]))}
  if i % 3:  # some rows without a name
    feature['name'] = tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[f'n{i % 5}'.encode()]))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def _write(directory, parts):
  directory.mkdir(parents=True, exist_ok=True)
  for part, ids in enumerate(parts):
    with tf.io.TFRecordWriter(str(directory / f'part-{part}.gz'),
                              tf.io.TFRecordOptions(
                                  compression_type='GZIP')) as writer:
      for i in ids:
        writer.write(_example(i))


@pytest.mark.parametrize('raw_column', [None, 'raw'])
def test_the_same_record_batches_as_tfx_bsl(tmp_path, raw_column):
  _write(tmp_path, (range(0, 25), range(25, 32)))
  pattern = str(tmp_path / 'part-*')
  schema = text_format.Parse(
      'feature { name: "id" type: INT } feature { name: "name" type: BYTES }',
      schema_pb2.Schema())
  ours = examples_io.FileBatchedRecords(
      pattern, schema=schema, raw_record_column_name=raw_column)
  theirs = tf_example_record.TFExampleRecord(
      pattern, schema=schema, raw_record_column_name=raw_column)
  assert ours.ArrowSchema() == theirs.ArrowSchema()
  assert type(examples_io.file_batched(theirs)) is type(ours)  # pylint: disable=unidiomatic-typecheck

  @beam.ptransform_fn
  def rows(pipeline, tfxio):  # every row, sorted by id
    return (pipeline | tfxio.BeamSource(10)
            | beam.combiners.ToList()
            | beam.Map(lambda batches: sorted(
                pa.Table.from_batches(batches).to_pylist(),
                key=lambda row: row['id'])))

  with beam.Pipeline() as pipeline:
    ours_rows = pipeline | 'Ours' >> rows(ours)
    theirs_rows = pipeline | 'Theirs' >> rows(theirs)
    same = ((ours_rows, theirs_rows) | beam.Flatten()
            | beam.combiners.ToList()
            | beam.Map(lambda pair: pair[0] == pair[1] and len(pair[0]) == 32))
    beam_testing.assert_that(same, beam_testing.equal_to([True]))


def test_a_corrupt_file_is_named(tmp_path):
  # Not gzip at all. (A gzip file cut short is not always an error:
  # TensorFlow's reader may stop at the last whole record without one.)
  path = tmp_path / 'part-0.gz'
  path.write_bytes(b'not a TFRecord file')
  with pytest.raises(Exception, match='part-0.gz: '):
    with beam.Pipeline() as pipeline:
      _ = pipeline | examples_io.FileBatchedRecords(
          str(path), telemetry_descriptors=['test']).BeamSource(10)


def _statistics(executor, examples, output_dir):
  statistics = standard_artifacts.ExampleStatistics()
  statistics.uri = str(output_dir)
  executor.Do({standard_component_specs.EXAMPLES_KEY: [examples]},
              {standard_component_specs.STATISTICS_KEY: [statistics]},
              {standard_component_specs.EXCLUDE_SPLITS_KEY: '[]'})
  result = {}
  for split in ('train', 'eval'):
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        (output_dir / f'Split-{split}' / 'FeatureStats.pb').read_bytes())
    for dataset in stats.datasets:
      dataset.features.sort(key=lambda f: f.path.step[0])
    result[split] = stats
  return result


@pytest.fixture
def sources(monkeypatch):
  """Every FileBatchedRecords whose BeamSource is read, as it is read."""
  read = []
  beam_source = examples_io.FileBatchedRecords.BeamSource
  monkeypatch.setattr(examples_io.FileBatchedRecords, 'BeamSource',
                      lambda self, *a: read.append(self) or beam_source(
                          self, *a))
  return read


def test_statistics_gen_reads_files_whole_for_tfxs_statistics(tmp_path,
                                                              sources):
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'examples')
  examples.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  _write(tmp_path / 'examples' / 'Split-train', (range(0, 60), range(60, 90)))
  _write(tmp_path / 'examples' / 'Split-eval', (range(90, 120),))
  make_tfxio = tfxio_utils.make_tfxio
  ours = _statistics(examples_io.StatisticsGenExecutor(), examples,
                     tmp_path / 'ours')
  assert len(sources) == 2  # a split each
  assert tfxio_utils.make_tfxio is make_tfxio  # put back after Do
  theirs = _statistics(tfx_statistics_gen.Executor(), examples,
                       tmp_path / 'theirs')
  assert ours == theirs
  assert ours['train'].datasets[0].num_examples == 90


@pytest.fixture(scope='module')
def csv_examples(tmp_path_factory):
  """The record files of the CSV of csv_example_gen_test, written by this
  project's CsvExampleGen (with their columns files)."""
  root = tmp_path_factory.mktemp('examples')
  (root / 'in').mkdir()
  (root / 'in' / 'data.csv').write_bytes(csv_example_gen_test.CSV.encode())
  _, examples = csv_example_gen_test.run_executor(
      csv_example_gen.Executor(), root / 'in', root / 'out')
  files = sorted(str(p) for p in (root / 'out').glob('Split-*/*'))
  assert len(files) == 2
  return examples, files


def _decoded(path, schema=None, raw_column=None, batch_size=7):
  """(what _DecodeFile yields, what tfx-bsl's decoder decodes), as lists of
  RecordBatches, and whether _DecodeFile read the columns file."""
  serialized = schema.SerializeToString() if schema else None
  decode = examples_io._DecodeFile(batch_size, serialized, raw_column)  # pylint: disable=protected-access
  decode.setup()
  used_columns = decode._columns(path) is not None  # pylint: disable=protected-access
  ours = list(decode.process(path))
  decoder = (example_coder.ExamplesToRecordBatchDecoder(serialized)
             if schema else example_coder.ExamplesToRecordBatchDecoder())
  theirs = []
  for batch in tf.data.TFRecordDataset(path, 'GZIP').batch(batch_size):
    records = batch.numpy().tolist()
    decoded = decoder.DecodeBatch(records)
    theirs.append(decoded if raw_column is None else
                  record_based_tfxio.AppendRawRecordColumn(
                      decoded, raw_column, records))
  return ours, theirs, used_columns


def _schema(text):
  return text_format.Parse(text, schema_pb2.Schema())


@pytest.mark.parametrize('schema, raw_column', [
    (None, None),
    (None, 'raw'),
    # Not in the order of the file's columns, and not all of them.
    (_schema('feature { name: "ratio" type: FLOAT } '
             'feature { name: "count" type: INT } '
             'feature { name: "name" type: BYTES }'), None),
    (_schema('feature { name: "code" type: BYTES }'), 'raw'),
])
def test_columns_files_give_the_decoders_record_batches(csv_examples, schema,
                                                        raw_column):
  for path in csv_examples[1]:
    ours, theirs, used_columns = _decoded(path, schema, raw_column)
    assert used_columns
    assert len(ours) == len(theirs) > 1
    for our_batch, their_batch in zip(ours, theirs):
      assert our_batch.schema == their_batch.schema
      assert our_batch.equals(their_batch)


def test_without_a_matching_columns_file_records_are_decoded(csv_examples,
                                                             tmp_path):
  _, (evaluation, train) = csv_examples
  # A feature the file does not have: the decoder's null column.
  ours, theirs, used_columns = _decoded(train, _schema(
      'feature { name: "count" type: INT } '
      'feature { name: "elsewhere" type: FLOAT }'))
  assert not used_columns
  assert [b.to_pylist() for b in ours] == [b.to_pylist() for b in theirs]
  # A type the file does not have: the decoder's error.
  with pytest.raises(Exception, match='wrong type'):
    _decoded(train, _schema('feature { name: "count" type: FLOAT }'))
  # The columns of another record file.
  copy = tmp_path / 'Split-train' / 'data.gz'
  copy.parent.mkdir()
  copy.write_bytes(open(train, 'rb').read())
  (tmp_path / 'columns' / 'Split-train').mkdir(parents=True)
  (tmp_path / 'columns' / 'Split-train' / 'data.gz.arrow').write_bytes(
      open(examples_io.columns_path(evaluation), 'rb').read())
  ours, theirs, used_columns = _decoded(str(copy))
  assert not used_columns
  assert [b.to_pylist() for b in ours] == [b.to_pylist() for b in theirs]
  # A columns file that cannot be read.
  (tmp_path / 'columns' / 'Split-train' / 'data.gz.arrow').write_bytes(
      b'not an Arrow file')
  ours, theirs, used_columns = _decoded(str(copy))
  assert not used_columns
  assert [b.to_pylist() for b in ours] == [b.to_pylist() for b in theirs]


def _z_score(inputs):
  """The preprocessing_fn of the test below."""
  return {'count_z': tft.scale_to_z_score(tf.reshape(tf.sparse.reduce_sum(
      tf.cast(inputs['count'], tf.float32), axis=1), [-1]))}


def test_transform_reads_through_file_batched_records(csv_examples, tmp_path,
                                                      sources):
  examples, _ = csv_examples
  schema = standard_artifacts.Schema()
  schema.uri = str(tmp_path / 'schema')
  (tmp_path / 'schema').mkdir()
  (tmp_path / 'schema' / 'schema.pbtxt').write_text(
      'feature { name: "count" type: INT }')
  graph = standard_artifacts.TransformGraph()
  graph.uri = str(tmp_path / 'graph')
  make_tfxio = tfxio_utils.make_tfxio
  examples_io.TransformExecutor().Do(
      {standard_component_specs.EXAMPLES_KEY: [examples],
       standard_component_specs.SCHEMA_KEY: [schema]},
      {standard_component_specs.TRANSFORM_GRAPH_KEY: [graph]},
      {standard_component_specs.PREPROCESSING_FN_KEY:
           f'{__name__}._z_score',
       standard_component_specs.FORCE_TF_COMPAT_V1_KEY: 1,
       standard_component_specs.DISABLE_STATISTICS_KEY: 1})
  assert sources  # the training split, read through FileBatchedRecords
  assert tfxio_utils.make_tfxio is make_tfxio  # put back after Do
  assert tft.TFTransformOutput(graph.uri).transformed_feature_spec() == {
      'count_z': tf.io.FixedLenFeature([], tf.float32)}


def test_batches_from_columns_hold_only_their_rows(csv_examples):
  _, files = csv_examples
  ours, theirs, used_columns = _decoded(files[0], batch_size=7)
  assert used_columns
  for our_batch, their_batch in zip(ours, theirs):
    # A slice of the whole file's columns would hold (and pickle) all of
    # them.
    assert our_batch.get_total_buffer_size() == (
        their_batch.get_total_buffer_size())
