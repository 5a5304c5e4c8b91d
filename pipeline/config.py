"""The one typed configuration that feeds every runner.

A `PipelineConfig` comes from its defaults (the bundled Chicago taxi data), a
YAML file with the same sections (`data`, `split`, `training`, `evaluation`,
and top-level keys), and `section.key=value` overrides from the command line,
in that order. Paths inside a YAML file are relative to that file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import yaml

from tfx_e2e.formats import files
from tfx_e2e.formats.csv_rules import DEFAULT_NA_VALUES

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_TAXI_CSV = REPO_ROOT / 'data' / 'taxi' / 'data.csv'

# Kubeflow accepts only these pipeline names; keep local runs deployable.
_PIPELINE_NAME = re.compile(r'[a-z0-9][a-z0-9-]{0,127}')
_MODEL_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,127}')
ORCHESTRATORS = ('local', 'beam')
# tfx_e2e.components.model.run_fn's fitting methods.
SOLVERS = ('least_squares', 'sgd')


# A job server's or worker pool's address.
_HOST_PORT = re.compile(r'(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}')

# Characters that TFX and Beam read as file patterns, not as names.
FILE_PATTERN_CHARS = re.compile(r'[*?\[\]{}]')


class ConfigError(ValueError):
  """The configuration (file, flags or their combination) is invalid."""


@dataclasses.dataclass
class DataConfig:
  """What to learn from. Feature types (numeric or string) come from the data."""
  # A CSV file, or a directory whose *.csv files all share one header.
  path: str = str(BUNDLED_TAXI_CSV)
  label: str = 'fare'
  # Columns that are not model inputs (identifiers, leaks, near-empty ones).
  exclude_features: List[str] = dataclasses.field(default_factory=lambda: [
      'tips', 'trip_start_timestamp', 'pickup_census_tract',
      'dropoff_census_tract', 'pickup_latitude', 'pickup_longitude',
      'dropoff_latitude', 'dropoff_longitude'])
  # Numeric columns whose values are codes, not quantities: they get a
  # vocabulary (one weight per value) instead of z-scoring.
  categorical_features: List[str] = dataclasses.field(default_factory=lambda: [
      'trip_start_hour', 'trip_start_day', 'trip_start_month',
      'pickup_community_area', 'dropoff_community_area'])
  # Evaluation is reported overall and per value of each of these columns.
  slice_features: List[str] = dataclasses.field(
      default_factory=lambda: ['payment_type', 'trip_start_hour'])
  # A curated schema.pbtxt (ImportSchemaGen); empty means SchemaGen infers one.
  schema: Optional[str] = None
  # The CSV's field delimiter; empty: detected from the header line (one
  # of , ; tab |).
  delimiter: str = ''
  # Values that mean "missing" in every column (surrounding spaces aside).
  na_values: List[str] = dataclasses.field(
      default_factory=lambda: list(DEFAULT_NA_VALUES))


@dataclasses.dataclass
class SplitConfig:
  """Hash-based train/eval split of CsvExampleGen, as bucket counts."""
  train_buckets: int = 2
  eval_buckets: int = 1


@dataclasses.dataclass
class TrainingConfig:
  # 'least_squares': the exact ridge regression fit, in one pass over the
  # training split. 'sgd': mini-batch Adam steps (the settings below), for
  # feature spaces too wide for a d x d matrix (tens of thousands of
  # vocabulary values).
  solver: str = 'least_squares'
  # Ridge penalty of least_squares: it minimises the mean squared error plus
  # l2 * |W|^2 (not on the intercept).
  l2: float = 1e-3
  # sgd only:
  train_steps: int = 1000
  eval_steps: int = 50
  batch_size: int = 128
  learning_rate: float = 0.01
  # Out-of-vocabulary buckets for every string/categorical feature.
  oov_buckets: int = 1


@dataclasses.dataclass
class EvaluationConfig:
  """The Evaluator's blessing gates, each on the overall eval split; None
  turns a gate off. The defaults are the taxi task's (fares in dollars);
  a `--data` run without `--config` starts from `SCALE_FREE_EVALUATION`."""
  # Absolute gate, in the label's units: overall RMSE at most this.
  rmse_upper_bound: Optional[float] = 10.0
  # Scale-free gate: R² (1 - MSE / the eval labels' variance) at least
  # this. 0: no worse than predicting the eval labels' mean.
  min_r_squared: Optional[float] = None
  # Change gates against the model served now (skipped while none is):
  # RMSE may exceed its RMSE by at most this, in the label's units ...
  max_rmse_increase: Optional[float] = 1e-6
  # ... and by at most this fraction of it (0.01: 1%).
  max_relative_rmse_increase: Optional[float] = None


# The gates of a dataset of unknown scale: beat the mean predictor, and stay
# within 1% of the served model's RMSE (a retrain on slightly changed
# data moves it a little either way).
SCALE_FREE_EVALUATION = EvaluationConfig(
    rmse_upper_bound=None, min_r_squared=0.0, max_rmse_increase=None,
    max_relative_rmse_increase=0.01)


# Beam pipeline options per profile; {placeholders} come from BeamConfig.
# The profile name is what a user changes; the pipeline code does not.
BEAM_PROFILES = {
    # One process: the least start-up cost, one core. No options at all: the
    # DirectRunner's default mode, and TFX packages itself as an sdist for
    # every Beam component (2-3 s each) only when it is given options.
    'in-memory': [],
    # One worker process per core.
    'multi-process': ['--direct_running_mode=multi_processing',
                      '--direct_num_workers=0'],
    # Google Cloud Dataflow: workers install this package from the image.
    'dataflow': ['--runner=DataflowRunner', '--project={project}',
                 '--region={region}', '--temp_location={temp_location}',
                 '--sdk_container_image={image}',
                 '--experiments=use_runner_v2'],
    # Beam's portable runner (Job API and Fn API, as Flink, Spark and
    # Dataflow's Runner v2 speak them) with its embedded Python job service,
    # and SDK workers from an external worker pool: the one at
    # beam.worker_pool, or one that `run` and `predict` start on loopback
    # for the job (pipeline/worker_pool.py). The workers share nothing with
    # the launching process. The embedded job service asks the pool for
    # direct_num_workers workers a job (worker_pool._job_service_workers).
    'portable': ['--runner=PortableRunner', '--job_endpoint=embed',
                 '--environment_type=EXTERNAL',
                 '--environment_config={worker_pool}',
                 '--direct_num_workers={workers}'],
    # Portable runners: a Flink or Spark job server at job_endpoint; SDK
    # workers run the pipeline image, which has this package installed.
    'flink': ['--runner=PortableRunner', '--job_endpoint={job_endpoint}',
              '--environment_type=DOCKER', '--environment_config={image}'],
    'spark': ['--runner=PortableRunner', '--job_endpoint={job_endpoint}',
              '--environment_type=DOCKER', '--environment_config={image}'],
}


# `auto`: the in-memory DirectRunner for inputs below this many rows, the
# multi-process one from there on (`tfx-e2e run`; other jobs: in-memory).
# Its workers cost ~40 s of start-up per run and save ~0.25-0.5 s per 100k
# rows. In-memory was faster at every size measured: at 1.5M rows 57-67 s
# against 83-91 s, at 4.5M 129 s against 138 s, in half the memory (1.2
# against 2.5 GiB). The two meet near 6-8M rows by extrapolation
# (BENCHMARKS.md, pipeline benchmark).
AUTO_PROFILE = 'auto'
MULTI_PROCESS_FROM_ROWS = 6_000_000


@dataclasses.dataclass
class BeamConfig:
  """Where the Beam-based components run: a profile and its settings."""
  # A BEAM_PROFILES key, or `auto` (see MULTI_PROCESS_FROM_ROWS).
  profile: str = AUTO_PROFILE
  # Dataflow:
  project: str = ''
  region: str = ''
  temp_location: str = ''
  # Flink / Spark job server (PortableRunner), host:port; required by
  # those profiles (there is no default a cluster would share).
  job_endpoint: str = ''
  # portable: the worker pool's address (host:port of a running
  # `python -m apache_beam.runners.worker.worker_pool_main`); empty: `run`
  # and `predict` start one on loopback for their jobs and stop it after.
  worker_pool: str = ''
  # portable: SDK worker processes per job; 0: one per core.
  workers: int = 0
  # Appended after the profile's options.
  extra_args: List[str] = dataclasses.field(default_factory=list)
  # This project's faster executors for CsvExampleGen, StatisticsGen,
  # Transform and the Evaluator (components/executors/). False builds TFX's
  # stock components; they are used anyway when the installed TFX libraries
  # are not the versions the fast paths were written for.
  fast_paths: bool = True


@dataclasses.dataclass
class PodSize:
  """CPU cores and memory (GiB) of one component's pod, requested and
  limited alike: the scheduler places it where it fits, and its Beam work
  gets one worker per core."""
  cpu: float = 1.0
  memory_gib: float = 2.0


def _pod(cpu: float, memory_gib: float):
  return dataclasses.field(default_factory=lambda: PodSize(cpu, memory_gib))


@dataclasses.dataclass
class PodSizes:
  """Pod sizes per component (by its id in lower case with underscores).
  The Beam-based steps get more cores; the others need one."""
  csv_example_gen: PodSize = _pod(2, 4)
  statistics_gen: PodSize = _pod(2, 4)
  schema_gen: PodSize = _pod(1, 2)
  example_validator: PodSize = _pod(1, 2)
  transform: PodSize = _pod(2, 4)
  trainer: PodSize = _pod(2, 4)
  served_baseline: PodSize = _pod(1, 2)
  evaluator: PodSize = _pod(2, 4)
  pusher: PodSize = _pod(1, 2)


@dataclasses.dataclass
class KubeflowConfig:
  """Where the pipeline runs on Kubeflow Pipelines (`tfx-e2e compile`).

  The defaults fit an open-source Kubeflow Pipelines install as it comes:
  artifacts in its MinIO (`minio://mlpipeline/...`, KFP's default root),
  the data and the served models on a PersistentVolumeClaim that the
  pipeline's pods and TF Serving's mount. On Vertex AI (or with GCS) all
  three paths are `gs://` and no claim is needed.
  """
  # The pipeline image (deploy/kubeflow/Dockerfile): TFX plus this package.
  image: str = 'tfx-e2e:latest'
  # Where artifacts go: gs://, or on open-source KFP also minio:// or s3://
  # (KFP's launcher moves them between the store and the pod).
  pipeline_root: str = 'minio://mlpipeline/v2/artifacts'
  # A gs:// path, or a path under `volume_mount_path`.
  data_path: str = '/mnt/tfx-e2e/data'
  serving_base: str = '/mnt/tfx-e2e/serving'
  # The PersistentVolumeClaim mounted at `volume_mount_path` in the pods
  # that read or write it (deploy/serving mounts the same claim); '' mounts
  # none.
  volume_claim: str = 'tfx-e2e'
  volume_mount_path: str = '/mnt/tfx-e2e'
  beam_profile: str = 'multi-process'
  pods: PodSizes = dataclasses.field(default_factory=PodSizes)


@dataclasses.dataclass
class StreamConfig:
  """Streaming prediction (`tfx-e2e stream`): event time, windows, lateness."""
  # Each record's event time: Unix seconds or an ISO 8601 date-time.
  event_time_column: str = 'trip_start_timestamp'
  # Sliding event-time windows: each `window_seconds` long, one starting
  # every `period_seconds`.
  window_seconds: int = 3600
  period_seconds: int = 900
  # Records up to this far behind the watermark still update their windows;
  # later ones go to the late output.
  allowed_lateness_seconds: int = 3600
  # The watermark trails the newest event time read by this much: how far
  # out of order one file's records may be relative to earlier files.
  watermark_lag_seconds: int = 0
  # How often the input directory and the model base path are listed.
  poll_seconds: float = 1.0
  # Stop after this long without a new file, or after this many files
  # (None: run until stopped by a signal or a STOP file in the output).
  idle_timeout_seconds: Optional[float] = None
  max_files: Optional[int] = None


@dataclasses.dataclass
class MonitoringConfig:
  """`tfx-e2e monitor`: logged requests in windows of logged request time,
  each compared with the served model's training statistics (skew) and
  with the window before it (drift) by TFDV's comparators."""
  window_seconds: int = 3600
  # Defaults by kind of feature. Categorical (string features, and the
  # numeric codes of data.categorical_features): L-infinity distance between
  # value frequencies. Numeric: Jensen-Shannon divergence between histograms.
  # Both lie in [0, 1].
  categorical_threshold: float = 0.1
  numeric_threshold: float = 0.15
  # Per feature, instead of its kind's default: {feature: threshold}.
  thresholds: Dict[str, float] = dataclasses.field(default_factory=dict)
  # Compare each window with the one before it as well.
  drift: bool = True


@dataclasses.dataclass
class PipelineConfig:
  pipeline_name: str = 'taxi-fare'
  model_name: str = 'taxi_fare'
  output_dir: str = 'output'
  orchestrator: str = 'local'
  enable_cache: bool = True
  # Run Transform/Trainer/Evaluator/Pusher even when ExampleValidator finds
  # anomalies (they are still listed in the summary).
  allow_anomalies: bool = False
  beam: BeamConfig = dataclasses.field(default_factory=BeamConfig)
  kubeflow: KubeflowConfig = dataclasses.field(default_factory=KubeflowConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
  training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
  evaluation: EvaluationConfig = dataclasses.field(
      default_factory=EvaluationConfig)
  stream: StreamConfig = dataclasses.field(default_factory=StreamConfig)
  monitoring: MonitoringConfig = dataclasses.field(
      default_factory=MonitoringConfig)

  @property
  def output_path(self) -> Path:
    return Path(self.output_dir).resolve()

  @property
  def pipeline_root(self) -> str:
    return str(self.output_path / 'pipeline')

  @property
  def metadata_path(self) -> str:
    return str(self.output_path / 'metadata.sqlite')

  @property
  def serving_model_dir(self) -> str:
    """TF Serving model base path: versions are integer subdirectories."""
    return str(self.output_path / 'serving' / self.model_name)

  def beam_profile(self, rows: Optional[int] = None) -> str:
    """beam.profile, with `auto` resolved for an input of `rows` rows."""
    if self.beam.profile != AUTO_PROFILE:
      return self.beam.profile
    if rows is not None and rows >= MULTI_PROCESS_FROM_ROWS:
      return 'multi-process'
    return 'in-memory'

  def beam_args(self, profile: Optional[str] = None,
                image: Optional[str] = None) -> List[str]:
    """Beam pipeline options of a profile (default: beam.profile; `auto`
    as for an input of unknown size)."""
    profile = profile or self.beam_profile()
    settings = dict(dataclasses.asdict(self.beam),
                    image=image or self.kubeflow.image)
    return [arg.format(**settings) for arg in BEAM_PROFILES[profile]] + list(
        self.beam.extra_args)

  def validate(self) -> 'PipelineConfig':
    if not _PIPELINE_NAME.fullmatch(self.pipeline_name):
      raise ConfigError(
          f'pipeline_name {self.pipeline_name!r} must match '
          f'{_PIPELINE_NAME.pattern} (Kubeflow naming rule)')
    if not _MODEL_NAME.fullmatch(self.model_name):
      raise ConfigError(
          f'model_name {self.model_name!r} must match {_MODEL_NAME.pattern}')
    for profile, allowed in ((self.beam.profile,
                              [AUTO_PROFILE, *BEAM_PROFILES]),
                             (self.kubeflow.beam_profile, list(BEAM_PROFILES))):
      if profile not in allowed:
        raise ConfigError(f'Beam profile {profile!r} is not one of '
                          f'{", ".join(allowed)}')
    if self.beam.profile != AUTO_PROFILE:
      self.check_runner('beam.profile', self.beam.profile)
    self.check_runner('kubeflow.beam_profile', self.kubeflow.beam_profile,
                      on_cluster=True)
    if self.beam.workers < 0:
      raise ConfigError('beam.workers must be >= 0 (0: one per core)')
    if self.orchestrator not in ORCHESTRATORS:
      raise ConfigError(f'orchestrator must be one of {ORCHESTRATORS}, '
                        f'not {self.orchestrator!r}')
    if self.split.train_buckets < 1 or self.split.eval_buckets < 1:
      raise ConfigError('split.train_buckets and split.eval_buckets must be '
                        '>= 1')
    if self.training.solver not in SOLVERS:
      raise ConfigError(f'training.solver must be one of {SOLVERS}, not '
                        f'{self.training.solver!r}')
    if self.training.l2 < 0:
      raise ConfigError('training.l2 must be >= 0')
    for name in ('train_steps', 'eval_steps', 'batch_size'):
      if getattr(self.training, name) < 1:
        raise ConfigError(f'training.{name} must be >= 1')
    if self.training.oov_buckets < 1:
      raise ConfigError('training.oov_buckets must be >= 1')
    for name in ('window_seconds', 'period_seconds', 'poll_seconds'):
      if getattr(self.stream, name) <= 0:
        raise ConfigError(f'stream.{name} must be > 0')
    for name in ('allowed_lateness_seconds', 'watermark_lag_seconds'):
      if getattr(self.stream, name) < 0:
        raise ConfigError(f'stream.{name} must be >= 0')
    if self.monitoring.window_seconds <= 0:
      raise ConfigError('monitoring.window_seconds must be > 0')
    for name, value in [
        ('categorical_threshold', self.monitoring.categorical_threshold),
        ('numeric_threshold', self.monitoring.numeric_threshold),
        *((f'thresholds.{k}', v)
          for k, v in self.monitoring.thresholds.items())]:
      if not (math.isfinite(value) and 0 <= value <= 1):
        raise ConfigError(f'monitoring.{name} must be in [0, 1] (a '
                          f'distance or divergence), not {value}')
    if not self.data.label:
      raise ConfigError('data.label is required')
    if self.data.label in self.data.exclude_features:
      raise ConfigError(f'the label {self.data.label!r} is also excluded')
    if self.data.delimiter.strip().lower() not in (
        '', ',', ';', '\t', '|', 'tab', '\\t', 'comma', 'semicolon', 'pipe'):
      raise ConfigError(f'data.delimiter must be one of , ; | or tab '
                        f'(empty: detect), not {self.data.delimiter!r}')
    if FILE_PATTERN_CHARS.search(str(self.output_path)):
      raise ConfigError(
          f'output_dir {self.output_dir!r} has one of * ? [ ] {{ }}, which '
          'TFX reads as file patterns in artifact paths; choose another '
          'directory')
    if self.data.schema and not Path(self.data.schema).is_file():
      raise ConfigError(f'data.schema: no such file: {self.data.schema}')
    self._validate_evaluation()
    for name, size in dataclasses.asdict(self.kubeflow.pods).items():
      for resource, value in size.items():
        if not (math.isfinite(value) and value > 0):
          raise ConfigError(f'kubeflow.pods.{name}.{resource} must be > 0, '
                            f'not {value}')
    return self

  def check_runner(self, key: str, profile: str,
                   on_cluster: bool = False) -> None:
    """Refuses a Beam profile whose runner lacks a setting it needs, before
    any job is submitted: one message naming every missing setting.

    Args:
      key: the setting that chose the profile (for the message).
      profile: a BEAM_PROFILES key.
      on_cluster: the profile runs in Kubeflow's pods, where no worker
        pool is started for the job.
    """
    beam = self.beam
    missing = []
    if profile == 'dataflow':
      missing += [f'beam.{name}' for name in ('project', 'region')
                  if not getattr(beam, name).strip()]
      if not re.fullmatch(r'gs://[^/]+(/.*)?', beam.temp_location.strip()):
        missing.append('beam.temp_location (a gs:// path, '
                       f'not {beam.temp_location!r})' if beam.temp_location
                       else 'beam.temp_location (a gs:// path)')
    elif profile in ('flink', 'spark'):
      if not _HOST_PORT.fullmatch(beam.job_endpoint.strip()):
        missing.append('beam.job_endpoint (host:port of the job server'
                       + (f', not {beam.job_endpoint!r})'
                          if beam.job_endpoint else ')'))
    elif profile == 'portable':
      if beam.worker_pool and not _HOST_PORT.fullmatch(beam.worker_pool):
        missing.append('beam.worker_pool (host:port of a worker pool, or '
                       f'empty to start one; not {beam.worker_pool!r})')
      elif on_cluster and not beam.worker_pool:
        missing.append('beam.worker_pool (host:port of a worker pool the '
                       'pods reach: none is started on a cluster)')
    if missing:
      raise ConfigError(f'{key} {profile!r} needs ' + '; '.join(missing))

  def _validate_evaluation(self) -> None:
    evaluation = self.evaluation
    for name, value in dataclasses.asdict(evaluation).items():
      if value is not None and not math.isfinite(value):
        raise ConfigError(f'evaluation.{name} must be a finite number or '
                          f'none (gate off), not {value}')
    if (evaluation.rmse_upper_bound is not None and
        evaluation.rmse_upper_bound < 0):
      raise ConfigError('evaluation.rmse_upper_bound must be >= 0 (an RMSE '
                        'is never negative), or none')
    if evaluation.min_r_squared is not None and evaluation.min_r_squared > 1:
      raise ConfigError('evaluation.min_r_squared must be <= 1 (R² is 1 for '
                        "a perfect fit, 0 for predicting the labels' mean), "
                        'or none')
    if (evaluation.max_relative_rmse_increase is not None and
        evaluation.max_relative_rmse_increase <= -1):
      raise ConfigError('evaluation.max_relative_rmse_increase must be > -1 '
                        '(a fraction of the baseline RMSE: 0.01 allows 1% '
                        'more), or none')
    # The first model has no baseline to compare with, and TFX blesses no
    # model that it has checked against nothing: without such a gate, no
    # model would ever be pushed.
    if evaluation.rmse_upper_bound is None and evaluation.min_r_squared is None:
      raise ConfigError('evaluation.rmse_upper_bound or '
                        'evaluation.min_r_squared must be set: the Evaluator '
                        'blesses no model without a gate on its own metrics '
                        '(the change gates need a blessed model first); '
                        'e.g. evaluation.min_r_squared=0 (better than '
                        "predicting the labels' mean)")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
  """Converts a YAML or command-line value to the field's declared type."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin is typing.Union:  # Optional[X]
    if value is None or (isinstance(value, str) and
                         value.strip().lower() in ('', 'none', 'null')):
      return None
    return _coerce(value, next(a for a in args if a is not type(None)), key)
  if origin in (dict, Dict):
    if not isinstance(value, Mapping):
      raise ConfigError(f'{key}: expected a mapping, got {value!r}')
    return {str(k): _coerce(v, args[1], f'{key}.{k}')
            for k, v in value.items()}
  if origin in (list, List):
    if isinstance(value, str):
      value = [v.strip() for v in value.split(',') if v.strip()]
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f'{key}: expected a list, got {value!r}')
    return [_coerce(v, args[0], key) for v in value]
  if annotation is bool:
    if isinstance(value, bool):
      return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on'):
      return True
    if text in ('0', 'false', 'no', 'off'):
      return False
    raise ConfigError(f'{key}: expected true or false, got {value!r}')
  if annotation in (int, float, str):
    if annotation is int and isinstance(value, float):
      raise ConfigError(f'{key}: expected an integer, got {value!r}')
    try:
      return annotation(value)
    except (TypeError, ValueError):
      raise ConfigError(
          f'{key}: expected {annotation.__name__}, got {value!r}') from None
  raise ConfigError(f'{key}: unsupported type {annotation}')


def _field_types(cls) -> Dict[str, Any]:
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _apply(obj, values: Mapping[str, Any], prefix: str = ''):
  """Returns `obj` with `values` (a nested mapping) applied, type-checked."""
  types = _field_types(type(obj))
  changes = {}
  for key, value in values.items():
    full_key = f'{prefix}{key}'
    if key not in types:
      raise ConfigError(f'unknown setting {full_key!r}; known: '
                        f'{", ".join(prefix + k for k in types)}')
    current = getattr(obj, key)
    if dataclasses.is_dataclass(current):
      if not isinstance(value, Mapping):
        raise ConfigError(f'{full_key}: expected a section (mapping)')
      changes[key] = _apply(current, value, f'{full_key}.')
    elif isinstance(current, dict):  # entries add to (or replace) the others
      changes[key] = {**current, **_coerce(value, types[key], full_key)}
    else:
      changes[key] = _coerce(value, types[key], full_key)
  return dataclasses.replace(obj, **changes)


def _resolve_relative_paths(values: Dict[str, Any], base: Path) -> None:
  """Makes the file paths of a YAML file relative to that file."""
  data = values.get('data')
  for key in ('path', 'schema'):
    if isinstance(data, dict) and data.get(key):
      data[key] = str((base / os.path.expanduser(data[key])).resolve())
  if values.get('output_dir'):
    values['output_dir'] = str(
        (base / os.path.expanduser(values['output_dir'])).resolve())


def parse_overrides(pairs: List[str]) -> Dict[str, Any]:
  """['training.train_steps=10', ...] -> {'training': {'train_steps': '10'}}."""
  nested: Dict[str, Any] = {}
  for pair in pairs:
    key, sep, value = pair.partition('=')
    if not sep or not key.strip():
      raise ConfigError(f'override {pair!r} is not of the form key=value')
    *sections, leaf = key.strip().split('.')
    node = nested
    for section in sections:
      node = node.setdefault(section, {})
    node[leaf] = value
  return nested


def load_config(config_file: Optional[str] = None,
                overrides: Optional[Mapping[str, Any]] = None,
                base: Optional[PipelineConfig] = None) -> PipelineConfig:
  """Builds the validated configuration: `base`, then the file, then overrides."""
  config = base or PipelineConfig()
  if config_file:
    path = Path(config_file)
    try:
      values = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
      raise ConfigError(f'cannot read config file {path}: {e.strerror}') from e
    except yaml.YAMLError as e:
      raise ConfigError(f'config file {path} is not valid YAML: {e}') from e
    if not isinstance(values, dict):
      raise ConfigError(f'config file {path} must hold a mapping of settings')
    _resolve_relative_paths(values, path.resolve().parent)
    config = _apply(config, values)
  if overrides:
    config = _apply(config, overrides)
  return config.validate()


RUN_CONFIG_FILE = 'run-config.yaml'


def save_run_config(config: PipelineConfig) -> Path:
  """Records the configuration of a run in its output directory, so that
  `report`, `serve` and the notebooks see the run as it was configured."""
  values = dataclasses.asdict(config)
  values['output_dir'] = str(config.output_path)
  values['data']['path'] = str(Path(config.data.path).resolve())
  path = config.output_path / RUN_CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  files.write_atomically(path, yaml.safe_dump(values, sort_keys=False))
  return path


def run_config_file(output_dir: str) -> Optional[str]:
  """The recorded configuration of the runs in `output_dir`, if any."""
  path = Path(output_dir) / RUN_CONFIG_FILE
  return str(path) if path.is_file() else None
