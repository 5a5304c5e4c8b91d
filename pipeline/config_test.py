"""The one configuration: defaults, YAML file, overrides, validation."""

import dataclasses
import re

import pytest

from tfx_e2e.cli import commands as cli
from tests.conftest import run_cli
from tfx_e2e.pipeline import config as config_lib
from tfx_e2e.pipeline.config import (BUNDLED_TAXI_CSV, ConfigError,
                                     PipelineConfig, load_config,
                                     parse_overrides)


def test_defaults_are_the_bundled_taxi_task():
  config = load_config()
  assert config.data.path == str(BUNDLED_TAXI_CSV)
  assert config.data.label == 'fare'
  assert (config.split.train_buckets, config.split.eval_buckets) == (2, 1)
  assert config.orchestrator == 'local' and config.enable_cache


def test_yaml_file_then_overrides(tmp_path):
  config_file = tmp_path / 'conf' / 'my.yaml'
  config_file.parent.mkdir()
  config_file.write_text(
      'pipeline_name: my-pipe\n'
      'output_dir: ../runs\n'
      'data:\n'
      '  path: data.csv\n'
      '  label: price\n'
      '  exclude_features: [id]\n'
      'training:\n'
      '  train_steps: 50\n')
  config = load_config(str(config_file), parse_overrides(
      ['training.train_steps=70', 'evaluation.rmse_upper_bound=none',
       'evaluation.min_r_squared=0']))
  assert config.pipeline_name == 'my-pipe'
  # Paths in a file are relative to the file.
  assert config.data.path == str(tmp_path / 'conf' / 'data.csv')
  assert config.output_dir == str(tmp_path / 'runs')
  assert config.data.exclude_features == ['id']
  assert config.training.train_steps == 70
  assert config.evaluation.rmse_upper_bound is None
  assert config.serving_model_dir == str(tmp_path / 'runs' / 'serving' /
                                         'taxi_fare')
  assert config.metadata_path == str(tmp_path / 'runs' / 'metadata.sqlite')


def test_cli_data_flag_selects_another_dataset():
  args = cli.build_parser().parse_args(
      ['run', '--data', 'other.csv', '--label', 'y', '--exclude', 'a,b',
       '--set', 'training.batch_size=16'])
  config = cli.load_config(args)
  assert config.data.label == 'y'
  assert config.data.exclude_features == ['a', 'b']
  # The taxi-specific feature settings do not carry over.
  assert config.data.categorical_features == []
  assert config.data.slice_features == []
  assert config.training.batch_size == 16


def test_cli_set_keeps_taxi_settings_for_another_taxi_file():
  args = cli.build_parser().parse_args(
      ['run', '--set', 'data.path=sample.csv', '--allow-anomalies'])
  config = cli.load_config(args)
  assert config.data.path == 'sample.csv'
  assert config.data.slice_features == PipelineConfig().data.slice_features
  assert config.allow_anomalies


@pytest.mark.parametrize('text, message', [
    ('- a list', 'must hold a mapping'),
    ('data: [1]', 'data: expected a section'),
    ('enable_cache: maybe', 'enable_cache: expected true or false'),
    ('training: {train_steps: 1.5}', 'expected an integer'),
    ('data: {label: fare, exclude_features: [fare]}', 'is also excluded'),
    ('orchestrator: kubeflow', 'orchestrator must be one of'),
    ('stream: {period_seconds: 0}', 'stream.period_seconds must be > 0'),
    ('stream: {allowed_lateness_seconds: -1}', 'must be >= 0'),
])
def test_invalid_files_name_the_problem(tmp_path, text, message):
  config_file = tmp_path / 'bad.yaml'
  config_file.write_text(text)
  with pytest.raises(ConfigError, match=message):
    load_config(str(config_file))


def test_unreadable_file():
  with pytest.raises(ConfigError, match='cannot read config file'):
    load_config('/nonexistent/config.yaml')


def test_stream_flags_are_shorthands_for_stream_settings():
  args, _ = cli.build_parser().parse_known_args(
      ['stream', '--input', 'in', '--stream-output', 'out', '--window', '600',
       '--idle-timeout', '2.5', '--set', 'stream.max_files=3'])
  stream = cli.load_config(args).stream
  assert (stream.window_seconds, stream.idle_timeout_seconds,
          stream.max_files) == (600, 2.5, 3)
  assert stream.period_seconds == 900  # the default


