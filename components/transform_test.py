"""FileBatchedRecords reads the same RecordBatches as tfx-bsl's
TFExampleRecord, and Transform's executor uses it for tf.Examples."""

import apache_beam as beam
from google.protobuf import text_format
from apache_beam.testing import util as beam_testing
import pyarrow as pa
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.tfxio import tf_example_record

from components import transform


def _example(i: int) -> bytes:
  feature = {'id': tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))}
  if i % 3:  # some rows without a name
    feature['name'] = tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[f'n{i}'.encode()]))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


@pytest.mark.parametrize('raw_column', [None, 'raw'])
def test_the_same_record_batches_as_tfx_bsl(tmp_path, raw_column):
  for part, ids in enumerate((range(0, 25), range(25, 32))):
    with tf.io.TFRecordWriter(str(tmp_path / f'part-{part}.gz'),
                              tf.io.TFRecordOptions(
                                  compression_type='GZIP')) as writer:
      for i in ids:
        writer.write(_example(i))
  pattern = str(tmp_path / 'part-*')
  schema = text_format.Parse(
      'feature { name: "id" type: INT } feature { name: "name" type: BYTES }',
      schema_pb2.Schema())
  ours = transform.FileBatchedRecords(
      pattern, schema=schema, raw_record_column_name=raw_column)
  theirs = tf_example_record.TFExampleRecord(
      pattern, schema=schema, raw_record_column_name=raw_column)
  assert ours.ArrowSchema() == theirs.ArrowSchema()

  @beam.ptransform_fn
  def rows(pipeline, tfxio):  # one table of every row, sorted by id
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
