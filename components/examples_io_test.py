"""FileBatchedRecords reads the same RecordBatches as tfx-bsl's
TFExampleRecord; StatisticsGen's executor reads with it and computes the
same statistics as TFX's."""

import apache_beam as beam
from apache_beam.testing import util as beam_testing
from google.protobuf import text_format
import pyarrow as pa
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx.components.statistics_gen import executor as tfx_statistics_gen
from tfx.components.util import tfxio_utils
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx_bsl.tfxio import tf_example_record

from components import examples_io


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


def test_statistics_gen_reads_files_whole_for_tfxs_statistics(tmp_path,
                                                              monkeypatch):
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'examples')
  examples.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  _write(tmp_path / 'examples' / 'Split-train', (range(0, 60), range(60, 90)))
  _write(tmp_path / 'examples' / 'Split-eval', (range(90, 120),))
  sources = []
  beam_source = examples_io.FileBatchedRecords.BeamSource
  monkeypatch.setattr(examples_io.FileBatchedRecords, 'BeamSource',
                      lambda self, *a: sources.append(self) or beam_source(
                          self, *a))
  make_tfxio = tfxio_utils.make_tfxio
  ours = _statistics(examples_io.StatisticsGenExecutor(), examples,
                     tmp_path / 'ours')
  assert len(sources) == 2  # a split each
  assert tfxio_utils.make_tfxio is make_tfxio  # put back after Do
  theirs = _statistics(tfx_statistics_gen.Executor(), examples,
                       tmp_path / 'theirs')
  assert ours == theirs
  assert ours['train'].datasets[0].num_examples == 90
