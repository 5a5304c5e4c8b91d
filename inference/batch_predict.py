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
import glob
import io
import itertools
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference import base as inference_base
from google.protobuf import message as protobuf_message
import numpy as np
import tensorflow as tf

from tfx_e2e.formats import csv_rules as csv_rules_lib
from tfx_e2e.pipeline import worker_marks
from tfx_e2e.inference import jobs
from tfx_e2e.inference import prediction

PREDICTION = 'prediction'
MODEL_VERSION = 'model_version'
KEY = 'key'
METRICS_NAMESPACE = 'tfx_e2e_predict'


@dataclasses.dataclass(frozen=True)
class BatchPredictOptions:
  input_pattern: str
  output_prefix: str
  model_dir: str            # one SavedModel version directory
  id_column: Optional[str] = None
  passthrough: Sequence[str] = ()
  output_format: str = 'csv'  # csv | jsonl
  input_format: str = 'csv'   # csv | tfrecord (of tf.Example; .gz = GZIP)
  # Predict CSV files that lack some of the model's columns, which the
  # model then imputes in every row; without it such a file is refused.
  allow_missing_columns: bool = False
  # How CSV values are read: as for training (the run's data settings).
  csv_rules: csv_rules_lib.CsvRules = csv_rules_lib.CsvRules()
  # Where to log the scored rows as PredictionLog TFRecords (regress_log,
  # one row a record, as `serve --logging_config` logs requests), for
  # `tfx-e2e monitor`; None: no log. `model_name` names them.
  log_dir: Optional[str] = None
  model_name: str = ''


def input_format_of(pattern: str) -> str:
  """csv, unless the pattern names TFRecord files."""
  name = pattern.lower().removesuffix('.gz')
  return 'tfrecord' if name.endswith(('.tfrecord', '.tfrecords')) else 'csv'


# What a directory given as the input stands for, by input format.
_SUFFIXES = {'csv': ('.csv', '.csv.gz', '.csv.bz2'),
             'tfrecord': ('.tfrecord', '.tfrecords', '.tfrecord.gz',
                          '.tfrecords.gz')}


def input_files(pattern: str, input_format: str = 'csv') -> List[str]:
  """The files a job reads: `pattern` is a file, a glob, or a directory
  (its files named as the input format's: *.csv[.gz|.bz2] or
  *.tfrecord[s][.gz]).

  Raises:
    prediction.PredictionInputError: nothing to read (no such file, a glob
      that matches nothing, a directory without such files), or a file
      that cannot be read; the message names the path.
  """
  error = prediction.PredictionInputError
  if '://' in pattern:  # a remote file system: Beam's matching
    try:
      paths = sorted(m.path for result in FileSystems.match([pattern])
                     for m in result.metadata_list)
    except Exception as e:  # pylint: disable=broad-except
      raise error(f'cannot list the input {pattern}: {e}') from None
    if not paths:
      raise error(f'no input files match {pattern}')
    return paths
  if os.path.isdir(pattern):
    suffixes = _SUFFIXES[input_format]
    paths = sorted(os.path.join(pattern, name) for name in os.listdir(pattern)
                   if name.lower().endswith(suffixes) and
                   not name.startswith(('.', '_')))
    if not paths:
      names = ', '.join('*' + suffix for suffix in suffixes)
      raise error(
          f'no {input_format.upper()} files ({names}) in the directory '
          f'{pattern}: give the files, or a glob such as '
          f'{os.path.join(pattern, "*")}')
  elif glob.has_magic(pattern) and not os.path.lexists(pattern):
    # (A file whose name has [, * or ? is that file, as in training.)
    paths = sorted(glob.glob(pattern))
    if not paths:
      raise error(f'no input files match {pattern}')
  elif not os.path.lexists(pattern):
    raise error(f'no such input file: {pattern}')
  else:
    paths = [pattern]
  for path in paths:
    if os.path.isdir(path):
      raise error(f'{path} is a directory, not an input file (narrow the '
                  'glob)')
    try:
      with open(path, 'rb') as f:
        f.read(1)
    except OSError as e:
      raise error(f'cannot read the input file {path}: '
                  f'{e.strerror or e}') from None
  return paths


# Header lines longer than this are not looked at before the job (the job
# still checks every file it reads).
_HEADER_BYTES = 1 << 20


