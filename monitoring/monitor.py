"""`tfx-e2e monitor`: training/serving skew and drift of logged requests,
with TFDV, as a Beam job.

    PredictionLog TFRecords (a glob or a directory: `serve
    --logging_config`, `predict --log-dir`, `stream --log-dir`)
      -> per file: its records, or the file named as bad and skipped
         whole (truncated, or records that are not PredictionLogs)
      -> the model's raw features, row by row (monitoring.logs)
      -> windows of logged request time (monitoring.window_seconds)
      -> TFDV statistics per window, with StatisticsGen's options
    then, per window, TFDV's validate_statistics in the schema's SERVING
    environment (the label and the columns the model does not read are not
    expected there): schema anomalies, skew against the training
    statistics of the model version that served most of the window, drift
    against the window before it.

Outputs in --monitor-output: windows/<start>/statistics.pb
(DatasetFeatureStatisticsList) and anomalies.pbtxt (Anomalies), windows.csv
(each feature's distances per window), bad-files.csv, monitoring.html.

Numeric features are compared on TFDV's quantile histograms, not on its
standard (equal-width) ones. TFDV's approximate Jensen-Shannon divergence
spreads each bucket's count evenly over the bucket; with equal-width
buckets one outlier (a 1,710-mile taxi trip) puts nearly every value into
the first bucket, and the taxi data's train and eval splits measure 0.73
apart on trip_miles, further apart than eval with trip_miles x3 (0.49).
With equal-mass buckets they measure 0.09 and 0.22. Categorical features
are compared by L-infinity distance on their value frequencies; the
numeric codes of data.categorical_features have no value frequencies in
the training statistics (StatisticsGen computes numeric statistics for
them), so they are compared by Jensen-Shannon divergence on their
equal-width histograms, which suit bounded codes.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

from tfx_e2e.formats.files import write_atomically
from tfx_e2e.inference import jobs
from tfx_e2e.monitoring import logs
from tfx_e2e.pipeline.config import PipelineConfig

METRICS_NAMESPACE = 'tfx_e2e_monitor'
SERVING = 'SERVING'
TRAINING = 'TRAINING'
L_INFINITY = 'L_INFTY'
JSD = 'JENSEN_SHANNON_DIVERGENCE'
ROWS_PER_BATCH = 8192
WINDOWS_CSV_COLUMNS = ['window_start', 'window_end', 'rows', 'model_version',
                       'feature', 'measure', 'skew', 'skew_threshold',
                       'drift', 'drift_threshold', 'anomaly']


class MonitorInputError(ValueError):
  """Nothing to monitor, or no baseline to monitor against."""


def _counter(name: str):
  return jobs.counter(METRICS_NAMESPACE, name)


# --- reading the logs (Beam) -------------------------------------------------


class ReadLogFile(beam.DoFn):
  """A log file -> (window start, (version counts, RecordBatch)) elements;
  a bad file -> one BAD output (path, reason), and nothing else of it."""
  BAD = 'bad'

  def __init__(self, features: Sequence[str], types: Dict[str, int],
               window_seconds: int):
    self._features = list(features)
    # The schema's columns that the model does not read.
    self._ignored = sorted(set(types) - set(features))
    self._types = types
    self._window = window_seconds
    self._records = _counter('records_read')
    self._rows = _counter('rows_read')
    self._bad_files = _counter('bad_files')

  def process(self, path: str) -> Iterable:
    # window start -> ({version: rows}, serialized examples, raw rows)
    windows: Dict[int, Tuple[Dict[int, int], List[bytes], List]] = {}
    outputs, number = [], 0

    def flush(start, examples, rows):
      # Chunks are built as they fill, but yielded only once the whole file
      # has been read: a bad file gives nothing but its BAD output.
      if examples:
        outputs.append((str(start), logs.examples_batch(
            examples, self._types, self._ignored)))
      if rows:
        outputs.append((str(start), logs.record_batch(
            rows, self._types, self._ignored)))

    try:
      # Batches of records: tf.data's cost per element is ~0.2 ms.
      for batch in tf.data.TFRecordDataset(path).batch(
          1024).as_numpy_iterator():
        for data in batch:
          number += 1
          when, version, examples, rows = logs.record_parts(
              data, self._features)
          start = logs.window_start(when, self._window)
          versions, window_examples, window_rows = windows.setdefault(
              start, ({}, [], []))
          versions[version] = versions.get(version, 0) + len(examples) + len(
              rows)
          window_examples.extend(examples)
          window_rows.extend(rows)
          if len(window_examples) + len(window_rows) >= ROWS_PER_BATCH:
            flush(start, window_examples, window_rows)
            windows[start] = (versions, [], [])
      for start, (_, examples, rows) in windows.items():
        flush(start, examples, rows)
    except logs.BadRecord as e:
      yield self._bad(path, f'record {number}: {e}')
      return
    except tf.errors.OpError as e:  # truncated or corrupt TFRecord data
      message = (e.message or str(e)).strip().splitlines()[0]
      yield self._bad(path, f'after record {number}: unreadable TFRecord '
                      f'data ({type(e).__name__}: {message})')
      return
    self._records.inc(number)
    self._rows.inc(sum(sum(v.values()) for v, _, _ in windows.values()))
    for start, (versions, _, _) in windows.items():
      yield str(start), (versions, None)
    for key, batch in outputs:
      yield key, ({}, batch)

  def _bad(self, path: str, reason: str):
    self._bad_files.inc()
    return beam.pvalue.TaggedOutput(self.BAD, (path, reason))


def _merge_counts(counts: Iterable[Dict[int, int]]) -> Dict[int, int]:
  merged: Dict[int, int] = {}
  for count in counts:
    for version, rows in count.items():
      merged[version] = merged.get(version, 0) + rows
  return merged


def _write(path: str, data) -> None:
  """Text or bytes, whole or not at all (directories made as needed)."""
  tf.io.gfile.makedirs(os.path.dirname(path))
  write_atomically(path, data)


def stats_options() -> tfdv.StatsOptions:
  """StatisticsGen's: its executor's default StatsOptions (the pipeline
  gives it neither options nor a schema)."""
  return tfdv.StatsOptions()


def build(root: beam.Pipeline, files: Sequence[str], features: Sequence[str],
          types: Dict[str, int], window_seconds: int, work_dir: str) -> None:
  """Adds the job to `root`: it writes work_dir/statistics.pb (one dataset
  per window, named by its start), versions.json and bad-files.json."""
  read = (root
          | 'Files' >> beam.Create(list(files))
          | 'SpreadFiles' >> beam.Reshuffle()
          | 'Read' >> beam.ParDo(ReadLogFile(features, types, window_seconds))
          .with_outputs(ReadLogFile.BAD, main='batches'))
  batches = read.batches
  _ = (batches
       | 'Versions' >> beam.Map(lambda kv: (kv[0], kv[1][0]))
       | 'VersionsPerWindow' >> beam.CombinePerKey(_merge_counts)
       | 'AllVersions' >> beam.combiners.ToList()
       | 'WriteVersions' >> beam.Map(lambda pairs: _write(
           f'{work_dir}/versions.json', json.dumps(
               {k: {str(v): n for v, n in c.items()} for k, c in pairs}))))
  _ = (batches
       | 'Batches' >> beam.FlatMap(
           lambda kv: [(kv[0], kv[1][1])] if kv[1][1] is not None else [])
       | 'Statistics' >> stats_impl.GenerateSlicedStatisticsImpl(
           stats_options(), is_slicing_enabled=True)
       | 'WriteStatistics' >> beam.Map(lambda stats: _write(
           f'{work_dir}/statistics.pb', stats.SerializeToString())))
  _ = (read[ReadLogFile.BAD]
       | 'AllBad' >> beam.combiners.ToList()
       | 'WriteBad' >> beam.Map(lambda bad: _write(
           f'{work_dir}/bad-files.json', json.dumps(sorted(bad)))))


# --- inputs ------------------------------------------------------------------


def log_files(pattern: str) -> List[str]:
  """The complete log files: a directory's *.tfrecord files (hidden ones,
  still being written, left out), or what a glob or path names."""
  if tf.io.gfile.isdir(pattern):
    paths = [os.path.join(pattern, name)
             for name in tf.io.gfile.listdir(pattern)
             if name.endswith('.tfrecord') and not name.startswith(('.', '_'))]
  else:
    paths = [p for p in tf.io.gfile.glob(pattern)
             if not os.path.basename(p).startswith(('.', '_'))]
  paths = sorted(p for p in paths if not tf.io.gfile.isdir(p))
  if not paths:
    raise MonitorInputError(f'no log files in {pattern} (a directory of '
                            '*.tfrecord files, a glob, or a file)')
  return paths


@dataclasses.dataclass
class Baseline:
  """What a model version was trained on, as its pipeline run recorded it."""
  version: int
  run_id: str
  statistics: statistics_pb2.DatasetFeatureStatisticsList  # train split
  schema: schema_pb2.Schema
  statistics_path: str
  schema_path: str


def find_baseline(config: PipelineConfig, version: int) -> Baseline:
  """The training statistics and schema of the run that pushed `version`
  of config's model, found through the run's MLMD store.

  Raises:
    MonitorInputError: no such push, or its run lacks them.
  """
  from tfx_e2e.pipeline import pipeline as pipeline_def  # pylint: disable=import-outside-toplevel
  from tfx_e2e.reports import results  # pylint: disable=import-outside-toplevel
  try:
    store = results.open_store(config.metadata_path)
  except FileNotFoundError as e:
    raise MonitorInputError(f'{e}: give the output directory of the run '
                            'that trained the served model (--output)'
                            ) from None
  pushes = [a for a in store.get_artifacts_by_type('PushedModel')
            if a.custom_properties['pushed'].int_value and
            a.custom_properties['pushed_version'].string_value == str(version)]
  if not pushes:
    raise MonitorInputError(
        f'no run in {config.metadata_path} pushed version {version} of '
        f'{config.model_name}: the logged requests were answered by a model '
        'that another output directory trained (--output)')
  pushed = max(pushes, key=lambda a: a.id)
  execution_ids = [e.execution_id for e in
                   store.get_events_by_artifact_ids([pushed.id])]
  run = next((c for c in store.get_contexts_by_execution(execution_ids[0])
              if c.type == 'pipeline_run'), None)
  if run is None:
    raise MonitorInputError(f'the push of version {version} has no run')
  by_node = results._component_runs(  # pylint: disable=protected-access
      store, config.pipeline_name, run)
  statistics_gen = by_node.get(pipeline_def.STATISTICS_GEN)
  schema_gen = by_node.get(pipeline_def.SCHEMA_GEN)
  if not (statistics_gen and statistics_gen.output('statistics') and
          schema_gen and schema_gen.output('schema')):
    raise MonitorInputError(f'run {run.name} has no StatisticsGen or '
                            'SchemaGen output')
  statistics_path = (f'{statistics_gen.output("statistics").uri}/'
                     'Split-train/FeatureStats.pb')
  schema_path = f'{schema_gen.output("schema").uri}/schema.pbtxt'
  statistics = statistics_pb2.DatasetFeatureStatisticsList()
  with tf.io.gfile.GFile(statistics_path, 'rb') as f:
    statistics.ParseFromString(f.read())
  return Baseline(version, run.name, statistics,
                  tfdv.load_schema_text(schema_path), statistics_path,
                  schema_path)


def baseline_from_files(statistics_path: str, schema_path: str) -> Baseline:
  """A baseline given by hand: a StatisticsGen output's training split
  (FeatureStats.pb, a DatasetFeatureStatisticsList) and a schema.pbtxt,
  for places where the run's MLMD store is not a SQLite file (Kubeflow's
  metadata service).

  Raises:
    MonitorInputError: a file that cannot be read as such.
  """
  statistics = statistics_pb2.DatasetFeatureStatisticsList()
  try:
    with tf.io.gfile.GFile(statistics_path, 'rb') as f:
      statistics.ParseFromString(f.read())
    schema = tfdv.load_schema_text(schema_path)
  except Exception as e:  # pylint: disable=broad-except
    raise MonitorInputError(
        f'cannot read the baseline ({statistics_path}, {schema_path}): '
        f'{str(e).strip().splitlines()[0] if str(e).strip() else e}'
    ) from None
  if len(statistics.datasets) != 1 or not statistics.datasets[0].features:
    raise MonitorInputError(f'{statistics_path} holds no statistics of one '
                            'dataset (a split\'s FeatureStats.pb)')
  return Baseline(0, 'given', statistics, schema, statistics_path,
                  schema_path)


def model_features(config: PipelineConfig, schema: schema_pb2.Schema
                   ) -> List[str]:
  """The raw features the model reads: the schema's, less the label and
  the excluded columns."""
  left_out = {config.data.label, *config.data.exclude_features}
  return [f.name for f in schema.feature if f.name not in left_out]


# --- comparing ---------------------------------------------------------------


def _is_categorical(feature: schema_pb2.Feature,
                    config: PipelineConfig) -> bool:
  return feature.type == schema_pb2.BYTES or (
      feature.int_domain.is_categorical)


def monitoring_schema(schema: schema_pb2.Schema, config: PipelineConfig,
                      features: Sequence[str]) -> schema_pb2.Schema:
  """The training schema with environments (what the model does not read
  is not expected in SERVING) and the comparators of config.monitoring.

  Raises:
    MonitorInputError: a per-feature threshold names a feature the model
      does not read.
  """
  settings = config.monitoring
  unknown = sorted(set(settings.thresholds) - set(features))
  if unknown:
    raise MonitorInputError(
        f'monitoring.thresholds names {", ".join(unknown)}, which the model '
        f'does not read; its features: {", ".join(features)}')
  schema = copy.deepcopy(schema)
  del schema.default_environment[:]
  schema.default_environment.extend([TRAINING, SERVING])
  for feature in schema.feature:
    del feature.not_in_environment[:]
    feature.ClearField('skew_comparator')
    feature.ClearField('drift_comparator')
    if feature.name not in features:
      feature.not_in_environment.append(SERVING)
      continue
    categorical = _is_categorical(feature, config)
    threshold = settings.thresholds.get(
        feature.name, settings.categorical_threshold if categorical or
        feature.name in config.data.categorical_features
        else settings.numeric_threshold)
    comparators = [feature.skew_comparator] + (
        [feature.drift_comparator] if settings.drift else [])
    for comparator in comparators:
      if categorical:
        comparator.infinity_norm.threshold = threshold
      else:
        comparator.jensen_shannon_divergence.threshold = threshold
  return schema


def comparable(statistics: statistics_pb2.DatasetFeatureStatisticsList,
               equal_width: Sequence[str]
               ) -> statistics_pb2.DatasetFeatureStatisticsList:
  """A copy whose numeric features (but those in `equal_width`) carry
  their quantile histogram where TFDV's comparator reads the standard one
  (see the module doc)."""
  statistics = copy.deepcopy(statistics)
  for dataset in statistics.datasets:
    for feature in dataset.features:
      if not feature.HasField('num_stats'):
        continue
      if '.'.join(feature.path.step) in equal_width:
        continue
      histograms = feature.num_stats.histograms
      quantiles = [h for h in histograms
                   if h.type == statistics_pb2.Histogram.QUANTILES]
      if not quantiles:
        continue
      standard = statistics_pb2.Histogram()
      standard.CopyFrom(quantiles[0])
      standard.type = statistics_pb2.Histogram.STANDARD
      kept = [h for h in histograms
              if h.type != statistics_pb2.Histogram.STANDARD]
      del histograms[:]
      histograms.extend(kept + [standard])
  return statistics


def _single(dataset: statistics_pb2.DatasetFeatureStatistics
            ) -> statistics_pb2.DatasetFeatureStatisticsList:
  result = statistics_pb2.DatasetFeatureStatisticsList()
  result.datasets.add().CopyFrom(dataset)
  result.datasets[0].name = ''
  return result


@dataclasses.dataclass
class Window:
  start: int
  end: int
  rows: int
  model_version: int
  statistics: statistics_pb2.DatasetFeatureStatisticsList
  anomalies: anomalies_pb2.Anomalies

  @property
  def name(self) -> str:
    return iso(self.start)

  @property
  def flagged(self) -> List[str]:
    return sorted(self.anomalies.anomaly_info)


def iso(seconds: int) -> str:
  import datetime  # pylint: disable=import-outside-toplevel
  return datetime.datetime.fromtimestamp(
      seconds, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def validate_windows(statistics: statistics_pb2.DatasetFeatureStatisticsList,
                     versions: Dict[str, Dict[str, int]],
                     baseline_of, config: PipelineConfig) -> List[Window]:
  """Each window validated (see the module doc), oldest first.

  Args:
    statistics: one dataset per window, named by its start.
    versions: {window start: {model version: rows}}.
    baseline_of: version -> Baseline.
    config: the configuration (its monitoring section, categorical
      features).
  """
  windows, previous = [], None
  for dataset in sorted(statistics.datasets, key=lambda d: int(d.name)):
    start = int(dataset.name)
    counts = versions.get(dataset.name, {})
    version = int(max(counts, key=lambda v: (counts[v], int(v)))) if (
        counts) else 0
    baseline = baseline_of(version)
    features = model_features(config, baseline.schema)
    schema = monitoring_schema(baseline.schema, config, features)
    codes = [f for f in config.data.categorical_features if f in features]
    current = _single(dataset)
    anomalies = tfdv.validate_statistics(
        comparable(current, codes), schema, environment=SERVING,
        previous_statistics=(comparable(previous, codes)
                             if previous is not None and config.monitoring.drift
                             else None),
        # The window stands where TFDV expects training statistics and
        # the training statistics where it expects serving ones: both
        # distances are symmetric, and the schema's anomalies are then
        # those of the window.
        serving_statistics=comparable(baseline.statistics, codes))
    windows.append(Window(start, start + config.monitoring.window_seconds,
                          int(dataset.num_examples), version, current,
                          anomalies))
    previous = current
  return windows


def describe(info: anomalies_pb2.AnomalyInfo) -> str:
  """An anomaly's reasons, each in short ("Multiple errors" says none)."""
  return '; '.join(r.short_description or r.description
                   for r in info.reason) or info.short_description


