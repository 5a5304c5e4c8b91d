"""`tfx-e2e stream`: streaming prediction over CSV files arriving in a
directory, in event-time sliding windows, as a Beam streaming job.

    input directory --WatchDirectory (lists it every poll; reads each new
      file once; stamps each row with its event time; watermark = newest
      event time read - watermark_lag)
      -> tf.Examples -> RunInference (follows the newest complete model
         version in the model base path)
      -> predictions/<file>.csv   every row of one input file, written once
                                  and atomically when all are predicted
      -> sliding windows (allowed lateness; a late record re-fires its window)
         -> windows/<start>--<end>.json   per pane: count, mean prediction,
            mean absolute error where the label is present, model versions,
            the window's predictions
         -> late/<start>--<end>.jsonl     records past the allowed lateness
    rows that cannot be parsed, and every row of a file that lacks a column
      the model reads (unless allowed) -> dead-letters/<file>.jsonl

Restart: an input file with a predictions/<file>.csv is finished. Its
predictions are replayed from there into the windows (not predicted again),
so a restarted stream neither loses nor duplicates them, and window files
are rewritten complete. Input files must appear whole (write elsewhere,
then move into the directory); names starting with '.' or '_' are ignored.

Stop: after `idle_timeout_seconds` without a new file, after `max_files`
files, or when a STOP file appears in the output directory (the CLI writes
it on SIGINT/SIGTERM). The watermark then goes to the end of time, every
window fires its final pane, and the job ends.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
import time
from pathlib import Path
from typing import (Any, Dict, FrozenSet, Iterable, List, Optional, Sequence,
                    Tuple)

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.ml.inference import base as inference_base
from apache_beam.transforms import trigger
from apache_beam.transforms import userstate
from apache_beam.transforms import window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, MAX_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming
import tensorflow as tf

from tfx_e2e.formats.files import write_atomically
from tfx_e2e.inference import jobs
from tfx_e2e.inference import prediction
from tfx_e2e.pipeline import config as config_lib
from tfx_e2e.formats import csv_rules as csv_rules_lib
from tfx_e2e.pipeline.config import StreamConfig

METRICS_NAMESPACE = 'tfx_e2e_stream'
STOP_FILE = 'STOP'
PREDICTIONS, WINDOWS, LATE, DEAD_LETTERS = (
    'predictions', 'windows', 'late', 'dead-letters')
PREDICTION_COLUMNS = ['key', 'event_time', 'label', 'prediction',
                      'model_version']
# Records later than this beyond the allowed lateness are dropped by Beam
# itself (and counted by the runner) instead of reaching the late output:
# the late output needs each window's state kept that much longer.
_LATE_OUTPUT_HORIZON = Duration(seconds=7 * 24 * 3600)


@dataclasses.dataclass(frozen=True)
class StreamOptions:
  """Everything one stream job reads: where (the paths and columns of this
  invocation) and how (`settings`, the configuration's stream section:
  event time, windows, lateness, polling, when to stop)."""
  input_dir: str
  output_dir: str
  model_base: str               # TF Serving model base path (versions)
  label_column: Optional[str] = None
  id_column: Optional[str] = None
  passthrough: Sequence[str] = ()
  pattern: str = '*.csv'
  # Predict files that lack some of the model's columns (imputed in every
  # row); without it, each row of such a file is a dead letter.
  allow_missing_columns: bool = False
  # How CSV values are read: as for training (the run's data settings).
  csv_rules: csv_rules_lib.CsvRules = csv_rules_lib.CsvRules()
  # The stream settings (`stream.*` of the configuration); their defaults
  # live in StreamConfig only.
  settings: StreamConfig = dataclasses.field(default_factory=StreamConfig)
  # Where to log each input file's scored rows as PredictionLog TFRecords
  # (as `serve --logging_config` logs requests), for `tfx-e2e monitor`;
  # None: no log. `model_name` names them.
  log_dir: Optional[str] = None
  model_name: str = ''

  @classmethod
  def of(cls, config: config_lib.PipelineConfig, input_dir: str,
         output_dir: str, model_base: Optional[str] = None,
         **invocation) -> 'StreamOptions':
    """The job's options from a run's configuration (its stream settings,
    label and CSV rules) and this invocation's paths and columns.

    Args:
      config: the configuration, whose `stream` section, `data.label` and
        CSV settings the job follows.
      input_dir: the directory to watch.
      output_dir: where predictions, windows, late records and dead letters
        go.
      model_base: a TF Serving model base path (default: the
        configuration's push destination).
      **invocation: other fields (id_column, passthrough, pattern,
        allow_missing_columns); None keeps the field's default.

    Returns:
      The options.
    """
    return cls(input_dir=input_dir, output_dir=output_dir,
               model_base=model_base or config.serving_model_dir,
               label_column=config.data.label,
               csv_rules=csv_rules_lib.CsvRules.of(config),
               settings=config.stream,
               **{k: v for k, v in invocation.items() if v is not None})


def _counter(name: str):
  return jobs.counter(METRICS_NAMESPACE, name)


def parse_event_time(value: str) -> float:
  """Unix seconds, or an ISO 8601 date-time (UTC unless it says otherwise)."""
  try:
    seconds = float(value)
  except ValueError:
    try:
      moment = datetime.datetime.fromisoformat(value.strip().replace(
          'Z', '+00:00'))
    except ValueError:
      raise ValueError(f'{value!r} is neither Unix seconds nor an ISO 8601 '
                       'date-time') from None
    if moment.tzinfo is None:
      moment = moment.replace(tzinfo=datetime.timezone.utc)
    seconds = moment.timestamp()
  if not math.isfinite(seconds):
    raise ValueError(f'{value!r} is not a finite time')
  return seconds


def _iso(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(
      seconds, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def window_name(bounds: window.IntervalWindow) -> str:
  return (f'{_iso(float(bounds.start)).replace(":", "")}--'
          f'{_iso(float(bounds.end)).replace(":", "")}')


# --- the source -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _WatchState:
  """How far the watch has got; the runner checkpoints it between polls."""
  seen: FrozenSet[str] = frozenset()
  files: int = 0
  last_new: float = 0.0          # wall time of the last new file
  last_poll: float = 0.0
  newest_event_time: Optional[float] = None
  done: bool = False


class _WatchTracker(RestrictionTracker):
  """An unbounded restriction: each claim is the state after one poll."""

  def __init__(self, state: _WatchState):
    self._state = state
    self._claimed: Optional[_WatchState] = None

  def current_restriction(self) -> _WatchState:
    return self._state

  def try_claim(self, state: _WatchState) -> bool:
    if self._state.done:
      return False
    self._claimed = state
    return True

  def try_split(self, fraction_of_remainder):
    if self._state.done:
      return None
    residual = self._claimed or self._state
    self._state = dataclasses.replace(residual, done=True)
    return self._state, residual

  def check_done(self) -> None:
    pass  # the watch ends when told to stop; nothing is left unclaimed

  def current_progress(self) -> RestrictionProgress:
    return RestrictionProgress(completed=self._state.files, remaining=1)

  def is_bounded(self) -> bool:
    return False


class _WatchProvider(RestrictionProvider):

  def initial_restriction(self, element) -> _WatchState:
    return _WatchState(last_new=time.time())

  def create_tracker(self, state: _WatchState) -> _WatchTracker:
    return _WatchTracker(state)

  def restriction_size(self, element, state) -> int:
    return 1

  def split(self, element, state):
    yield state


class WatchDirectory(beam.DoFn):
  """Splittable DoFn: input directory -> ((record, tf.Example) timestamped
  with its event time; 'replayed': records of finished files)."""
  REPLAYED = 'replayed'

  def __init__(self, options: StreamOptions,
               input_types: Dict[str, tf.dtypes.DType]):
    self._options = options
    self._settings = options.settings
    self._types = input_types
    self._files = _counter('files_read')
    self._replayed_files = _counter('files_replayed')
    self._read = _counter('rows_read')
    self._dead = _counter('rows_dead_lettered')
    self._imputed = _counter('files_imputed')

  def _stop_requested(self, state: _WatchState, now: float) -> bool:
    settings = self._settings
    return (
        tf.io.gfile.exists(f'{self._options.output_dir}/{STOP_FILE}') or
        (settings.max_files is not None and
         state.files >= settings.max_files) or
        (settings.idle_timeout_seconds is not None and
         now - state.last_new >= settings.idle_timeout_seconds))

  def _new_files(self, state: _WatchState) -> List[str]:
    paths = tf.io.gfile.glob(f'{self._options.input_dir}/'
                             f'{self._options.pattern}')
    new = sorted(p for p in paths if p not in state.seen and
                 not Path(p).name.startswith(('.', '_')))
    if self._settings.max_files is not None:
      new = new[:max(self._settings.max_files - state.files, 0)]
    return new

  @beam.DoFn.unbounded_per_element()
  def process(
      self, input_dir,
      tracker=beam.DoFn.RestrictionParam(_WatchProvider()),
      watermark=beam.DoFn.WatermarkEstimatorParam(
          ManualWatermarkEstimator.default_provider())):
    state = tracker.current_restriction()
    # The DirectRunner resumes at once whatever delay is asked for.
    wait = state.last_poll + self._settings.poll_seconds - time.time()
    if wait > 0:
      time.sleep(wait)
    now = time.time()
    if self._stop_requested(state, now):
      watermark.set_watermark(MAX_TIMESTAMP)
      return
    new = self._new_files(state)
    state = dataclasses.replace(
        state, seen=state.seen | frozenset(new), files=state.files + len(new),
        last_new=now if new else state.last_new, last_poll=now)
    if not tracker.try_claim(state):
      return
    newest = state.newest_event_time
    for path in new:
      for output in self._read_file(path):
        if not isinstance(output, beam.pvalue.TaggedOutput):
          newest = max(newest or output.timestamp.micros / 1e6,
                       output.timestamp.micros / 1e6)
        yield output
    tracker.try_claim(dataclasses.replace(state, newest_event_time=newest))
    if newest is not None:
      target = Timestamp.of(newest - self._settings.watermark_lag_seconds)
      current = watermark.current_watermark()
      if current is None or target > current:
        watermark.set_watermark(target)
    tracker.defer_remainder(Duration(seconds=self._settings.poll_seconds))

  def _read_file(self, path: str) -> Iterable:
    name = Path(path).name
    output_dir = self._options.output_dir
    finished = f'{output_dir}/{PREDICTIONS}/{name}'
    if tf.io.gfile.exists(finished):
      self._replayed_files.inc()
      with tf.io.gfile.GFile(finished) as f:
        for record in csv.DictReader(f):
          record = replayed_record(record)
          yield beam.pvalue.TaggedOutput(self.REPLAYED, window.TimestampedValue(
              record, record['event_time']))
      return
    self._files.inc()
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
    try:
      table = prediction.read_csv(data, self._options.csv_rules)
    except ValueError as e:  # the whole file is one dead letter
      table, failure = None, str(e)
    records, dead = [], []
    if table is None:
      self._read.inc()
      dead.append(prediction.dead_letter(path, 1, '', failure))
    else:
      self._read.inc(len(table) + len(table.bad_rows))
      dead += [prediction.dead_letter(path, *bad) for bad in table.bad_rows]
      missing = prediction.missing_columns(table.header, self._types)
      if missing and not self._options.allow_missing_columns:
        # Every row a dead letter: the model would impute the column.
        error = str(prediction.MissingColumnsError({'': missing}))
        examples, errors = [], dict.fromkeys(range(len(table)), error)
      else:
        if missing:
          self._imputed.inc()
          print(f'{name}: no column {", ".join(missing)}; imputed in every '
                'row (--allow-missing-columns)', flush=True)
        examples, errors = prediction.examples_for_model(table, self._types)
      examples = iter(examples)
      options = self._options
      wanted = {self._settings.event_time_column, options.id_column,
                options.label_column, *options.passthrough}
      # Named by header name or by model name (the run records the label
      # by its model name).
      columns = {column: table.values(column) for column in wanted
                 if column and table.has(column)}
      for index, line in enumerate(table.line_numbers.tolist()):
        example = None if index in errors else next(examples)
        try:
          if index in errors:
            raise ValueError(errors[index])
          fields = {column: values[index] for column, values in columns.items()}
          records.append((self._record(name, line, fields), example))
        except ValueError as e:
          dead.append(prediction.dead_letter(path, line, table.raw(line),
                                             str(e)))
    dead.sort(key=lambda d: d['line'])
    self._dead.inc(len(dead))
    if dead:
      tf.io.gfile.makedirs(f'{output_dir}/{DEAD_LETTERS}')
      write_atomically(f'{output_dir}/{DEAD_LETTERS}/{name}.jsonl', ''.join(
          json.dumps(d) + '\n' for d in dead))
    if not records:  # nothing to predict: the file is finished now
      write_atomically(finished, predictions_csv([], self._options))
    for record, example in records:
      record['file_rows'] = len(records)
      if self._options.log_dir:
        record['example'] = example  # for the log, with its prediction
      yield window.TimestampedValue((record, example), record['event_time'])

  def _record(self, name: str, number: int, fields: Dict[str, str]):
    options = self._options
    event_column = self._settings.event_time_column
    if fields.get(event_column, '') == '':
      raise ValueError(f'no event time in column {event_column!r}')
    try:
      event_time = parse_event_time(fields[event_column])
    except ValueError as e:
      raise ValueError(f'column {event_column!r}: {e}') from None
    key = fields.get(options.id_column, '') if options.id_column else (
        f'{name}:{number}')
    if key == '':
      raise ValueError(f'no value in the id column {options.id_column!r}')
    label = fields.get(options.label_column or '', '')
    record = {'file': name, 'line': number, 'key': key,
              'event_time': event_time,
              'label': float(label) if _is_number(label) else None}
    record.update({c: fields.get(c, '') for c in options.passthrough})
    return record


def _is_number(text: str) -> bool:
  try:
    return math.isfinite(float(text))
  except ValueError:
    return False


def replayed_record(row: Dict[str, str]) -> Dict:
  record = dict(row)
  record['event_time'] = float(row['event_time'])
  record['prediction'] = float(row['prediction'])
  record['label'] = float(row['label']) if row['label'] else None
  return record


def predictions_csv(records: List[Dict], options: StreamOptions) -> str:
  columns = PREDICTION_COLUMNS[:3] + list(options.passthrough) + (
      PREDICTION_COLUMNS[3:])
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, columns, extrasaction='ignore')
  writer.writeheader()
  for record in sorted(records, key=lambda r: r['line']):
    writer.writerow(dict(record, label='' if record['label'] is None
                         else record['label']))
  return buffer.getvalue()


# --- per input file ---------------------------------------------------------


class WriteFilePredictions(beam.DoFn):
  """Keyed by input file: writes predictions/<file>.csv once all of the
  file's rows are predicted. Its existence marks the file finished."""
  ROWS = userstate.BagStateSpec('rows', beam.coders.PickleCoder())
  COUNT = userstate.CombiningValueStateSpec('count', sum)

  def __init__(self, options: StreamOptions,
               input_types: Optional[Dict[str, tf.dtypes.DType]] = None):
    self._options = options
    self._finished = _counter('files_finished')
    self._kinds = None
    if input_types:
      from tfx_e2e.serving import request_log  # pylint: disable=import-outside-toplevel
      self._kinds = request_log.list_kinds(input_types)

  def process(self, element, rows=beam.DoFn.StateParam(ROWS),
              count=beam.DoFn.StateParam(COUNT)):
    name, record = element
    rows.add(record)
    count.add(1)
    if count.read() < record['file_rows']:
      return
    records = sorted(rows.read(), key=lambda r: r['line'])
    if self._options.log_dir:
      self._write_log(name, records)
    write_atomically(f'{self._options.output_dir}/{PREDICTIONS}/{name}',
                     predictions_csv(records, self._options))
    rows.clear()
    count.clear()
    self._finished.inc()
    versions = sorted({r['model_version'] for r in records})
    # Progress on the console (a worker's log on a remote runner).
    print(f'{name}: {len(records)} rows predicted by model version '
          f'{", ".join(versions)}', flush=True)


  def _write_log(self, name: str, records: List[Dict]) -> None:
    """The file's scored rows as PredictionLogs, one row a record, before
    the file counts as finished (a restart replays finished files without
    scoring, or logging, them again)."""
    from tfx_e2e.serving import request_log  # pylint: disable=import-outside-toplevel
    now = int(time.time())
    logged = []
    for version in sorted({r['model_version'] for r in records}):
      mine = [r for r in records if r['model_version'] == version]
      logged += request_log.regress_records(
          [r['example'] for r in mine], [r['prediction'] for r in mine],
          self._options.model_name, int(version), now,
          kinds=self._kinds)
    path = f'{self._options.log_dir}/stream-{Path(name).stem}{request_log.SUFFIX}'
    directory, base = path.rsplit('/', 1)
    temporary = f'{directory}/.{base}.tmp'
    tf.io.gfile.makedirs(directory)
    with tf.io.TFRecordWriter(temporary) as writer:
      for record in logged:
        writer.write(record)
    tf.io.gfile.rename(temporary, path, overwrite=True)


# --- windows ----------------------------------------------------------------


@beam.typehints.with_output_types(beam.typehints.Any)
class RouteTooLate(beam.DoFn):
  """Per window: records that arrive once the watermark has passed the
  window's end plus the allowed lateness go to late/<window>.jsonl."""
  LATE = 'late'
  EXPIRED = userstate.ReadModifyWriteStateSpec('expired',
                                               beam.coders.BooleanCoder())
  LATE_RECORDS = userstate.BagStateSpec('late', beam.coders.PickleCoder())
  EXPIRY = userstate.TimerSpec('expiry', userstate.TimeDomain.WATERMARK)

  def __init__(self, output_dir: str, allowed_lateness: Duration):
    self._output_dir = output_dir
    self._allowed_lateness = allowed_lateness
    self._too_late = _counter('records_too_late')

  def process(self, element, bounds=beam.DoFn.WindowParam,
              expired=beam.DoFn.StateParam(EXPIRED),
              late_records=beam.DoFn.StateParam(LATE_RECORDS),
              expiry=beam.DoFn.TimerParam(EXPIRY)):
    if not expired.read():
      expiry.set(bounds.max_timestamp() + self._allowed_lateness)
      yield element
      return
    self._too_late.inc()
    late_records.add(element[1])
    records = sorted(late_records.read(), key=lambda r: r['key'])
    tf.io.gfile.makedirs(f'{self._output_dir}/{LATE}')
    write_atomically(
        f'{self._output_dir}/{LATE}/{window_name(bounds)}.jsonl',
        ''.join(json.dumps(dict(_window_fields(bounds), **_public(r))) + '\n'
                for r in records))

  @userstate.on_timer(EXPIRY)
  def on_expiry(self, expired=beam.DoFn.StateParam(EXPIRED)):
    expired.write(True)


def _public(record: Dict) -> Dict:
  return {k: v for k, v in record.items() if k not in ('file_rows',)}


def _window_fields(bounds) -> Dict:
  return {'window_start': _iso(float(bounds.start)),
          'window_end': _iso(float(bounds.end))}


def window_summary(records: List[Dict]) -> Dict:
  labelled = [r for r in records if r['label'] is not None]
  return {
      'count': len(records),
      'mean_prediction': sum(r['prediction'] for r in records) / len(records),
      'labelled': len(labelled),
      'mean_absolute_error': (
          sum(abs(r['prediction'] - r['label']) for r in labelled) /
          len(labelled)) if labelled else None,
      'model_versions': sorted({r['model_version'] for r in records}),
  }


class WriteWindow(beam.DoFn):
  """One pane of a window -> windows/<start>--<end>.json (each pane holds
  the whole window so far, so the last one written is complete)."""

  def __init__(self, output_dir: str):
    self._output_dir = output_dir
    self._panes = _counter('window_panes')

  def process(self, element, bounds=beam.DoFn.WindowParam,
              pane=beam.DoFn.PaneInfoParam):
    _, records = element
    records = sorted(records, key=lambda r: (r['event_time'], r['key']))
    body = dict(_window_fields(bounds))
    body['pane'] = {'index': pane.index,
                    'timing': PaneInfoTiming.to_string(pane.timing),
                    'final': pane.is_last}
    body.update(window_summary(records))
    body['predictions'] = [
        {c: r.get(c) for c in ('key', 'event_time', 'prediction', 'label',
                               'model_version')} for r in records]
    self._panes.inc()
    write_atomically(f'{self._output_dir}/{WINDOWS}/{window_name(bounds)}.json',
                     json.dumps(body, indent=1))
    yield body


def window_and_write(predictions, settings: StreamConfig, output_dir: str):
  """Timestamped prediction records -> window panes and the late output.
  Returns the PCollection of window bodies (as written)."""
  lateness = Duration(seconds=settings.allowed_lateness_seconds)
  for sub in (WINDOWS, LATE):
    tf.io.gfile.makedirs(f'{output_dir}/{sub}')
  on_time = (
      predictions
      | 'Windows' >> beam.WindowInto(
          window.SlidingWindows(settings.window_seconds,
                                settings.period_seconds),
          trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
          accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
          allowed_lateness=lateness + _LATE_OUTPUT_HORIZON)
      | 'OneKey' >> beam.Map(lambda record: ('', record))
      .with_output_types(Tuple[str, Any])
      | 'RouteTooLate' >> beam.ParDo(RouteTooLate(output_dir, lateness)))
  return (on_time
          | 'GroupWindow' >> beam.GroupByKey()
          | 'WriteWindow' >> beam.ParDo(WriteWindow(output_dir)))


# --- the job ----------------------------------------------------------------


def _predicted_record(element):
  """Also restores the event time, which batching inside RunInference
  does not keep."""
  record, (value, version) = element
  record = dict(record, prediction=value, model_version=version)
  return window.TimestampedValue(record, record['event_time'])


def build(root: beam.Pipeline, options: StreamOptions, model_dir: str,
          input_types: Dict[str, tf.dtypes.DType]) -> None:
  """Adds the stream job to `root` (separate from `run` for tests)."""
  settings = options.settings
  watched = (
      root
      | 'InputDirectory' >> beam.Create([options.input_dir])
      | 'WatchDirectory' >> beam.ParDo(
          WatchDirectory(options, input_types))
      .with_outputs(WatchDirectory.REPLAYED, main='rows'))
  predicted = _counter('rows_predicted')

  def count(record):
    predicted.inc()
    return record

  fresh = (
      watched.rows
      | 'RunInference' >> inference_base.RunInference(
          inference_base.KeyedModelHandler(prediction.VersionedModelHandler(
              model_dir, base_path=options.model_base,
              poll_seconds=settings.poll_seconds)))
      | 'Record' >> beam.Map(_predicted_record)
      | 'Count' >> beam.Map(count))
  _ = (fresh
       | 'ByFile' >> beam.Map(lambda record: (record['file'], record))
       .with_output_types(Tuple[str, Any])
       | 'WriteFilePredictions' >> beam.ParDo(
           WriteFilePredictions(options, input_types)))
  if options.log_dir:
    fresh = fresh | 'DropExamples' >> beam.Map(
        lambda record: {k: v for k, v in record.items() if k != 'example'})
  _ = window_and_write(
      (fresh, watched[WatchDirectory.REPLAYED]) | 'All' >> beam.Flatten(),
      settings, options.output_dir)


@dataclasses.dataclass
class StreamResult:
  files_read: int
  files_replayed: int
  rows_read: int
  rows_predicted: int
  rows_dead_lettered: int
  records_too_late: int
  windows: int
  model_versions: List[str]
  summary_csv: str
  files_imputed: int = 0  # predicted without some of the model's columns
  # Beam's result of the finished job (its metrics, state).
  pipeline_result: Optional[Any] = dataclasses.field(
      default=None, repr=False, compare=False)


_COUNTERS = ('files_read', 'files_replayed', 'rows_read', 'rows_predicted',
             'rows_dead_lettered', 'records_too_late', 'files_imputed')


def summarize_windows(output_dir: str) -> str:
  """windows.csv: one row per window, from each window's last pane."""
  rows = []
  for path in sorted(tf.io.gfile.glob(f'{output_dir}/{WINDOWS}/*.json')):
    with tf.io.gfile.GFile(path) as f:
      body = json.load(f)
    rows.append({k: v for k, v in body.items() if k != 'predictions'} | {
        'pane': body['pane']['timing'], 'panes': body['pane']['index'] + 1,
        'model_versions': ' '.join(body['model_versions'])})
  columns = ['window_start', 'window_end', 'count', 'mean_prediction',
             'labelled', 'mean_absolute_error', 'model_versions', 'pane',
             'panes']
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, columns, extrasaction='ignore')
  writer.writeheader()
  writer.writerows(rows)
  path = f'{output_dir}/windows.csv'
  write_atomically(path, buffer.getvalue())
  return path


