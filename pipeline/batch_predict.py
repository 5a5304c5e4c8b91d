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
  """A matched file -> chunks of up to CHUNK_ROWS rows, each one element:
  ((keys, pass-through rows), [serialized tf.Example, ...]); rows that
  cannot be parsed -> dead letters."""
  DEAD = 'dead'
  CHUNK_ROWS = 1024

  def __init__(self, input_types: Dict[str, tf.dtypes.DType],
               id_column: Optional[str], passthrough: Sequence[str]):
    self._types = input_types
    self._id_column = id_column
    self._passthrough = tuple(passthrough)
    self._read = counter('rows_read')
    self._dead = counter('rows_dead_lettered')

  def rows(self, path: str, readable: fileio.ReadableFile) -> Iterable:
    """(line, raw, {column: value} or an error, serialized tf.Example or
    None) for each row of the file."""
    raise NotImplementedError

  def process(self, readable: fileio.ReadableFile) -> Iterable:
    path = readable.metadata.path
    keys, values, examples = [], [], []
    for number, raw, fields, example in self.rows(path, readable):
      self._read.inc()
      if isinstance(fields, dict):
        key = fields.get(self._id_column, '') if self._id_column else (
            f'{path}:{number}')
        if key == '':
          fields = f'no value in the id column {self._id_column!r}'
      if isinstance(fields, str):
        self._dead.inc()
        yield beam.pvalue.TaggedOutput(
            self.DEAD, prediction.dead_letter(path, number, raw, fields))
        continue
      keys.append(key)
      values.append(tuple(fields.get(c, '') for c in self._passthrough))
      examples.append(example)
      if len(keys) == self.CHUNK_ROWS:
        # The keys and pass-through values travel with their examples
        # through RunInference.
        yield (keys, values), examples
        keys, values, examples = [], [], []
    if keys:
      yield (keys, values), examples


class ParseCsvFile(_ParseFile):
  """CSV files, .gz/.bz2 ones too; a file that is not UTF-8 is one dead
  letter."""

  def rows(self, path, readable):
    # ReadableFile.read_utf8() fails on compressed files in Beam 2.59.
    with readable.open() as f:
      data = b''.join(iter(lambda: f.read(1 << 20), b''))
    try:
      text = data.decode('utf-8')
    except UnicodeDecodeError as e:
      yield 1, '', f'not UTF-8 text: {e}', None
      return
    header, rows = prediction.csv_rows(text)
    parsed = [i for i, (_, _, fields) in enumerate(rows)
              if not isinstance(fields, str)]
    examples, errors = prediction.encode_examples(
        header, [rows[i][2] for i in parsed], self._types)
    errors = {parsed[i]: error for i, error in errors.items()}
    examples = iter(examples)
    for index, (number, raw, fields) in enumerate(rows):
      if isinstance(fields, str) or index in errors:
        yield number, raw, errors.get(index, fields), None
      else:
        yield number, raw, dict(zip(header, fields)), next(examples)


class ParseTfRecordFile(_ParseFile):
  """TFRecords of tf.Example; the row key is the record number from 1."""

  def rows(self, path, readable):
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
          yield number, raw, f'not a valid tf.Example: {e}', None
          continue
        yield number, raw, self._values(example), record
    except tf.errors.OpError as e:  # e.g. a corrupt or truncated file
      yield number + 1, '', f'unreadable TFRecord data: {e.message}', None

  def _values(self, example: tf.train.Example) -> Dict[str, str]:
    """The id and pass-through features, as text."""
    values = {}
    for name in (self._id_column, *self._passthrough):
      feature = example.features.feature.get(name) if name else None
      kind = feature.WhichOneof('kind') if feature else None
      items = list(getattr(feature, kind).value) if kind else []
      if items:
        item = items[0]
        values[name] = item.decode('utf-8', 'replace') if isinstance(
            item, bytes) else str(item)
    return values


def output_records(element, passthrough: Sequence[str]) -> List[Dict]:
  (keys, values), (predictions, version) = element
  return [dict(zip(passthrough, row), **{
      KEY: key, PREDICTION: float(value), MODEL_VERSION: version})
          for key, row, value in zip(keys, values, predictions)]


def csv_lines(records: List[Dict], columns: List[str]) -> str:
  """One chunk's records as CSV lines (WriteToText adds the last newline)."""
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator='\n').writerows(
      [record[c] for c in columns] for record in records)
  return buffer.getvalue()[:-1]


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

  def count(chunk):
    predicted.inc(len(chunk))
    return chunk

  records = (
      parsed.examples
      | 'RunInference' >> inference_base.RunInference(
          inference_base.KeyedModelHandler(prediction.VersionedModelHandler(
              options.model_dir, max_batch_size=8)))  # chunks: 8k rows
      | 'Format' >> beam.Map(output_records, list(options.passthrough))
      | 'Count' >> beam.Map(count))
  columns = [KEY, *options.passthrough, PREDICTION, MODEL_VERSION]
  if options.output_format == 'jsonl':
    lines, suffix, header = records | 'ToJson' >> beam.Map(
        lambda chunk: '\n'.join(map(json.dumps, chunk))), '.jsonl', None
  else:
    lines, suffix, header = records | 'ToCsv' >> beam.Map(
        csv_lines, columns), '.csv', ','.join(columns)
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
