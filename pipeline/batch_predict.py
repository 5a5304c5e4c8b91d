"""`tfx-e2e predict`: batch prediction over CSV files as a Beam job.

    CSV files -> rows keyed by (file, line) or an id column
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

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.ml.inference import base as inference_base
from apache_beam.options.pipeline_options import PipelineOptions
import tensorflow as tf
from tfx_bsl.public.beam.run_inference import CreateModelHandler
from tfx_bsl.public.proto import model_spec_pb2

PREDICTION = 'prediction'
MODEL_VERSION = 'model_version'
KEY = 'key'
_METRICS = 'tfx_e2e_predict'


@dataclasses.dataclass(frozen=True)
class BatchPredictOptions:
  input_pattern: str
  output_prefix: str
  model_dir: str            # one SavedModel version directory
  id_column: Optional[str] = None
  passthrough: Sequence[str] = ()
  output_format: str = 'csv'  # csv | jsonl


def latest_version_dir(base_path: str) -> str:
  versions = sorted((p for p in Path(base_path).iterdir()
                     if p.name.isdigit() and (p / 'saved_model.pb').is_file()),
                    key=lambda p: int(p.name)) if Path(base_path).is_dir() \
      else []
  if not versions:
    raise FileNotFoundError(f'no pushed model version under {base_path}')
  return str(versions[-1])


def model_input_types(model_dir: str) -> Dict[str, tf.dtypes.DType]:
  """The raw features the model reads, and their types (from serving_raw)."""
  model = tf.saved_model.load(model_dir)
  if 'serving_raw' not in model.signatures:
    raise ValueError(f'{model_dir}: the model has no serving_raw signature')
  inputs = model.signatures['serving_raw'].structured_input_signature[1]
  return {name: spec.dtype for name, spec in inputs.items()}


def _feature(value: str, dtype: tf.dtypes.DType) -> tf.train.Feature:
  if dtype == tf.string:
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[value.encode('utf-8')]))
  if dtype.is_integer:
    number = float(value)
    if not number.is_integer():
      raise ValueError(f'{value!r} is not an integer')
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(number)]))
  number = float(value)  # ValueError for text
  if not math.isfinite(number):
    raise ValueError(f'{value!r} is not a finite number')
  return tf.train.Feature(float_list=tf.train.FloatList(value=[number]))


class ParseCsvFile(beam.DoFn):
  """A matched CSV file -> ((key, pass-through values), tf.Example); rows
  that cannot be parsed -> dead letters."""
  DEAD = 'dead'

  def __init__(self, input_types: Dict[str, tf.dtypes.DType],
               id_column: Optional[str], passthrough: Sequence[str]):
    self._types = input_types
    self._id_column = id_column
    self._passthrough = tuple(passthrough)
    self._read = beam.metrics.Metrics.counter(_METRICS, 'rows_read')
    self._dead = beam.metrics.Metrics.counter(_METRICS, 'rows_dead_lettered')

  def _dead_letter(self, path, line, raw, error):
    self._dead.inc()
    return beam.pvalue.TaggedOutput(self.DEAD, {
        'file': path, 'line': line, 'row': raw, 'error': error})

  def process(self, readable: fileio.ReadableFile) -> Iterable:
    path = readable.metadata.path
    text = readable.read_utf8()
    lines = text.splitlines()
    if not lines:
      return
    header = next(csv.reader([lines[0]]))
    if self._id_column and self._id_column not in header:
      for number, raw in enumerate(lines[1:], start=2):
        self._read.inc()
        yield self._dead_letter(path, number, raw,
                                f'no id column {self._id_column!r}')
      return
    for number, raw in enumerate(lines[1:], start=2):
      if not raw.strip():
        continue
      self._read.inc()
      try:
        fields = next(csv.reader([raw]))
      except csv.Error as e:
        yield self._dead_letter(path, number, raw, f'malformed CSV: {e}')
        continue
      if len(fields) != len(header):
        yield self._dead_letter(
            path, number, raw,
            f'{len(fields)} fields, but the header has {len(header)}')
        continue
      row = dict(zip(header, fields))
      example = tf.train.Example()
      try:
        for name, dtype in self._types.items():
          if row.get(name, '') != '':  # missing: imputed by the model
            example.features.feature[name].CopyFrom(
                _feature(row[name], dtype))
      except ValueError as e:
        yield self._dead_letter(path, number, raw, f'column {name!r}: {e}')
        continue
      key = row[self._id_column] if self._id_column else f'{path}:{number}'
      # The pass-through values travel with the key through RunInference.
      yield (key, tuple(row.get(c, '') for c in self._passthrough)), example


def _output_row(element, passthrough: Sequence[str], version: str) -> Dict:
  (key, values), log = element
  if log.HasField('regress_log'):
    value = log.regress_log.response.result.regressions[0].value
  else:
    outputs = log.predict_log.response.outputs
    value = float(tf.make_ndarray(next(iter(outputs.values()))).ravel()[0])
  result = {KEY: key}
  result.update(zip(passthrough, values))
  result.update({PREDICTION: value, MODEL_VERSION: version})
  return result


def _csv_line(record: Dict, columns: List[str]) -> str:
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator='').writerow(
      [record[c] for c in columns])
  return buffer.getvalue()


def build(root: beam.Pipeline, options: BatchPredictOptions,
          input_types: Dict[str, tf.dtypes.DType]) -> None:
  """Adds the batch prediction to `root` (separate from `run` for tests)."""
  version = Path(options.model_dir).name
  parsed = (
      root
      | 'Match' >> fileio.MatchFiles(options.input_pattern)
      | 'Read' >> fileio.ReadMatches()
      | 'Parse' >> beam.ParDo(ParseCsvFile(
          input_types, options.id_column, options.passthrough))
      .with_outputs(ParseCsvFile.DEAD, main='examples'))
  spec = model_spec_pb2.InferenceSpecType(
      saved_model_spec=model_spec_pb2.SavedModelSpec(
          model_path=options.model_dir, signature_name=['serving_default']))
  predictions = (
      parsed.examples
      | 'RunInference' >> inference_base.RunInference(
          inference_base.KeyedModelHandler(CreateModelHandler(spec))))
  predicted = beam.metrics.Metrics.counter(_METRICS, 'rows_predicted')

  def count(element):
    predicted.inc()
    return element

  records = (
      predictions
      | 'Format' >> beam.Map(_output_row, list(options.passthrough), version)
      | 'Count' >> beam.Map(count))
  columns = [KEY, *options.passthrough, PREDICTION, MODEL_VERSION]
  if options.output_format == 'jsonl':
    lines, suffix, header = records | 'ToJson' >> beam.Map(json.dumps), \
        '.jsonl', None
  else:
    lines, suffix, header = records | 'ToCsv' >> beam.Map(
        _csv_line, columns), '.csv', ','.join(columns)
  _ = lines | 'Write' >> beam.io.WriteToText(
      options.output_prefix, file_name_suffix=suffix, header=header)
  _ = (parsed[ParseCsvFile.DEAD]
       | 'DeadToJson' >> beam.Map(json.dumps)
       | 'WriteDead' >> beam.io.WriteToText(
           f'{options.output_prefix}-dead-letters', file_name_suffix='.jsonl'))


@dataclasses.dataclass
class BatchPredictResult:
  rows_read: int
  rows_predicted: int
  rows_dead_lettered: int
  model_dir: str


def _counter(result, name: str) -> int:
  counters = result.metrics().query(beam.metrics.MetricsFilter()
                                    .with_namespace(_METRICS)
                                    .with_name(name))['counters']
  return int(sum(c.committed or c.attempted or 0 for c in counters))


def run(options: BatchPredictOptions, beam_args: List[str],
        test_pipeline: Optional[beam.Pipeline] = None) -> BatchPredictResult:
  """Runs the job to completion and returns its counts."""
  input_types = model_input_types(options.model_dir)
  root = test_pipeline or beam.Pipeline(options=PipelineOptions(beam_args))
  build(root, options, input_types)
  result = root.run()
  result.wait_until_finish()
  return BatchPredictResult(
      rows_read=_counter(result, 'rows_read'),
      rows_predicted=_counter(result, 'rows_predicted'),
      rows_dead_lettered=_counter(result, 'rows_dead_lettered'),
      model_dir=options.model_dir)