def test_stream_options_take_the_configured_stream_settings():
  """The stream job's settings are the configuration's stream section (one
  set of defaults); the invocation adds only paths and columns."""
  from tfx_e2e.inference import stream_predict  # pylint: disable=import-outside-toplevel
  args, _ = cli.build_parser().parse_known_args(
      ['stream', '--input', 'in', '--stream-output', 'out', '--poll', '0.25',
       '--set', 'stream.watermark_lag_seconds=7', '--set',
       'data.label=trip_miles'])
  config = cli.load_config(args)
  options = stream_predict.StreamOptions.of(
      config, input_dir='in', output_dir='out', id_column=None, pattern=None,
      passthrough=['payment_type'])
  assert options.settings == config.stream
  assert (options.settings.poll_seconds,
          options.settings.watermark_lag_seconds) == (0.25, 7)
  assert options.label_column == 'trip_miles'
  assert options.model_base == config.serving_model_dir
  assert options.pattern == '*.csv' and options.id_column is None
  assert stream_predict.StreamOptions('i', 'o', 'm').settings == (
      config_lib.StreamConfig())


@pytest.mark.parametrize('argv, dest, value', [
    (['compile', '--pipeline-file', 'p.yaml'], 'pipeline_file', 'p.yaml'),
    (['submit', '--host', 'h', '--pipeline-file', 'p.yaml'], 'pipeline_file',
     'p.yaml'),
    (['predict', '--input', 'x.csv', '--output-prefix', 'p'], 'output_prefix',
     'p'),
    (['stream', '--input', 'in', '--stream-output', 'o'], 'stream_output',
     'o'),
    (['run', '--output', 'o'], 'output', 'o'),
    (['report', '--output', 'o', '--file', 'r.html'], 'report_file',
     'r.html'),
])
def test_each_output_flag_means_one_thing(argv, dest, value, capsys):
  """--output is a run's output directory wherever it is not a deprecated
  spelling; the other output flags are named for what they are."""
  assert getattr(cli.build_parser().parse_args(argv), dest) == value
  assert capsys.readouterr().err == ''


@pytest.mark.parametrize('argv, dest, new', [
    (['compile', '--output', 'p.yaml'], 'pipeline_file', '--pipeline-file'),
    (['submit', '--host', 'h', '--file', 'p.yaml'], 'pipeline_file',
     '--pipeline-file'),
    (['predict', '--input', 'x.csv', '--output', 'p.yaml'], 'output_prefix',
     '--output-prefix'),
    (['stream', '--input', 'in', '--output', 'p.yaml'], 'stream_output',
     '--stream-output'),
])
def test_earlier_spellings_still_work_with_a_note(argv, dest, new, capsys):
  args = cli.build_parser().parse_args(argv)
  assert getattr(args, dest) == 'p.yaml'
  old = argv[-2]
  assert capsys.readouterr().err.splitlines() == [
      f'note: `tfx-e2e {argv[0]} {old}` is deprecated; use {new}']
  assert 'output' not in vars(args) or args.output is None


@pytest.mark.parametrize('command', [['compile'], ['predict', '--input', 'x'],
                                     ['stream', '--input', 'i']])
def test_a_required_output_is_still_required(command, capsys):
  with pytest.raises(SystemExit):
    cli.build_parser().parse_args(command)
  assert 'is required' in capsys.readouterr().err


def test_auto_beam_profile_follows_the_input_size():
  config = PipelineConfig().validate()
  assert config.beam.profile == config_lib.AUTO_PROFILE
  assert config.beam_profile(rows=15_002) == 'in-memory'
  assert config.beam_profile(
      rows=config_lib.MULTI_PROCESS_FROM_ROWS) == 'multi-process'
  assert config.beam_profile() == 'in-memory'  # size unknown
  assert config.beam_args() == []  # in-memory: no options (see BEAM_PROFILES)
  pinned = PipelineConfig(beam=config_lib.BeamConfig(profile='in-memory'))
  assert pinned.beam_profile(rows=10**9) == 'in-memory'
  with pytest.raises(ConfigError, match='not one of'):
    PipelineConfig(kubeflow=config_lib.KubeflowConfig(
        beam_profile='auto')).validate()


def test_monitoring_thresholds_per_feature_from_yaml_and_set(tmp_path):
  path = tmp_path / 'c.yaml'
  path.write_text('monitoring:\n  window_seconds: 600\n  thresholds:\n'
                  '    trip_miles: 0.3\n    company: 0.05\n')
  config = config_lib.load_config(str(path), config_lib.parse_overrides(
      ['monitoring.thresholds.trip_miles=0.4',
       'monitoring.categorical_threshold=0.2']))
  assert config.monitoring.window_seconds == 600
  # --set adds to the file's entries, and wins for the same feature.
  assert config.monitoring.thresholds == {'trip_miles': 0.4, 'company': 0.05}
  assert config.monitoring.categorical_threshold == 0.2
  assert PipelineConfig().monitoring.thresholds == {}
  # A saved run's configuration reads back the same.
  saved = config_lib.save_run_config(dataclasses.replace(
      config, output_dir=str(tmp_path / 'out')))
  assert config_lib.load_config(str(saved)).monitoring == config.monitoring