def check_input(options: StreamOptions) -> None:
  if not tf.io.gfile.isdir(options.input_dir):
    raise FileNotFoundError(f'no such input directory: {options.input_dir}')


def run(options: StreamOptions, beam_args: List[str],
        test_pipeline: Optional[beam.Pipeline] = None) -> StreamResult:
  """Runs the stream until it stops (see the module doc).

  Args:
    options: the paths, columns and stream settings of the job.
    beam_args: Beam pipeline options (the job always runs as streaming).
    test_pipeline: a pipeline to build the job on instead (tests).

  Returns:
    The counts of the job, the window summary's path, the model versions
    that answered, and Beam's result.

  Raises:
    FileNotFoundError: no input directory, or no model version under
      `options.model_base`.
  """
  check_input(options)
  model_dir = prediction.latest_version_dir(options.model_base)
  input_types = prediction.model_input_types(model_dir)
  tf.io.gfile.makedirs(f'{options.output_dir}/{PREDICTIONS}')
  stop_file = f'{options.output_dir}/{STOP_FILE}'
  if tf.io.gfile.exists(stop_file):
    tf.io.gfile.remove(stop_file)
  root = test_pipeline or jobs.pipeline(beam_args, streaming=True)
  build(root, options, model_dir, input_types)
  job = jobs.run_and_count(root, METRICS_NAMESPACE, _COUNTERS)
  summary_csv = summarize_windows(options.output_dir)
  versions = set()
  for path in tf.io.gfile.glob(f'{options.output_dir}/{PREDICTIONS}/*'):
    with tf.io.gfile.GFile(path) as f:
      versions |= {row['model_version'] for row in csv.DictReader(f)}
  return StreamResult(
      **job.counts,
      windows=len(tf.io.gfile.glob(f'{options.output_dir}/{WINDOWS}/*.json')),
      model_versions=sorted(versions, key=int), summary_csv=summary_csv,
      pipeline_result=job.result)
