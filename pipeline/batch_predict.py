"""`tfx-e2e predict`: batch prediction over CSV or TFRecord files as a Beam job.

    CSV files (or TFRecords of tf.Example) -> rows keyed by an id column, or
      by file and line (record number for TFRecords)
      -> tf.Examples typed as the model expects -> RunInference (tfx-bsl's
      model handler, the model's serving_default signature)
      -> sharded CSV or JSON Lines: key, pass-through columns, prediction,
         model version
    Rows that cannot be parsed or scored go to `<prefix>-dead-letters`
    (JSON Lines: file, line, raw row, error); every input row ends up in
    exactly one of the two outputs.

Beam pipeline options (runner, direct_running_mode, ...) come from the
configuration's Beam profile and from any extra command-line flags.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
from typing import Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.ml.inference import base as inference_base
from apache_beam.options.pipeline_options import PipelineOptions
from google.protobuf import message as protobuf_message
import tensorflow as tf

from pipeline import prediction

PREDICTION = 'prediction'
MODEL_VERSION = 'model_version'
KEY = 'key'
METRICS_NAMESPACE = 'tfx_e2e_predict'
INPUT_FORMATS = ('csv', 'tfrecord')


@dataclasses.dataclass(frozen=True)
class BatchPredictOptions:
  input_pattern: str
  output_prefix: str
  model_dir: str            # one SavedModel version directory
  id_column: Optional[str] = None
  passthrough: Sequence[str] = ()
  output_format: str = 'csv'  # csv | jsonl
  input_format: str = 'csv'   # csv | tfrecord (of tf.Example; .gz = GZIP)


def input_format_of(pattern: str) -> str:
  """csv, unless the pattern names TFRecord files."""
  name = pattern.lower().removesuffix('.gz')
  return 'tfrecord' if name.endswith(('.tfrecord', '.tfrecords')) else 'csv'


def counter(name: str):
  return beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)


class _ParseFile(beam.DoFn):
  """A matched file -> ((key, pass-through values), tf.Example); rows that
  cannot be parsed -> dead letters."""
  DEAD = 'dead'

  def __init__(self, input_types: Dict[str, tf.dtypes.DType],
               id_column: Optional[str], passthrough: Sequence[str]):
    self._types = input_types
    self._id_column = id_column
    self._passthrough = tuple(passthrough)
    self._read = counter('rows_read')
    self._dead = counter('rows_dead_lettered')

  def rows(self, readable: fileio.ReadableFile) -> Iterable:
    """(line, raw, {column: value} | tf.Example | error message)."""
    raise NotImplementedError

  def process(self, readable: fileio.ReadableFile) -> Iterable:
    path = readable.metadata.path
    for number, raw, row in self.rows(readable):
      self._read.inc()
      try:
        if isinstance(row, str):
          raise ValueError(row)
        values = self._values(row)
        key = values.get(self._id_column) if self._id_column else (
            f'{path}:{number}')
        if self._id_column and key in (None, ''):
          raise ValueError(f'no value in the id column {self._id_column!r}')
        example = (prediction.to_example(row, self._types)
                   if isinstance(row, dict) else row)
      except ValueError as e:
        self._dead.inc()
        yield beam.pvalue.TaggedOutput(
            self.DEAD, prediction.dead_letter(path, number, raw, str(e)))
        continue
      # The pass-through values travel with the key through RunInference.
      yield (key, tuple(values.get(c, '') for c in self._passthrough)), example

  def _values(self, row) -> Dict[str, str]:
    if isinstance(row, dict):
      return row
    values = {}
    for name in (self._id_column, *self._passthrough):
      feature = row.features.feature.get(name) if name else None
      kind = feature.WhichOneof('kind') if feature else None
      items = list(getattr(feature, kind).value) if kind else []
      if items:
        item = items[0]
        values[name] = item.decode('utf-8', 'replace') if isinstance(
            item, bytes) else str(item)
    return values


class ParseCsvFile(_ParseFile):
  """CSV files, .gz/.bz2 ones too; a file that is not UTF-8 is one dead
  letter."""

  def rows(self, readable):
    # ReadableFile.read_utf8() fails on compressed files in Beam 2.59.
    with readable.open() as f:
      data = b''.join(iter(lambda: f.read(1 << 20), b''))
    try:
      text = data.decode('utf-8')
    except UnicodeDecodeError as e:
      yield 1, '', f'not UTF-8 text: {e}'
      return
    yield from prediction.csv_rows(text)


class ParseTfRecordFile(_ParseFile):
  """TFRecords of tf.Example; the row key is the record number from 1."""

  def rows(self, readable):
    path = readable.metadata.path
    records = tf.data.TFRecordDataset(
        path, compression_type='GZIP' if path.endswith('.gz') else '')
    number = 0
    try:
      for number, record in enumerate(records.as_numpy_iterator(), start=1):
        raw = base64.b64encode(record).decode('ascii')
        try:
          example = tf.train.Example.FromString(record)
          prediction.check_example(example, self._types)
        except (ValueError, protobuf_message.DecodeError) as e:
          yield number, raw, f'not a valid tf.Example: {e}'
          continue
        yield number, raw, example
    except tf.errors.OpError as e:  # e.g. a corrupt or truncated file
      yield number + 1, '', f'unreadable TFRecord data: {e.message}'


def output_row(element, passthrough: Sequence[str]) -> Dict:
  (key, values), (log, version) = element
  result = {KEY: key}
  result.update(zip(passthrough, values))
  result.update({PREDICTION: prediction.prediction_value(log),
                 MODEL_VERSION: version})
  return result


def csv_line(record: Dict, columns: List[str]) -> str:
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator='').writerow(
      [record[c] for c in columns])
  return buffer.getvalue()


def build(root: beam.Pipeline, options: BatchPredictOptions,
          input_types: Dict[str, tf.dtypes.DType]) -> None:
  """Adds the batch prediction to `root` (separate from `run` for tests)."""
  parse = ParseTfRecordFile if options.input_format == 'tfrecord' else (
      ParseCsvFile)
  parsed = (
      root
      | 'Match' >> fileio.MatchFiles(options.input_pattern)
      | 'Read' >> fileio.ReadMatches()
      | 'Parse' >> beam.ParDo(parse(
          input_types, options.id_column, options.passthrough))
      .with_outputs(_ParseFile.DEAD, main='examples'))
  predicted = counter('rows_predicted')

  def count(element):
    predicted.inc()
    return element

  records = (
      parsed.examples
      | 'RunInference' >> inference_base.RunInference(
          inference_base.KeyedModelHandler(
              prediction.VersionedModelHandler(options.model_dir)))
      | 'Format' >> beam.Map(output_row, list(options.passthrough))
      | 'Count' >> beam.Map(count))
  columns = [KEY, *options.passthrough, PREDICTION, MODEL_VERSION]
  if options.output_format == 'jsonl':
    lines, suffix, header = records | 'ToJson' >> beam.Map(json.dumps), \
        '.jsonl', None
  else:
    lines, suffix, header = records | 'ToCsv' >> beam.Map(
        csv_line, columns), '.csv', ','.join(columns)
  _ = lines | 'Write' >> beam.io.WriteToText(
      options.output_prefix, file_name_suffix=suffix, header=header)
  _ = (parsed[_ParseFile.DEAD]
       | 'DeadToJson' >> beam.Map(json.dumps)
       | 'WriteDead' >> beam.io.WriteToText(
           f'{options.output_prefix}-dead-letters', file_name_suffix='.jsonl'))


@dataclasses.dataclass
class BatchPredictResult:
  rows_read: int
  rows_predicted: int
  rows_dead_lettered: int
  model_dir: str


def run(options: BatchPredictOptions, beam_args: List[str],
        test_pipeline: Optional[beam.Pipeline] = None) -> BatchPredictResult:
  """Runs the job to completion and returns its counts."""
  input_types = prediction.model_input_types(options.model_dir)
  root = test_pipeline or beam.Pipeline(options=PipelineOptions(beam_args))
  build(root, options, input_types)
  result = root.run()
  result.wait_until_finish()
  def value(name):
    return prediction.counter_value(result, METRICS_NAMESPACE, name)

  return BatchPredictResult(
      rows_read=value('rows_read'), rows_predicted=value('rows_predicted'),
      rows_dead_lettered=value('rows_dead_lettered'),
      model_dir=options.model_dir)
