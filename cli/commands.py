"""The `tfx-e2e` commands (`tfx_e2e.cli.main` runs them).

Sub-commands share one configuration loader (`--config`, `--set`, and the
named flags below), so every runner sees the same `PipelineConfig`.

Each flag means one thing in every command that has it:
  --output DIR          the pipeline run's output directory (run writes it;
                        serve and report read the run there)
  --pipeline-file FILE  the compiled pipeline (compile writes it, submit
                        starts it)
  --file FILE           the HTML report (report)
  --output-prefix PREFIX  the prediction files (predict)
  --stream-output DIR   the stream's predictions, windows, late records and
                        dead letters (stream)
Earlier spellings that meant something else (`compile --output`, `submit
--file`, `predict --output`, `stream --output`) still work, with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from tfx_e2e.pipeline import config as config_lib
from tfx_e2e.components import executors
from tfx_e2e.formats import csv_rules
from tfx_e2e.pipeline import input_check
from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline import worker_pool

_log = logging.getLogger(__name__)

EXIT_CODES_HELP = f"""exit codes:
  {runner.EXIT_PUSHED}  a model was blessed and pushed
  {runner.EXIT_FAILED}  a component failed (the log has the details)
  {runner.EXIT_BAD_INPUT}  bad input data, configuration or command line
  {runner.EXIT_NOT_PUSHED}  the run finished but pushed nothing (model not blessed, or the
     data gate found anomalies)
  {runner.EXIT_BUSY}  another run is using the output directory"""


def _add_config_flags(parser: argparse.ArgumentParser,
                      dataset_flags: bool = True,
                      output_dir_flag: bool = True) -> None:
  group = parser.add_argument_group('configuration')
  group.add_argument('--config', metavar='FILE',
                     help='YAML file with pipeline settings (see '
                     'pipeline/config.py for every setting)')
  if output_dir_flag:
    group.add_argument('--output', metavar='DIR',
                       help="the pipeline run's output directory (default: "
                       f'{config_lib.PipelineConfig.output_dir})')
  group.add_argument('--set', metavar='KEY=VALUE', action='append',
                     default=[], dest='overrides',
                     help='any setting, e.g. training.train_steps=500 or '
                     'evaluation.rmse_upper_bound=8 (repeatable)')
  if not dataset_flags:
    return
  group.add_argument('--data', metavar='PATH',
                     help='a CSV file or a directory of CSV files; without '
                     '--config this selects another dataset, so the bundled '
                     "taxi data's feature settings and RMSE bound do not "
                     'apply (the blessing gates are scale-free: R² >= 0, '
                     'RMSE within 1%% of the served model)')
  group.add_argument('--label', help='the numeric column to predict')
  group.add_argument('--exclude', metavar='COLS',
                     help='comma-separated columns that are not features')
  group.add_argument('--categorical', metavar='COLS',
                     help='comma-separated numeric columns to treat as '
                     'categories')
  group.add_argument('--slice', metavar='COLS',
                     help='comma-separated columns to slice evaluation by')
  group.add_argument('--schema', metavar='FILE',
                     help='a curated schema.pbtxt (ImportSchemaGen)')
  group.add_argument('--orchestrator', choices=config_lib.ORCHESTRATORS)


class _DeprecatedFlag(argparse.Action):
  """An earlier spelling of a flag: stores what the new one does, and says
  so in one line on stderr."""

  def __init__(self, option_strings, dest, new_flag: str, **kwargs):
    self.new_flag = new_flag
    super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

  def __call__(self, parser, namespace, values, option_string=None):
    print(f'note: `{parser.prog} {option_string}` is deprecated; use '
          f'{self.new_flag}', file=sys.stderr)
    if not values.strip():
      raise argparse.ArgumentError(self, 'an empty name is not a path')
    setattr(namespace, self.dest, values)


def _path_value(text: str) -> str:
  """A flag's file or directory name: an empty one would mean the working
  directory, or names that start with '-'."""
  if not text.strip():
    raise argparse.ArgumentTypeError('an empty name is not a path')
  return text


def _add_renamed_flag(parser: argparse.ArgumentParser, flag: str, old: str,
                      required: bool = False, **kwargs) -> None:
  """`flag`, and `old`, the spelling it replaces, kept working for scripts
  that use it (with a deprecation note); one of them is needed when
  `required`."""
  # Both spellings at once would leave one of them silently unused.
  target = parser.add_mutually_exclusive_group(required=required)
  action = target.add_argument(flag, type=_path_value, **kwargs)
  target.add_argument(old, dest=action.dest, action=_DeprecatedFlag,
                      new_flag=flag, metavar=kwargs.get('metavar'))


# `stream` flags that are shorthands for settings of the stream section.
_STREAM_FLAGS = {
    'event_time_column': ('--event-time-column', 'COLUMN', str),
    'window_seconds': ('--window', 'SECONDS', int),
    'period_seconds': ('--period', 'SECONDS', int),
    'allowed_lateness_seconds': ('--allowed-lateness', 'SECONDS', int),
    'watermark_lag_seconds': ('--watermark-lag', 'SECONDS', int),
    'poll_seconds': ('--poll', 'SECONDS', float),
    'idle_timeout_seconds': ('--idle-timeout', 'SECONDS', float),
    'max_files': ('--max-files', 'N', int),
}


def load_config(args: argparse.Namespace) -> config_lib.PipelineConfig:
  """The configuration from --config, the named flags and --set.

  Commands that use a finished run (`report`, `serve`, `predict`) start
  from the configuration recorded in its output directory, if there is one.
  """
  if not args.config and getattr(args, 'reads_run', False):
    runs = [getattr(args, 'output', None) or
            config_lib.PipelineConfig.output_dir]
    model = getattr(args, 'model', None)
    if model and not getattr(args, 'output', None):
      # The run that pushed the model (<output>/serving/<name>[/<version>])
      # says how its CSV input was read.
      runs[:0] = [str(p) for p in Path(model).resolve().parents[1:3]]
    args.config = next(filter(None, map(config_lib.run_config_file, runs)),
                       None)
  base = None
  data = getattr(args, 'data', None)
  if data and not args.config:
    # Another dataset: no taxi feature settings, names after the data.
    stem = re.sub(r'(\.csv)?(\.(gz|bz2|xz))?$', '', Path(data).name.lower())
    name = re.sub(r'[^a-z0-9]+', '-', stem).strip('-')
    name = name or 'data'
    base = config_lib.PipelineConfig(
        pipeline_name=name, model_name=name.replace('-', '_'),
        data=config_lib.DataConfig(
            path=data, label='', exclude_features=[],
            categorical_features=[], slice_features=[]),
        # The taxi's RMSE bound is in dollars: gates that fit any scale.
        evaluation=dataclasses.replace(config_lib.SCALE_FREE_EVALUATION))
  flags = {
      'output_dir': getattr(args, 'output', None),
      'orchestrator': getattr(args, 'orchestrator', None),
      'data': {key: getattr(args, flag, None) for key, flag in (
          ('path', 'data'), ('label', 'label'),
          ('exclude_features', 'exclude'),
          ('categorical_features', 'categorical'),
          ('slice_features', 'slice'), ('schema', 'schema'))
               if getattr(args, flag, None) is not None},
      'stream': {key: getattr(args, key) for key in _STREAM_FLAGS
                 if getattr(args, key, None) is not None},
  }
  if getattr(args, 'allow_anomalies', False):
    flags['allow_anomalies'] = True
  if getattr(args, 'no_cache', False):
    flags['enable_cache'] = False
  overrides = {k: v for k, v in flags.items() if v not in (None, {})}
  for section, values in config_lib.parse_overrides(args.overrides).items():
    if isinstance(values, dict) and isinstance(overrides.get(section), dict):
      overrides[section].update(values)
    else:
      overrides[section] = values
  return config_lib.load_config(args.config, overrides, base=base)


@contextlib.contextmanager
def _logs_to_file(log_path: Path, verbose: bool):
  """Sends Python logging and native stderr (TF, Beam) to `log_path`.

  The console then shows only progress and the summary; --verbose keeps
  everything on stderr as well.
  """
  log_path.parent.mkdir(parents=True, exist_ok=True)
  with open(log_path, 'a', buffering=1) as log_file:
    root = logging.getLogger()
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(levelname)s %(name)s: %(message)s'))
    # Only ours: a library's stderr handler would write each line twice.
    saved_handlers, root.handlers = root.handlers, [handler]
    if verbose:
      root.addHandler(logging.StreamHandler(sys.stderr))
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    saved_stderr = os.dup(2)
    if not verbose:
      sys.stderr.flush()
      os.dup2(log_file.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved_stderr, 2)
      os.close(saved_stderr)
      root.handlers = saved_handlers


def _print_progress(node: str, event: str, index: int, total: int,
                    seconds: float = 0.0) -> None:
  if event == 'running':
    print(f'[{index}/{total}] {node} ...', end='', flush=True)
  elif event == 'skipped':
    print(' skipped', flush=True)
  else:
    print(f' {seconds:.1f}s', flush=True)


def _run(args: argparse.Namespace) -> int:
  """`tfx-e2e run`: checks the input, runs the pipeline, writes the report.

  Args:
    args: the parsed command line (configuration flags, --allow-anomalies,
      --no-cache, --verbose).

  Returns:
    The exit code of the run (runner.EXIT_*).
  """
  config = load_config(args)
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  log_path = config.output_path / 'logs' / f'run-{stamp}.log'
  print(f'Running pipeline {config.pipeline_name} ({config.orchestrator} '
        f'orchestrator) on {config.data.path}', flush=True)
  # Before the log: nothing of a rejected run goes into the output directory.
  report = input_check.check_input(config)
  print('\n'.join([f'Input: {report.rows:,} rows, {len(report.columns)} '
                   'columns', *input_check.input_notes(report),
                   f'Output: {config.output_path}  (log: {log_path})']),
        flush=True)
  differ = executors.mismatches() if config.beam.fast_paths else []
  if differ:
    print('note: TFX\'s stock executors run instead of the fast paths, '
          'which were written for other library versions: ' +
          '; '.join(differ), flush=True)
  with _logs_to_file(log_path, args.verbose):
    outcome = runner.run(config, progress=_print_progress, report=report)
    report_path = _write_report(outcome.config)
  from tfx_e2e.reports.summary import format_summary
  print('\n' + format_summary(outcome, str(log_path)), flush=True)
  if report_path:
    print(f'Report: {report_path}', flush=True)
  return outcome.exit_code


def _write_report(config: config_lib.PipelineConfig) -> Optional[Path]:
  """The HTML report of the run; a failure here does not fail the run."""
  from tfx_e2e.reports import report  # pylint: disable=import-outside-toplevel
  try:
    return report.write_report(config)
  except Exception:  # pylint: disable=broad-except
    _log.exception('writing the HTML report failed')
    print('warning: the HTML report could not be written (see the log)',
          file=sys.stderr)
    return None


def _report(args: argparse.Namespace) -> int:
  """`tfx-e2e report`: the HTML report of the run in --output.

  Args:
    args: the parsed command line (--output, --file, --verbose).

  Returns:
    0; a missing run is a ConfigError.
  """
  config = load_config(args)
  if not config.output_path.is_dir():
    # Nothing is created for a mistyped directory.
    raise config_lib.ConfigError(
        f'no such output directory: {config.output_path} (give a pipeline '
        "run's output directory with --output)")
  log_path = config.output_path / 'logs' / (
      f'report-{datetime.datetime.now():%Y%m%d-%H%M%S}.log')
  # TensorFlow's start-up noise goes to the log.
  with _logs_to_file(log_path, args.verbose):
    from tfx_e2e.reports import report  # pylint: disable=import-outside-toplevel
    try:
      path = report.write_report(config, args.report_file)
    except (FileNotFoundError, LookupError) as e:
      raise config_lib.ConfigError(
          f'no pipeline run to report on in {config.output_path}: {e}'
      ) from None
  print(f'Report: {path}')
  return 0


@contextlib.contextmanager
def _quiet_native_stderr(verbose: bool):
  """Native stderr (TensorFlow's CUDA and TensorRT start-up notes) goes
  nowhere while in the block, unless `verbose`; Python exceptions still
  reach the user."""
  if verbose:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def _serve(args: argparse.Namespace) -> int:
  """`tfx-e2e serve`: serves the pushed model of the run in --output.

  Args:
    args: the parsed command line (configuration flags and the
      tensorflow_model_server flags).

  Returns:
    The server's exit code.
  """
  from tfx_e2e.serving import server  # pylint: disable=import-outside-toplevel
  config = load_config(args)
  logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                      format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  # The server's own log stays on stderr; only TensorFlow's import noise
  # is dropped.
  with _quiet_native_stderr(args.verbose):
    import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  try:
    return server.serve(args, config.model_name, config.serving_model_dir)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None


def _compile(args: argparse.Namespace) -> int:
  """`tfx-e2e compile`: writes the pipeline for Kubeflow or Vertex AI.

  Args:
    args: the parsed command line (--target, --pipeline-file, configuration
      flags).

  Returns:
    0.
  """
  from tfx_e2e.pipeline import kubeflow  # pylint: disable=import-outside-toplevel
  config = load_config(args)
  path = kubeflow.compile_pipeline(config, args.target, args.pipeline_file)
  kubeflow_config = config.kubeflow
  volume = (f'; the claim {kubeflow_config.volume_claim} mounted at '
            f'{kubeflow_config.volume_mount_path}'
            if kubeflow.volume_mounted(config, args.target) else '')
  print(f'Wrote the {args.target} pipeline {config.pipeline_name} to {path}\n'
        f'  image {kubeflow_config.image}, pipeline root '
        f'{kubeflow_config.pipeline_root}\n'
        f'  data {kubeflow_config.data_path}, models pushed to '
        f'{kubeflow_config.serving_base}/{config.model_name}{volume}')
  return 0


def _submit(args: argparse.Namespace) -> int:
  """`tfx-e2e submit`: starts a run on a Kubeflow Pipelines endpoint.

  Args:
    args: the parsed command line (--host, --experiment, --run-name,
      --param, --pipeline-file; without it the pipeline is compiled now).

  Returns:
    0.
  """
  import tempfile  # pylint: disable=import-outside-toplevel
  from tfx_e2e.pipeline import kubeflow  # pylint: disable=import-outside-toplevel
  config = load_config(args)
  pipeline_file = args.pipeline_file
  if not pipeline_file:
    pipeline_file = str(kubeflow.compile_pipeline(
        config, 'kubeflow',
        str(Path(tempfile.mkdtemp()) / f'{config.pipeline_name}.yaml')))
  parameters = {key: value for key, _, value in
                (param.partition('=') for param in args.param)}
  result = kubeflow.submit(config, pipeline_file, args.host, args.experiment,
                           args.run_name, parameters)
  print(f'Started run {result.run_id} of {pipeline_file} on {args.host} '
        f'(experiment {args.experiment})')
  return 0


def _latest_model(base_path: str) -> str:
  """The newest version under `base_path` that loads (the rule `serve`
  follows too); says which, and which newer ones were skipped and why."""
  from tfx_e2e.inference import prediction  # pylint: disable=import-outside-toplevel
  try:
    model_dir, skipped = prediction.pick_version(base_path)
  except FileNotFoundError as e:
    raise config_lib.ConfigError(f'{e}: run the pipeline first, or pass '
                                 '--model') from None
  print(f'Model: version {Path(model_dir).name} under {base_path}'
        + ''.join(f'\n  skipped version {version}: {why}'
                  for version, why in sorted(skipped.items(), reverse=True)),
        flush=True)
  return model_dir


def _columns(text: Optional[str]) -> List[str]:
  return [c.strip() for c in (text or '').split(',') if c.strip()]


def _predict_log(output_prefix: str) -> Path:
  """Where `predict` logs: beside its output, or in the temporary directory
  when the output is not local."""
  stamp = f'{datetime.datetime.now():%Y%m%d-%H%M%S}'
  if '://' in output_prefix:
    import tempfile  # pylint: disable=import-outside-toplevel
    return Path(tempfile.gettempdir(), 'tfx-e2e-logs', f'predict-{stamp}.log')
  return Path(f'{output_prefix}-predict-{stamp}.log').resolve()


def _predict(args: argparse.Namespace) -> int:
  """`tfx-e2e predict`: batch prediction as a Beam job.

  Args:
    args: the parsed command line (--input, --output-prefix, --model, the
      row flags, --format, and Beam options in `args.beam_args`).

  Returns:
    0; refused input is a ConfigError.
  """
  config = load_config(args)
  log_path = _predict_log(args.output_prefix)
  # TensorFlow's and Beam's start-up noise goes to the log.
  with _logs_to_file(log_path, args.verbose):
    from tfx_e2e.inference import batch_predict  # pylint: disable=import-outside-toplevel
    from tfx_e2e.inference import prediction  # pylint: disable=import-outside-toplevel
    model_dir = args.model or _latest_model(config.serving_model_dir)
    options = batch_predict.BatchPredictOptions(
        input_pattern=args.input, output_prefix=args.output_prefix,
        model_dir=model_dir, id_column=args.id_column,
        passthrough=_columns(args.passthrough),
        output_format=args.format,
        input_format=args.input_format or batch_predict.input_format_of(
            args.input),
        allow_missing_columns=args.allow_missing_columns,
        csv_rules=csv_rules.CsvRules.of(config), log_dir=args.log_dir,
        model_name=config.model_name)
    # The portable profile's worker pool, if it needs one, lives for the job.
    with worker_pool.for_jobs(config) as job_config:
      beam_args = job_config.beam_args() + list(args.beam_args)
      print(f'Predicting {args.input} with {model_dir} (Beam: '
            f'{" ".join(beam_args)}; log: {log_path})', flush=True)
      try:
        result = batch_predict.run(options, beam_args)
      except prediction.PredictionInputError as e:
        raise config_lib.ConfigError(str(e)) from None
  print(f'Rows read: {result.rows_read:,}; predicted: '
        f'{result.rows_predicted:,}; dead-lettered: '
        f'{result.rows_dead_lettered:,}\n'
        f'Predictions: {args.output_prefix}-*.{args.format}; dead letters: '
        f'{args.output_prefix}-dead-letters-*.jsonl')
  if args.log_dir:
    print(f'Scored rows logged: {args.log_dir}/predict-*.tfrecord')
  for path, columns in sorted(result.imputed_columns.items()):
    print(f'Imputed in every row (--allow-missing-columns): '
          f'{", ".join(columns)} (absent from {path})')
  return 0


def _stream(args: argparse.Namespace) -> int:
  """`tfx-e2e stream`: streaming prediction over a watched directory.

  Args:
    args: the parsed command line (--input, --stream-output, --model,
      --pattern, the row flags, the stream settings' flags, and Beam
      options in `args.beam_args`).

  Returns:
    0 once the stream has stopped; a missing input directory is a
    ConfigError.
  """
  config = load_config(args)
  if config.beam_profile() == worker_pool.PORTABLE:
    raise config_lib.ConfigError(
        'stream cannot run on the portable Beam profile: its embedded job '
        'service (Beam\'s FnApiRunner) runs bounded jobs only; use '
        'in-memory, multi-process, dataflow, flink or spark')
  output_dir = Path(args.stream_output).resolve()
  log_path = output_dir / 'logs' / (
      f'stream-{datetime.datetime.now():%Y%m%d-%H%M%S}.log')
  # TensorFlow's and Beam's start-up noise goes to the log too.
  with _logs_to_file(log_path, args.verbose):
    return _stream_logged(args, config, output_dir, log_path)


def _stream_logged(args: argparse.Namespace, config: config_lib.PipelineConfig,
                   output_dir: Path, log_path: Path) -> int:
  """`stream` once its log is open: builds the job's options, runs it
  until it stops (a signal writes the STOP file), prints the counts.

  Args:
    args: the parsed command line of `stream`.
    config: the configuration (its stream section, label, CSV rules).
    output_dir: the stream's output directory (--stream-output).
    log_path: where the job logs.

  Returns:
    0.
  """
  import signal  # pylint: disable=import-outside-toplevel
  from tfx_e2e.inference import stream_predict  # pylint: disable=import-outside-toplevel
  options = stream_predict.StreamOptions.of(
      config, input_dir=args.input, output_dir=str(output_dir),
      model_base=args.model, id_column=args.id_column,
      passthrough=_columns(args.passthrough), pattern=args.pattern,
      allow_missing_columns=args.allow_missing_columns, log_dir=args.log_dir,
      model_name=config.model_name)
  settings = options.settings
  model_dir = _latest_model(options.model_base)
  try:
    stream_predict.check_input(options)
  except FileNotFoundError as e:
    raise config_lib.ConfigError(str(e)) from None
  stop_file = output_dir / stream_predict.STOP_FILE

  def request_stop(signum, _):
    print(f'\n{signal.Signals(signum).name}: stopping; the open windows are '
          'written first (again to quit at once)', flush=True)
    stop_file.touch()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

  stops = [f'{settings.idle_timeout_seconds:g} s without a new file'
           if settings.idle_timeout_seconds is not None else None,
           f'{settings.max_files} files' if settings.max_files else None,
           f'Ctrl-C or a file named {stop_file}']
  print(f'Watching {options.input_dir}/{options.pattern} with {model_dir} '
        '(and newer versions as they are pushed)\n'
        f'Windows: {settings.window_seconds} s every {settings.period_seconds}'
        f' s by {settings.event_time_column}; allowed lateness '
        f'{settings.allowed_lateness_seconds} s\n'
        f'Output: {output_dir}; stops after '
        f'{" or ".join(s for s in stops if s)}\n'
        f'Log: {log_path}', flush=True)
  saved = {s: signal.signal(s, request_stop)
           for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    result = stream_predict.run(options,
                                config.beam_args() + list(args.beam_args))
  finally:
    for number, handler in saved.items():
      signal.signal(number, handler)
  print(f'Files read: {result.files_read:,} (replayed from an earlier run: '
        f'{result.files_replayed:,}); rows read: {result.rows_read:,}; '
        f'predicted: {result.rows_predicted:,}; dead-lettered: '
        f'{result.rows_dead_lettered:,}; too late for their windows: '
        f'{result.records_too_late:,}\n'
        f'Windows: {result.windows:,} (summary: {result.summary_csv}); model '
        f'versions used: {", ".join(result.model_versions) or "none"}')
  if result.files_imputed:
    print(f'Files predicted without some of the model\'s columns, imputed in '
          f'every row (--allow-missing-columns): {result.files_imputed:,}')
  return 0


EXIT_OUT_OF_BOUNDS = 3  # monitor: skew, drift or anomalies in a window


def _monitor_logged(args: argparse.Namespace,
                    config: config_lib.PipelineConfig, output_dir: str,
                    log_path: Path, beam_args):
  """The monitor's Beam job, its logs in `log_path`."""
  with _logs_to_file(log_path, args.verbose):
    from tfx_e2e.monitoring import monitor  # pylint: disable=import-outside-toplevel
    try:
      baseline_of = None
      if args.baseline_statistics or args.baseline_schema:
        if not (args.baseline_statistics and args.baseline_schema):
          raise monitor.MonitorInputError(
              '--baseline-statistics and --baseline-schema go together')
        given = monitor.baseline_from_files(args.baseline_statistics,
                                            args.baseline_schema)
        baseline_of = lambda version: given  # pylint: disable=unnecessary-lambda-assignment
      return monitor.run(config, args.logs, output_dir, beam_args,
                         baseline_of)
    except monitor.MonitorInputError as e:
      raise config_lib.ConfigError(str(e)) from None


def _monitor(args: argparse.Namespace) -> int:
  """`tfx-e2e monitor`: skew and drift of logged requests (a Beam job).

  Args:
    args: the parsed command line (--logs, --monitor-output, --window,
      configuration flags, and Beam options in `args.beam_args`).

  Returns:
    0 when every window is within its thresholds, EXIT_OUT_OF_BOUNDS when
    any is not; no logs or no baseline is a ConfigError.
  """
  if args.window is not None:
    args.overrides = list(args.overrides) + [
        f'monitoring.window_seconds={args.window}']
  config = load_config(args)
  output_dir = (args.monitor_output or str(config.output_path / 'monitoring'))
  # A remote output (gs://) keeps its log on this machine.
  log_name = f'monitor-{datetime.datetime.now():%Y%m%d-%H%M%S}.log'
  log_path = (Path(output_dir).resolve() / 'logs' / log_name
              if '://' not in output_dir else
              Path(tempfile.gettempdir(), 'tfx-e2e-logs', log_name))
  # The portable profile's worker pool, if it needs one, lives for the job.
  with worker_pool.for_jobs(config) as job_config:
    beam_args = job_config.beam_args() + list(args.beam_args)
    print(f'Monitoring {args.logs} against the training data of the run in '
          f'{config.output_path} (windows of '
          f'{config.monitoring.window_seconds} s; Beam: '
          f'{" ".join(beam_args)}; log: {log_path})', flush=True)
    result = _monitor_logged(args, config, output_dir, log_path, beam_args)
  for path, reason in result.bad_files:
    print(f'bad log file, skipped: {path}: {reason}', file=sys.stderr)
  print(f'Log files: {result.files:,} ({len(result.bad_files):,} bad, '
        f'skipped); records: {result.records:,}; rows: {result.rows:,}; '
        f'windows: {len(result.windows):,}\n'
        f'Outputs: {output_dir} (windows.csv, windows/<start>/'
        f'statistics.pb and anomalies.pbtxt); report: {result.report}')
  if not result.flagged:
    print('Every window is within its thresholds.')
    return 0
  from tfx_e2e.monitoring import monitor  # pylint: disable=import-outside-toplevel
  for window in result.flagged:
    print(f'OUT OF BOUNDS window {window.name} ({window.rows:,} rows): '
          + '; '.join(f'{feature}: {monitor.describe(info)}'
                      for feature, info in sorted(
                          window.anomalies.anomaly_info.items())))
  return EXIT_OUT_OF_BOUNDS


def _add_row_flags(parser: argparse.ArgumentParser) -> None:
  """What `predict` and `stream` write beside each prediction, and which
  files they take."""
  parser.add_argument('--id-column', dest='id_column',
                      help='the row key column (default: file:line)')
  parser.add_argument('--passthrough', metavar='COLS',
                      help='comma-separated columns to copy to the output')
  parser.add_argument('--log-dir', dest='log_dir', type=_path_value,
                      metavar='DIR',
                      help='also log the scored rows as PredictionLog '
                      'TFRecords there, as `serve --logging_config` logs '
                      'requests (for `tfx-e2e monitor`)')
  parser.add_argument('--allow-missing-columns', action='store_true',
                      dest='allow_missing_columns',
                      help='predict CSV files that lack some of the '
                      "model's feature columns, which the model then imputes "
                      'in every row (without it such files are refused)')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='tfx-e2e', description='End-to-end TFX pipeline on Apache Beam.',
      epilog=EXIT_CODES_HELP,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True,
                                   metavar='COMMAND')
  run_parser = commands.add_parser(
      'run', help='run the pipeline: CSV -> ... -> pushed model',
      epilog=EXIT_CODES_HELP,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_config_flags(run_parser)
  run_parser.add_argument('--allow-anomalies', action='store_true',
                          help='train and push even if ExampleValidator '
                          'finds data anomalies')
  run_parser.add_argument('--no-cache', action='store_true',
                          help='re-run every component')
  run_parser.add_argument('-v', '--verbose', action='store_true',
                          help='also show all logs on stderr')
  run_parser.set_defaults(handler=_run)

  serve_parser = commands.add_parser(
      'serve', help="serve the pushed model over TF Serving's REST and gRPC "
      'API (tensorflow_model_server if installed, else this project\'s '
      'server)')
  _add_config_flags(serve_parser, dataset_flags=False)
  from tfx_e2e.serving.server import add_arguments  # pylint: disable=import-outside-toplevel
  add_arguments(serve_parser)
  serve_parser.add_argument('-v', '--verbose', action='store_true')
  serve_parser.set_defaults(handler=_serve, reads_run=True)

  report_parser = commands.add_parser(
      'report', help='write a self-contained HTML report of the latest run')
  _add_config_flags(report_parser, dataset_flags=False)
  report_parser.add_argument(
      '--file', dest='report_file', default='', metavar='FILE',
      help='where to write it (default: <output>/report.html)')
  report_parser.add_argument('-v', '--verbose', action='store_true',
                             help='also show all logs on stderr')
  report_parser.set_defaults(handler=_report, reads_run=True)

  compile_parser = commands.add_parser(
      'compile', help='write the pipeline for Kubeflow Pipelines (YAML) or '
      'Vertex AI (JSON), placed by the configuration\'s kubeflow section')
  _add_config_flags(compile_parser, dataset_flags=False,
                    output_dir_flag=False)
  compile_parser.add_argument('--target', choices=('kubeflow', 'vertex'),
                              default='kubeflow')
  _add_renamed_flag(compile_parser, '--pipeline-file', '--output',
                    required=True, dest='pipeline_file', metavar='FILE',
                    help='the pipeline file to write (.yaml for kubeflow, '
                    '.json for vertex)')
  compile_parser.set_defaults(handler=_compile)

  submit_parser = commands.add_parser(
      'submit', help='start a run on a Kubeflow Pipelines endpoint')
  _add_config_flags(submit_parser, dataset_flags=False,
                    output_dir_flag=False)
  submit_parser.add_argument('--host', required=True,
                             help='KFP API endpoint, e.g. http://localhost:8080')
  submit_parser.add_argument('--experiment', default='tfx-e2e')
  submit_parser.add_argument('--run-name', dest='run_name')
  submit_parser.add_argument('--param', action='append', default=[],
                             metavar='NAME=VALUE',
                             help='a pipeline run parameter (repeatable)')
  _add_renamed_flag(submit_parser, '--pipeline-file', '--file',
                    dest='pipeline_file', metavar='FILE',
                    help='a compiled pipeline (default: compile now)')
  submit_parser.set_defaults(handler=_submit)

  predict_parser = commands.add_parser(
      'predict', help='batch prediction over CSV files as a Beam job (other '
      'flags go to Beam as pipeline options)')
  _add_config_flags(predict_parser, dataset_flags=False,
                    output_dir_flag=False)
  predict_parser.add_argument('--input', required=True,
                              metavar='PATH_OR_GLOB',
                              help='CSV files, or TFRecord files of '
                              'tf.Example (.tfrecord[s][.gz])')
  predict_parser.add_argument('--input-format', dest='input_format',
                              choices=('csv', 'tfrecord'),
                              help='default: from the file names')
  _add_renamed_flag(predict_parser, '--output-prefix', '--output',
                    required=True, dest='output_prefix', metavar='PREFIX',
                    help='the prediction files: PREFIX-NNNNN-of-NNNNN.csv '
                    '(or .jsonl), and PREFIX-dead-letters-*.jsonl')
  predict_parser.add_argument('--model', metavar='DIR',
                              help='a SavedModel version directory (default: '
                              'the latest pushed version)')
  _add_row_flags(predict_parser)
  predict_parser.add_argument('--format', choices=('csv', 'jsonl'),
                              default='csv')
  predict_parser.add_argument('-v', '--verbose', action='store_true',
                              help='also show all logs on stderr')
  predict_parser.set_defaults(handler=_predict, accepts_beam_args=True,
                              reads_run=True)

  stream_parser = commands.add_parser(
      'stream', help='streaming prediction over CSV files arriving in a '
      'directory, in event-time windows (other flags go to Beam)')
  _add_config_flags(stream_parser, dataset_flags=False,
                    output_dir_flag=False)
  stream_parser.add_argument('--input', required=True, metavar='DIR',
                             help='the directory to watch')
  stream_parser.add_argument('--pattern',
                             help='file names to read (default: *.csv)')
  _add_renamed_flag(stream_parser, '--stream-output', '--output',
                    required=True, dest='stream_output', metavar='DIR',
                    help='where predictions, windows, late records and dead '
                    'letters go')
  stream_parser.add_argument('--model', metavar='BASE_PATH',
                             help='a TF Serving model base path (default: the '
                             "pipeline's push destination); the newest "
                             'complete version is used, and followed')
  _add_row_flags(stream_parser)
  for key, (flag, metavar, kind) in _STREAM_FLAGS.items():
    stream_parser.add_argument(flag, dest=key, metavar=metavar, type=kind,
                               help=f'stream.{key}')
  stream_parser.add_argument('-v', '--verbose', action='store_true',
                             help='also show all logs on stderr')
  stream_parser.set_defaults(handler=_stream, accepts_beam_args=True,
                             reads_run=True)
  monitor_parser = commands.add_parser(
      'monitor', help='training/serving skew and drift of logged requests '
      '(PredictionLog TFRecords) with TFDV, per window of request time, as a '
      'Beam job; exit 3 if any window is out of bounds',
      epilog='exit codes: 0 every window within its thresholds; 2 bad '
      'input; 3 skew, drift or schema anomalies in a window (named)',
      formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_config_flags(monitor_parser, dataset_flags=False)
  monitor_parser.add_argument('--logs', required=True, type=_path_value,
                              metavar='DIR_OR_GLOB',
                              help='request logs: a directory of *.tfrecord '
                              'files, a glob or a file')
  monitor_parser.add_argument('--monitor-output', dest='monitor_output',
                              type=_path_value, metavar='DIR',
                              help='where windows.csv, the statistics, '
                              'anomalies and monitoring.html go (default: '
                              '<output>/monitoring)')
  monitor_parser.add_argument('--window', type=int, metavar='SECONDS',
                              help='monitoring.window_seconds (default '
                              '3600)')
  monitor_parser.add_argument(
      '--baseline-statistics', dest='baseline_statistics', type=_path_value,
      metavar='FILE', help="the training split's FeatureStats.pb of "
      "StatisticsGen, with --baseline-schema: instead of the run's MLMD "
      'store (on Kubeflow, whose MLMD is a service)')
  monitor_parser.add_argument('--baseline-schema', dest='baseline_schema',
                              type=_path_value, metavar='FILE',
                              help="SchemaGen's schema.pbtxt")
  monitor_parser.add_argument('-v', '--verbose', action='store_true',
                              help='also show all logs on stderr')
  monitor_parser.set_defaults(handler=_monitor, accepts_beam_args=True,
                              reads_run=True)
  return parser


def _ignore_tensorflow_teardown_errors() -> None:
  """TF 2.16's AtomicFunction.__del__ fails when it runs during interpreter
  teardown (the module globals it uses are gone), printing "Exception
  ignored" tracebacks after the run's summary. Those, and only those, are
  dropped."""
  default_hook = sys.unraisablehook

  def hook(unraisable):
    if getattr(unraisable.object, '__qualname__', '') != (
        'AtomicFunction.__del__'):
      default_hook(unraisable)

  sys.unraisablehook = hook


def main(argv: Optional[List[str]] = None) -> int:
  """`tfx-e2e`: runs the sub-command of the command line.

  Args:
    argv: the arguments (default: sys.argv[1:]); flags that no sub-command
      knows go to Beam for `predict` and `stream`.

  Returns:
    The exit code: the command's, runner.EXIT_BAD_INPUT for bad input,
    configuration or command line, runner.EXIT_FAILED, runner.EXIT_BUSY,
    or 130 when interrupted.
  """
  _ignore_tensorflow_teardown_errors()
  parser = build_parser()
  args, unknown = parser.parse_known_args(argv)
  if unknown and not getattr(args, 'accepts_beam_args', False):
    parser.error(f'unrecognized arguments: {" ".join(unknown)}')
  args.beam_args = unknown
  try:
    return args.handler(args)
  except (config_lib.ConfigError, input_check.InputError) as e:
    print(f'error: {e}', file=sys.stderr)
    return runner.EXIT_BAD_INPUT
  except OSError as e:  # e.g. an unwritable output directory
    print(f'error: {e.filename or ""}: {e.strerror or e}', file=sys.stderr)
    return runner.EXIT_BAD_INPUT
  except runner.ComponentFailed as e:
    print(f'error: {e}', file=sys.stderr)
    return runner.EXIT_FAILED
  except runner.OutputBusy as e:
    print(f'error: {e}', file=sys.stderr)
    return runner.EXIT_BUSY
  except KeyboardInterrupt:
    print('interrupted', file=sys.stderr)
    return 130

