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
import itertools
import json
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.ml.inference import base as inference_base
from apache_beam.options.pipeline_options import PipelineOptions
from google.protobuf import message as protobuf_message
import numpy as np
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
  ((keys, pass-through columns), [serialized tf.Example, ...]); rows that
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

  def _dead_letters(self, path: str, bad: Sequence[Tuple[int, str, str]]):
    self._dead.inc(len(bad))
    for line, raw, error in sorted(bad):
      yield beam.pvalue.TaggedOutput(
          self.DEAD, prediction.dead_letter(path, line, raw, error))

  def _chunks(self, keys: Sequence[str], columns: Sequence[Sequence[str]],
              examples: Sequence[bytes]):
    # The keys and pass-through values travel with their examples through
    # RunInference.
    for start in range(0, len(keys), self.CHUNK_ROWS):
      end = start + self.CHUNK_ROWS
      yield (list(keys[start:end]), [list(c[start:end]) for c in columns]), (
          list(examples[start:end]))


class ParseCsvFile(_ParseFile):
  """CSV files, .gz/.bz2 ones too, parsed column by column; a file that is
  not UTF-8 is one dead letter."""

  def process(self, readable: fileio.ReadableFile) -> Iterable:
    path = readable.metadata.path
    # ReadableFile.read_utf8() fails on compressed files in Beam 2.59.
    with readable.open() as f:
      data = b''.join(iter(lambda: f.read(1 << 20), b''))
    try:
      table = prediction.read_csv(data)
    except ValueError as e:  # the whole file is one dead letter
      self._read.inc()
      yield from self._dead_letters(path, [(1, '', str(e))])
      return
    self._read.inc(len(table) + len(table.bad_rows))
    examples, errors = prediction.encode_examples(table, self._types)
    encoded = np.setdiff1d(np.arange(len(table)), list(errors))
    keys = np.array(table.values(self._id_column) if self._id_column else
                    [f'{path}:{line}' for line in table.line_numbers],
                    dtype=object)
    keep = keys[encoded] != ''  # no value in the id column
    for index in encoded[~keep]:
      errors[int(index)] = f'no value in the id column {self._id_column!r}'
    good = encoded[keep]
    lines = table.line_numbers
    yield from self._dead_letters(path, table.bad_rows + [
        (int(lines[i]), table.raw(int(lines[i])), error)
        for i, error in errors.items()])
    columns = [np.array(table.values(c), dtype=object)[good]
               for c in self._passthrough]
    yield from self._chunks(keys[good], columns,
                            np.array(examples, dtype=object)[keep])


class ParseTfRecordFile(_ParseFile):
  """TFRecords of tf.Example; the row key is the record number from 1."""

  def process(self, readable: fileio.ReadableFile) -> Iterable:
    path = readable.metadata.path
    records = tf.data.TFRecordDataset(
        path, compression_type='GZIP' if path.endswith('.gz') else '')
    keys, columns, examples, bad = [], [[] for _ in self._passthrough], [], []
    number = 0
    try:
      for number, record in enumerate(records.as_numpy_iterator(), start=1):
        raw = base64.b64encode(record).decode('ascii')
        try:
          example = tf.train.Example.FromString(record)
          prediction.check_example(example, self._types)
        except (ValueError, protobuf_message.DecodeError) as e:
          bad.append((number, raw, f'not a valid tf.Example: {e}'))
          continue
        values = self._values(example)
        key = values.get(self._id_column, '') if self._id_column else (
            f'{path}:{number}')
        if key == '':
          bad.append((number, raw,
                      f'no value in the id column {self._id_column!r}'))
          continue
        keys.append(key)
        for column, name in zip(columns, self._passthrough):
          column.append(values.get(name, ''))
        examples.append(record)
    except tf.errors.OpError as e:  # e.g. a corrupt or truncated file
      number += 1
      bad.append((number, '', f'unreadable TFRecord data: {e.message}'))
    self._read.inc(number)
    yield from self._dead_letters(path, bad)
    yield from self._chunks(keys, columns, examples)

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


def output_rows(element) -> List[Tuple]:
  """key, pass-through values, prediction, model version for each row."""
  (keys, columns), (predictions, version) = element
  return list(zip(keys, *columns, predictions.tolist(),
                  itertools.repeat(version)))


def csv_lines(rows: List[Tuple]) -> str:
  """One chunk's rows as CSV lines (WriteToText adds the last newline)."""
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator='\n').writerows(rows)
  return buffer.getvalue()[:-1]


def json_lines(rows: List[Tuple], columns: List[str]) -> str:
  return '\n'.join(json.dumps(dict(zip(columns, row))) for row in rows)


def build(root: beam.Pipeline, options: BatchPredictOptions,
          input_types: Dict[str, tf.dtypes.DType]) -> None:
  """Adds the batch prediction to `root` (separate from `run` for tests)."""
  parse = ParseTfRecordFile if options.input_format == 'tfrecord' else (
      ParseCsvFile)
  parsed = (
      root
      | 'Match' >> fileio.MatchFiles(options.input_pattern)
      # Files, not rows, spread over the workers: one file per worker call.
      | 'SpreadFiles' >> beam.Reshuffle()
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
      | 'Format' >> beam.Map(output_rows)
      | 'Count' >> beam.Map(count))
  columns = [KEY, *options.passthrough, PREDICTION, MODEL_VERSION]
  if options.output_format == 'jsonl':
    lines, suffix, header = records | 'ToJson' >> beam.Map(
        json_lines, columns), '.jsonl', None
  else:
    lines, suffix, header = records | 'ToCsv' >> beam.Map(
        csv_lines), '.csv', ','.join(columns)
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
