"""TFX's Transform, with an executor that reads tf.Examples a file at a time.

tfx-bsl's TFExampleRecord reads TFRecord files with Beam's Python reader and
hands every record to Beam as its own element before batching and decoding
them: a fifth of Transform's time at scale (1.5M rows). `FileBatchedRecords`
reads each file with TensorFlow's C++ reader in a single DoFn and decodes
batches of records there, with the same decoder, into the same RecordBatches.
Everything else (schema, tensor representations, projection) is
TFExampleRecord's.
"""

from typing import Iterator, List, Optional

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
from tfx.components.transform import component
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import executor_spec
from tfx_bsl.coders import example_coder
from tfx_bsl.tfxio import dataset_util
from tfx_bsl.tfxio import record_based_tfxio
from tfx_bsl.tfxio import tf_example_record

# Records per RecordBatch when the caller does not ask for a size: the most
# that tfx-bsl's own batching would reach.
DEFAULT_BATCH_SIZE = 1000


class _DecodeFile(beam.DoFn):
  """A TFRecord file -> RecordBatches of its decoded tf.Examples."""

  def __init__(self, batch_size: int, schema: Optional[bytes],
               raw_record_column_name: Optional[str]):
    self._batch_size = batch_size
    self._schema = schema  # serialized
    self._raw_record_column_name = raw_record_column_name
    self._decoder = None

  def setup(self):
    self._decoder = (example_coder.ExamplesToRecordBatchDecoder(self._schema)
                     if self._schema else
                     example_coder.ExamplesToRecordBatchDecoder())

  def process(self, path: str) -> Iterator[pa.RecordBatch]:
    records = tf.data.TFRecordDataset(
        path, compression_type=dataset_util.detect_compression_type(
            tf.constant([path])))
    for batch in records.batch(self._batch_size).as_numpy_iterator():
      examples = batch.tolist()
      decoded = self._decoder.DecodeBatch(examples)
      yield (decoded if self._raw_record_column_name is None else
             record_based_tfxio.AppendRawRecordColumn(
                 decoded, self._raw_record_column_name, examples))


class FileBatchedRecords(tf_example_record.TFExampleRecord):
  """TFExampleRecord whose BeamSource decodes whole files in one DoFn."""

  def BeamSource(self, batch_size: Optional[int] = None) -> beam.PTransform:
    files = sorted(path for pattern in self._file_pattern
                   for path in tf.io.gfile.glob(pattern))
    schema = self._GetSchemaForDecoding()
    decode = _DecodeFile(batch_size or DEFAULT_BATCH_SIZE,
                         schema.SerializeToString() if schema else None,
                         self.raw_record_column_name)

    @beam.ptransform_fn
    def read(pipeline_or_pcoll):
      return (pipeline_or_pcoll.pipeline
              if isinstance(pipeline_or_pcoll, beam.pvalue.PValue)
              else pipeline_or_pcoll) | 'Files' >> beam.Create(
                  files, reshuffle=True) | 'Decode' >> beam.ParDo(decode)

    return read()  # pylint: disable=no-value-for-parameter

  def _ProjectImpl(self, tensor_names: List[str]):
    projected = super()._ProjectImpl(tensor_names)
    return FileBatchedRecords(
        file_pattern=self._file_pattern,
        schema=projected._schema,  # pylint: disable=protected-access
        raw_record_column_name=self.raw_record_column_name,
        telemetry_descriptors=self.telemetry_descriptors)


class Executor(transform_executor.Executor):
  """Transform's executor, reading tf.Examples with FileBatchedRecords."""

  def _CreateTFXIO(self, dataset, schema):
    tfxio = super()._CreateTFXIO(dataset, schema)
    if type(tfxio) is not tf_example_record.TFExampleRecord:  # pylint: disable=unidiomatic-typecheck
      return tfxio
    return FileBatchedRecords(
        file_pattern=tfxio._file_pattern,  # pylint: disable=protected-access
        schema=tfxio._schema,  # pylint: disable=protected-access
        raw_record_column_name=tfxio.raw_record_column_name,
        telemetry_descriptors=tfxio.telemetry_descriptors)


class Transform(component.Transform):
  """TFX's Transform (same spec, artifacts and id) with this executor."""
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