def _measure(measurements) -> Tuple[str, Optional[float], Optional[float]]:
  for m in measurements:
    return (anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type),
            m.value, m.threshold)
  return '', None, None


def windows_rows(windows: Sequence[Window]) -> List[Dict]:
  """windows.csv: one row per window and compared feature."""
  rows = []
  for window in windows:
    infos = {'.'.join(i.path.step): i for i in window.anomalies.drift_skew_info}
    names = sorted(set(infos) | set(window.anomalies.anomaly_info))
    for name in names:
      info = infos.get(name)
      measure, skew, skew_threshold = _measure(
          info.skew_measurements if info else [])
      drift_measure, drift, drift_threshold = _measure(
          info.drift_measurements if info else [])
      anomaly = window.anomalies.anomaly_info.get(name)
      rows.append({
          'window_start': iso(window.start), 'window_end': iso(window.end),
          'rows': window.rows, 'model_version': window.model_version,
          'feature': name, 'measure': measure or drift_measure,
          'skew': skew, 'skew_threshold': skew_threshold, 'drift': drift,
          'drift_threshold': drift_threshold,
          'anomaly': describe(anomaly) if anomaly else ''})
  return rows


# --- the command -------------------------------------------------------------


@dataclasses.dataclass
class MonitorResult:
  files: int
  records: int
  rows: int
  bad_files: List[Tuple[str, str]]
  windows: List[Window]
  output_dir: str
  report: str

  @property
  def flagged(self) -> List[Window]:
    return [w for w in self.windows if w.flagged]