@pytest.mark.parametrize('overrides, message', [
    (['monitoring.window_seconds=0'], 'window_seconds must be > 0'),
    (['monitoring.window_seconds=1.5'], "window_seconds: expected int, got '1.5'"),
    (['monitoring.numeric_threshold=-0.1'], 'must be in [0, 1]'),
    (['monitoring.categorical_threshold=nan'], 'must be in [0, 1]'),
    (['monitoring.thresholds.x=1.5'], 'thresholds.x must be in [0, 1]'),
    (['monitoring.thresholds.x=far'], 'thresholds.x: expected float'),
    (['monitoring.thresholds=0.2'], 'expected a mapping'),
    (['monitoring.drift=maybe'], 'expected true or false'),
    (['monitoring.window=60'], "unknown setting 'monitoring.window'"),
])
def test_bad_monitoring_settings_are_refused(overrides, message):
  with pytest.raises(ConfigError, match=re.escape(message)):
    config_lib.load_config(None, config_lib.parse_overrides(overrides))


@pytest.mark.parametrize('settings,message', [
    (['beam.profile=dataflow'],
     "beam.profile 'dataflow' needs beam.project; beam.region; "
     'beam.temp_location (a gs:// path)'),
    (['beam.profile=dataflow', 'beam.project=p', 'beam.region=r',
      'beam.temp_location=/tmp/x'],
     "beam.profile 'dataflow' needs beam.temp_location (a gs:// path, not "
     "'/tmp/x')"),
    (['beam.profile=flink'],
     "beam.profile 'flink' needs beam.job_endpoint (host:port of the job "
     'server)'),
    (['kubeflow.beam_profile=spark', 'beam.job_endpoint=spark-master'],
     "kubeflow.beam_profile 'spark' needs beam.job_endpoint (host:port of "
     "the job server, not 'spark-master')"),
    (['kubeflow.beam_profile=portable'],
     "kubeflow.beam_profile 'portable' needs beam.worker_pool (host:port of "
     'a worker pool the pods reach: none is started on a cluster)'),
    (['beam.profile=portable', 'beam.worker_pool=nowhere'],
     "beam.profile 'portable' needs beam.worker_pool (host:port of a worker "
     "pool, or empty to start one; not 'nowhere')"),
])
@pytest.mark.parametrize('command', ['run', 'compile'])
def test_runner_profiles_missing_settings_are_refused(settings, message,
                                                      command, tmp_path):
  """By `run` and `compile` alike, before anything runs or is written: one
  message, exit 2."""
  args = [command, '--output', str(tmp_path / 'out')] if command == 'run' else [
      command, '--pipeline-file', str(tmp_path / 'p.yaml')]
  for setting in settings:
    args += ['--set', setting]
  result = run_cli(args)
  assert result.exit_code == 2
  assert result.stderr == f'error: {message}\n'
  assert not list(tmp_path.iterdir())


def test_runner_profiles_with_their_settings_are_accepted():
  for overrides in (
      ['beam.profile=dataflow', 'beam.project=p', 'beam.region=europe-west1',
       'beam.temp_location=gs://bucket/tmp'],
      ['beam.profile=flink', 'beam.job_endpoint=flink:8099'],
      ['kubeflow.beam_profile=spark', 'beam.job_endpoint=[::1]:8099'],
      ['beam.profile=portable'],
      ['kubeflow.beam_profile=portable', 'beam.worker_pool=pool:50000',
       'beam.workers=4']):
    load_config(overrides=parse_overrides(overrides))
  config = load_config(overrides=parse_overrides(
      ['beam.profile=portable', 'beam.worker_pool=localhost:50000',
       'beam.workers=3']))
  assert config.beam_args() == [
      '--runner=PortableRunner', '--job_endpoint=embed',
      '--environment_type=EXTERNAL', '--environment_config=localhost:50000',
      '--direct_num_workers=3']
  with pytest.raises(ConfigError, match='beam.workers must be >= 0'):
    load_config(overrides=parse_overrides(['beam.workers=-1']))


def test_stream_refuses_the_portable_profile(tmp_path):
  result = run_cli(['stream', '--input', str(tmp_path), '--stream-output',
                    str(tmp_path / 'out'), '--set', 'beam.profile=portable'])
  assert result.exit_code == 2
  assert result.stderr.startswith(
      'error: stream cannot run on the portable Beam profile')
  assert not (tmp_path / 'out').exists()