def _csv_header(path: str, delimiter: str = '') -> Optional[List[str]]:
  """The header of a CSV file (.gz/.bz2 too) as the job will read it: by
  the CSV rules (formats.csv_rules: the first line, split at the configured
  delimiter or the one detected on the first lines).

  Returns:
    The column names ([] for an empty file), or None when they cannot be
    told here (not UTF-8, a malformed header line, or a first line longer
    than _HEADER_BYTES).
  """
  with FileSystems.open(path) as f:
    data = f.read(_HEADER_BYTES)
  data = csv_rules_lib.without_bom(data)  # as the job's reader does
  lines = data.splitlines()[:csv_rules_lib.DELIMITER_SAMPLE + 1]
  if len(data) == _HEADER_BYTES:
    lines = lines[:-1]  # the last one may go on past what was read
    if not lines:
      return None
  try:
    text = [line.decode('utf-8') for line in lines]
  except UnicodeDecodeError:
    return None
  if not text:
    return []
  try:
    return csv_rules_lib.parse_header(text[0], csv_rules_lib.delimiter_of(
        text[0], delimiter, text[1:csv_rules_lib.DELIMITER_SAMPLE]))
  except csv.Error:
    return None


def check_columns(paths: Sequence[str],
                  input_types: Dict[str, tf.dtypes.DType],
                  allow_missing: bool,
                  delimiter: str = '',
                  named: Sequence[str] = ()) -> Dict[str, List[str]]:
  """The CSV files that lack columns the model reads, before the job.

  Returns:
    {path: the missing columns}: what the model will impute, when
    `allow_missing`.

  Raises:
    prediction.MissingColumnsError: some files lack columns and
      `allow_missing` is false; the message names them and the fix.
    prediction.PredictionInputError: a file lacks a column in `named`
      (the id and passthrough columns).
  """
  missing = {}
  for path in paths:
    header = _csv_header(path, delimiter)
    try:
      csv_rules_lib.check_header(Path(path), header or [])
    except csv_rules_lib.InputError as e:
      raise prediction.PredictionInputError(str(e)) from None
    unknown = [name for name in named
               if header and csv_rules_lib.resolve_column(
                   name, header, csv_rules_lib.feature_names(header)) is None]
    if unknown:
      raise prediction.PredictionInputError(
          f'{path} has no column {", ".join(map(repr, unknown))} (named by '
          f'--id-column or --passthrough); its columns: {", ".join(header)}')
    if header:
      columns = prediction.missing_columns(header, input_types)
      if columns:
        missing[path] = columns
  if missing and not allow_missing:
    raise prediction.MissingColumnsError(missing)
  return missing


def counter(name: str):
  return jobs.counter(METRICS_NAMESPACE, name)


class _ParseFile(beam.DoFn):
  """A matched file -> chunks of up to CHUNK_ROWS rows, each one element:
  ((keys, pass-through columns), [serialized tf.Example, ...]); rows that
  cannot be parsed -> dead letters."""
  DEAD = 'dead'
  CHUNK_ROWS = 1024

  def __init__(self, input_types: Dict[str, tf.dtypes.DType],
               id_column: Optional[str], passthrough: Sequence[str],
               allow_missing_columns: bool = False,
               csv_rules: csv_rules_lib.CsvRules = csv_rules_lib.CsvRules()):
    self._types = input_types
    self._allow_missing = allow_missing_columns
    self._rules = csv_rules
    self._id_column = id_column
    self._passthrough = tuple(passthrough)
    self._read = counter('rows_read')
    self._dead = counter('rows_dead_lettered')

  def setup(self):
    worker_marks.mark('predict')

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
      table = prediction.read_csv(data, self._rules)
    except ValueError as e:  # the whole file is one dead letter
      self._read.inc()
      yield from self._dead_letters(path, [(1, '', str(e))])
      return
    self._read.inc(len(table) + len(table.bad_rows))
    missing = prediction.missing_columns(table.header, self._types)
    if missing and not self._allow_missing:
      # Checked before the job too; here for a file that changed since.
      error = str(prediction.MissingColumnsError({'': missing}))
      lines = table.line_numbers.tolist()
      yield from self._dead_letters(path, table.bad_rows + [
          (line, table.raw(line), error) for line in lines])
      return
    examples, errors = prediction.examples_for_model(table, self._types)
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


def _stamp() -> str:
  import time  # pylint: disable=import-outside-toplevel
  return time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())


def _log_records(element, model_name: str,
                 input_types: Dict[str, tf.dtypes.DType]) -> List[bytes]:
  """A scored chunk -> PredictionLogs, one row a record, at the time it
  was scored."""
  import time  # pylint: disable=import-outside-toplevel
  from tfx_e2e.serving import request_log  # pylint: disable=import-outside-toplevel
  (_, examples), (predictions, version) = element
  return request_log.regress_records(
      examples, predictions, model_name, int(version), int(time.time()),
      kinds=request_log.list_kinds(input_types))