def run(config: PipelineConfig, logs_pattern: str, output_dir: str,
        beam_args: List[str], baseline_of=None) -> MonitorResult:
  """Reads the logs, computes and validates each window, writes the
  outputs (see the module doc).

  Args:
    config: the configuration of the run that trained the served model
      (its output directory, data settings and monitoring section).
    logs_pattern: a directory of log files, a glob or a file.
    output_dir: where the outputs go.
    beam_args: Beam pipeline options (the configuration's Beam profile).
    baseline_of: version -> Baseline (default: find_baseline, cached).

  Raises:
    MonitorInputError: no log files, no baseline for a logged version, a
      threshold for a feature the model does not read, or no readable
      record at all.
  """
  from tfx_e2e.monitoring import report  # pylint: disable=import-outside-toplevel
  files = log_files(logs_pattern)
  cache: Dict[int, Baseline] = {}

  def baseline(version: int) -> Baseline:
    if version not in cache:
      cache[version] = (baseline_of or (
          lambda v: find_baseline(config, v)))(version)
    return cache[version]

  # The schema (features and their types) before the job: that of the
  # newest pushed version, read again per window's own version after it.
  first = _any_baseline(config, baseline, files)
  features = model_features(config, first.schema)
  monitoring_schema(first.schema, config, features)  # checks thresholds
  work = f'{output_dir}/.work'
  if tf.io.gfile.exists(work):
    tf.io.gfile.rmtree(work)
  root = jobs.pipeline(beam_args)
  build(root, files, features, logs.schema_types(first.schema),
        config.monitoring.window_seconds, work)
  job = jobs.run_and_count(root, METRICS_NAMESPACE,
                           ('records_read', 'rows_read', 'bad_files'))
  with tf.io.gfile.GFile(f'{work}/bad-files.json') as f:
    bad = [tuple(b) for b in json.load(f)]
  statistics = statistics_pb2.DatasetFeatureStatisticsList()
  versions: Dict[str, Dict[str, int]] = {}
  if tf.io.gfile.exists(f'{work}/statistics.pb'):
    with tf.io.gfile.GFile(f'{work}/statistics.pb', 'rb') as f:
      statistics.ParseFromString(f.read())
    with tf.io.gfile.GFile(f'{work}/versions.json') as f:
      versions = json.load(f)
  # TFDV's placeholder for no input at all is one unnamed, empty dataset.
  kept = [d for d in statistics.datasets if d.name]
  del statistics.datasets[:]
  statistics.datasets.extend(kept)
  if not statistics.datasets:
    raise MonitorInputError(
        f'no readable logged request in {logs_pattern} ({len(files)} files, '
        f'{len(bad)} bad)' + ''.join(f'\n  {p}: {why}' for p, why in bad))
  windows = validate_windows(statistics, versions, baseline, config)
  for window in windows:
    directory = f'{output_dir}/windows/{window.name}'
    _write(f'{directory}/statistics.pb',
           window.statistics.SerializeToString())
    _write(f'{directory}/anomalies.pbtxt', str(window.anomalies))
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, WINDOWS_CSV_COLUMNS)
  writer.writeheader()
  writer.writerows(windows_rows(windows))
  _write(f'{output_dir}/windows.csv', buffer.getvalue())
  buffer = io.StringIO()
  csv.writer(buffer).writerows([('file', 'reason'), *bad])
  _write(f'{output_dir}/bad-files.csv', buffer.getvalue())
  tf.io.gfile.rmtree(work)
  result = MonitorResult(len(files), job.counts['records_read'],
                         job.counts['rows_read'], bad, windows, output_dir,
                         f'{output_dir}/monitoring.html')
  _write(result.report, report.render(result, baseline, config))
  return result


def _any_baseline(config: PipelineConfig, baseline, files: Sequence[str]
                  ) -> Baseline:
  """The baseline of the first readable record's version."""
  for path in files:
    try:
      for data in tf.data.TFRecordDataset(path).take(1).as_numpy_iterator():
        return baseline(logs.parse_record(data, [])[1])
    except (logs.BadRecord, tf.errors.OpError):
      continue
  raise MonitorInputError(
      f'no readable logged request in the {len(files)} log files')