def csv_lines(rows: List[Tuple]) -> str:
  """One chunk's rows as CSV lines (WriteToText adds the last newline)."""
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator='\n').writerows(rows)
  return buffer.getvalue()[:-1]


def json_lines(rows: List[Tuple], columns: List[str]) -> str:
  return '\n'.join(json.dumps(dict(zip(columns, row))) for row in rows)


def build(root: beam.Pipeline, options: BatchPredictOptions,
          input_types: Dict[str, tf.dtypes.DType],
          files: Optional[Sequence[str]] = None) -> None:
  """Adds the batch prediction to `root` (separate from `run` for tests).
  It reads `files`, or what `options.input_pattern` matches."""
  if options.input_format == 'tfrecord':
    parse = ParseTfRecordFile(input_types, options.id_column,
                              options.passthrough)
  else:
    parse = ParseCsvFile(input_types, options.id_column, options.passthrough,
                         options.allow_missing_columns, options.csv_rules)
  # Listed files are read by name: matched again, `w[1].csv` would be read
  # as a pattern (and find `w1.csv`).
  matched = (root | 'Files' >> beam.Create(list(files))
             ) if files is not None else (
                 root | 'Match' >> fileio.MatchFiles(options.input_pattern))
  parsed = (
      matched
      # Files, not rows, spread over the workers: one file per worker call.
      | 'SpreadFiles' >> beam.Reshuffle()
      | 'Read' >> fileio.ReadMatches()
      | 'Parse' >> beam.ParDo(parse)
      .with_outputs(_ParseFile.DEAD, main='examples'))
  predicted = counter('rows_predicted')

  def count(chunk):
    predicted.inc(len(chunk))
    return chunk

  examples = parsed.examples
  if options.log_dir:
    # The examples ride along in the key, for the log.
    examples = examples | 'KeepExamples' >> beam.Map(
        lambda element: ((element[0], element[1]), element[1]))
  scored = (
      examples
      | 'RunInference' >> inference_base.RunInference(
          inference_base.KeyedModelHandler(prediction.VersionedModelHandler(
              options.model_dir, max_batch_size=8))))  # chunks: 8k rows
  if options.log_dir:
    _ = (scored
         | 'ToLog' >> beam.FlatMap(_log_records, options.model_name,
                                   input_types)
         | 'WriteLog' >> beam.io.WriteToTFRecord(
             f'{options.log_dir}/predict-{_stamp()}',
             file_name_suffix='.tfrecord'))
    scored = scored | 'DropExamples' >> beam.Map(
        lambda element: (element[0][0], element[1]))
  records = (
      scored
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
  # {file: columns it lacks}, which the model imputed in every row
  # (only with allow_missing_columns).
  imputed_columns: Dict[str, List[str]] = dataclasses.field(
      default_factory=dict)
  # Beam's result of the finished job (its metrics, state).
  pipeline_result: Optional[Any] = dataclasses.field(
      default=None, repr=False, compare=False)


_COUNTERS = ('rows_read', 'rows_predicted', 'rows_dead_lettered')


def run(options: BatchPredictOptions, beam_args: List[str],
        test_pipeline: Optional[beam.Pipeline] = None) -> BatchPredictResult:
  """Runs the job to completion.

  Args:
    options: what to read and score, with which model, and where to write.
    beam_args: Beam pipeline options (runner, direct_running_mode, ...).
    test_pipeline: a pipeline to build the job on instead (tests).

  Returns:
    The job's row counts, the columns the model imputed per file, and
    Beam's result.

  Raises:
    prediction.PredictionInputError: the model cannot be used, or the
      input is refused before the job starts (see input_files and
      check_columns).
  """
  input_types = prediction.model_input_types(options.model_dir)
  files = input_files(options.input_pattern, options.input_format)
  imputed = {} if options.input_format == 'tfrecord' else check_columns(
      files, input_types, options.allow_missing_columns,
      options.csv_rules.delimiter,
      [c for c in [options.id_column, *options.passthrough] if c])
  root = test_pipeline or jobs.pipeline(beam_args)
  build(root, options, input_types, files)
  job = jobs.run_and_count(root, METRICS_NAMESPACE, _COUNTERS)
  return BatchPredictResult(**job.counts, model_dir=options.model_dir,
                            imputed_columns=imputed,
                            pipeline_result=job.result)
