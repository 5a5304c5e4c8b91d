"""`tfx-e2e serve`: TF Serving for the pipeline's push destination.

It takes `tensorflow_model_server`'s own flags. If that binary is on PATH (or
named by --tensorflow_model_server), it is run with those flags and a
generated model config; otherwise this project's server answers the same
REST and gRPC API from the same model base path.
"""

from __future__ import annotations

import argparse
from concurrent import futures
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfx_e2e.serving.model_config import ModelConfig, VersionPolicy

if TYPE_CHECKING:  # imported where used: it loads TensorFlow
  from tfx_e2e.serving import request_log

MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """tensorflow_model_server's flags (same names), then this server's own."""
  tfs = parser.add_argument_group('tensorflow_model_server flags')
  tfs.add_argument('--port', type=int, default=8500,
                   help='gRPC port (default 8500)')
  tfs.add_argument('--rest_api_port', type=int, default=8501,
                   help='REST port (default 8501; 0 turns REST off)')
  tfs.add_argument('--model_name',
                   help="default: the configured pipeline's model_name")
  tfs.add_argument('--model_base_path',
                   help="default: the configured pipeline's push destination")
  tfs.add_argument('--model_config_file',
                   help='a ModelServerConfig text proto (several models, '
                   'version policies and labels)')
  tfs.add_argument('--file_system_poll_wait_seconds', type=float, default=1.0,
                   help='how often to look for new versions (default 1)')
  tfs.add_argument('--enable_batching', nargs='?', const='true',
                   default='false', help='batch concurrent requests')
  tfs.add_argument('--batching_parameters_file',
                   help='BatchingParameters text proto: max_batch_size, '
                   'batch_timeout_micros, num_batch_threads')
  tfs.add_argument('--rest_api_num_threads', type=int, default=16)
  tfs.add_argument('--logging_config', metavar='FILE',
                   help='a LoggingConfig text proto: log sampled requests '
                   'as PredictionLog TFRecords (every model; a model\'s '
                   'logging_config in --model_config_file takes precedence)')
  own = parser.add_argument_group('this server')
  # The defaults are serving.request_log's, which imports TensorFlow: not
  # when the command line is parsed (its start-up noise would reach the
  # console before the commands send it to their logs).
  own.add_argument('--log_max_file_bytes', type=_positive(int),
                   help='a request log file is completed at this size '
                   '(default 64 MiB)')
  own.add_argument('--log_max_file_seconds', type=_positive(float),
                   help='... or this long after its first record (default '
                   '300)')
  own.add_argument('--log_queue_records', type=_positive(int),
                   help='records waiting to be written; more are dropped '
                   'and counted (default 10000)')
  own.add_argument('--bind_address', default='127.0.0.1',
                   help='address to listen on (default: loopback only)')
  own.add_argument('--max_body_bytes', type=int,
                   default=DEFAULT_MAX_BODY_BYTES,
                   help='largest REST body / gRPC message (default 16 MiB)')
  own.add_argument('--request_timeout_seconds', type=float, default=30.0,
                   help='longest time a REST connection may take to send a '
                   'whole request, idle time before it included (default '
                   '30): slow clients cannot hold connections open')
  own.add_argument('--tensorflow_model_server', metavar='PATH',
                   help='run this tensorflow_model_server binary; default: '
                   'the one on PATH, if any')
  own.add_argument('--own_server', action='store_true',
                   help="use this project's server even if "
                   'tensorflow_model_server is on PATH')


def _positive(kind):
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(
          f'expected a {kind.__name__}, got {text!r}') from None
    if not value > 0 or value == float('inf'):
      raise argparse.ArgumentTypeError(f'must be > 0 and finite: {text}')
    return value
  return parse


def _policy(config) -> VersionPolicy:
  kind = config.model_version_policy.WhichOneof('policy_choice')
  if kind == 'all':
    return VersionPolicy('all')
  if kind == 'specific':
    return VersionPolicy('specific',
                         specific=tuple(config.model_version_policy
                                        .specific.versions))
  if kind == 'latest':
    return VersionPolicy('latest', latest=max(
        1, config.model_version_policy.latest.num_versions))
  return VersionPolicy()


def _server_config(args) -> model_server_config_pb2.ModelServerConfig:
  server_config = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(Path(args.model_config_file).read_text(), server_config)
  except (OSError, UnicodeDecodeError, text_format.ParseError) as e:
    raise ValueError(
        f'--model_config_file {args.model_config_file}: {e}') from None
  return server_config


def logging_configs(args, configs: List[ModelConfig]) -> dict:
  """{model name: its LoggingConfig}: from the model's logging_config in
  --model_config_file, else --logging_config; models with neither are not
  logged.

  Raises:
    ValueError: a LoggingConfig that cannot be used (the message says
      which and why).
  """
  from tfx_e2e.serving import request_log  # pylint: disable=import-outside-toplevel
  found = {}
  if args.logging_config:
    default = request_log.read_logging_config(args.logging_config)
    found = {config.name: default for config in configs}
  if args.model_config_file:
    for entry in _server_config(args).model_config_list.config:
      if entry.HasField('logging_config'):
        request_log.check_logging_config(
            entry.logging_config,
            f'--model_config_file {args.model_config_file}, model '
            f'{entry.name}: logging_config')
        found[entry.name] = entry.logging_config
  return found


def request_loggers(args, configs: List[ModelConfig]
                    ) -> request_log.RequestLoggers:
  """A logger per distinct LoggingConfig (see logging_configs)."""
  from tfx_e2e.serving import request_log  # pylint: disable=import-outside-toplevel
  by_text, by_model = {}, {}
  for name, config in logging_configs(args, configs).items():
    key = text_format.MessageToString(config)
    if key not in by_text:
      by_text[key] = request_log.RequestLogger(
          config,
          args.log_max_file_bytes or request_log.DEFAULT_MAX_FILE_BYTES,
          args.log_max_file_seconds or request_log.DEFAULT_MAX_FILE_SECONDS,
          args.log_queue_records or request_log.DEFAULT_QUEUE_RECORDS)
    by_model[name] = by_text[key]
  return request_log.RequestLoggers(by_model)


def model_configs(args, default_name: str,
                  default_base_path: str) -> List[ModelConfig]:
  """The models to serve, from --model_config_file or --model_name/_base_path."""
  if args.model_config_file:
    server_config = _server_config(args)
    return [ModelConfig(name=c.name, base_path=c.base_path,
                        policy=_policy(c),
                        labels=tuple(sorted(c.version_labels.items())))
            for c in server_config.model_config_list.config]
  return [ModelConfig(name=args.model_name or default_name,
                      base_path=args.model_base_path or default_base_path)]


def batching_parameters(args):
  from tfx_e2e.serving.batching import BatchingParameters  # pylint: disable=import-outside-toplevel
  if args.enable_batching.lower() not in ('true', '1', 'yes'):
    return None
  if not args.batching_parameters_file:
    return BatchingParameters()
  # BatchingParameters' text form: `max_batch_size { value: 128 }` etc.
  text = Path(args.batching_parameters_file).read_text()
  values = {key: int(value) for key, value in re.findall(
      r'(\w+)\s*\{\s*value\s*:\s*(\d+)\s*\}', text)}
  known = {f: values[f] for f in ('max_batch_size', 'batch_timeout_micros',
                                  'num_batch_threads') if f in values}
  return BatchingParameters(**known)


def _model_server_config_text(configs: List[ModelConfig],
                              logging: Optional[dict] = None) -> str:
  server_config = model_server_config_pb2.ModelServerConfig()
  for config in configs:
    entry = server_config.model_config_list.config.add(
        name=config.name, base_path=str(Path(config.base_path).resolve()),
        model_platform='tensorflow')
    policy = entry.model_version_policy
    if config.policy.kind == 'all':
      policy.all.SetInParent()
    elif config.policy.kind == 'specific':
      policy.specific.versions.extend(config.policy.specific)
    else:
      policy.latest.num_versions = config.policy.latest
    for label, version in config.labels:
      entry.version_labels[label] = version
    if logging and config.name in logging:
      entry.logging_config.CopyFrom(logging[config.name])
  return text_format.MessageToString(server_config)


def find_model_server(args) -> Optional[str]:
  if args.own_server:
    return None
  if args.tensorflow_model_server:
    return args.tensorflow_model_server
  return shutil.which('tensorflow_model_server')


def run_model_server(binary: str, args, configs: List[ModelConfig]) -> int:
  """Replaces this process with the real tensorflow_model_server."""
  config_dir = Path(tempfile.mkdtemp(prefix='tfx-e2e-serving-'))
  config_file = config_dir / 'models.config'
  config_file.write_text(_model_server_config_text(
      configs, logging_configs(args, configs)))
  argv = [binary, f'--port={args.port}',
          f'--rest_api_port={args.rest_api_port}',
          f'--model_config_file={config_file}',
          f'--file_system_poll_wait_seconds='
          f'{args.file_system_poll_wait_seconds:g}',
          f'--rest_api_num_threads={args.rest_api_num_threads}',
          f'--enable_batching={args.enable_batching}']
  if args.batching_parameters_file:
    argv.append(f'--batching_parameters_file={args.batching_parameters_file}')
  print(f'Running {" ".join(argv)}', flush=True)
  os.execv(binary, argv)
  return 0  # not reached


def run_own_server(args, configs: List[ModelConfig]) -> int:
  """Serves until SIGINT/SIGTERM; returns the exit code."""
  import tornado.httpserver  # pylint: disable=import-outside-toplevel
  import tornado.ioloop  # pylint: disable=import-outside-toplevel

  from tfx_e2e.serving import api, grpc_service, rest  # pylint: disable=import-outside-toplevel
  from tfx_e2e.serving.batching import Batcher  # pylint: disable=import-outside-toplevel
  from tfx_e2e.serving.inference import Inference  # pylint: disable=import-outside-toplevel
  from tfx_e2e.serving.models import ModelManager  # pylint: disable=import-outside-toplevel

  parameters = batching_parameters(args)
  loggers = request_loggers(args, configs)
  manager = ModelManager(configs, args.file_system_poll_wait_seconds)
  service = api.ModelService(
      manager, Inference(Batcher(parameters) if parameters else None,
                         loggers), loggers)
  manager.start()
  loggers.start()
  for config in configs:
    logger = loggers.get(config.name)
    if logger is not None:
      print(f'Logging {config.name} requests (sampling rate '
            f'{logger.sampling_rate:g}) to {logger.prefix}-*.tfrecord',
            flush=True)
  for config in configs:
    versions = sorted(v for v, state in manager.states(config.name).items()
                      if state.state == 'AVAILABLE')
    print(f'Model {config.name}: {config.base_path} '
          f'(versions loaded: {versions or "none yet"})'
          + ''.join(f'\n  skipped version {version}: {why}' for version, why
                    in sorted(manager.skipped(config.name).items(),
                              reverse=True)), flush=True)

  loop = tornado.ioloop.IOLoop.current()
  grpc_server = grpc_service.make_server(
      service, f'{args.bind_address}:{args.port}', max_workers=16,
      max_message_bytes=args.max_body_bytes)
  grpc_server.start()
  print(f'gRPC on {args.bind_address}:{args.port}', flush=True)
  if args.rest_api_port:
    http_server = tornado.httpserver.HTTPServer(
        rest.RestServer(service, args.max_body_bytes,
                        args.request_timeout_seconds),
        max_body_size=args.max_body_bytes + 1,
        max_buffer_size=args.max_body_bytes + 1,
        max_header_size=MAX_HEADER_BYTES)
    http_server.listen(args.rest_api_port, address=args.bind_address)
    loop.asyncio_loop.set_default_executor(
        futures.ThreadPoolExecutor(args.rest_api_num_threads))
    print(f'REST on http://{args.bind_address}:{args.rest_api_port}',
          flush=True)

  def shutdown(*_):
    loop.add_callback_from_signal(loop.stop)

  signal.signal(signal.SIGTERM, shutdown)
  signal.signal(signal.SIGINT, shutdown)
  loop.start()
  grpc_server.stop(grace=2)
  loggers.close()
  for logger in loggers.unique():
    print(f'Request log {logger.prefix}: {logger.logged} records in '
          f'{logger.files_written} files; dropped (queue full): '
          f'{logger.dropped}; failed: {logger.failed}', flush=True)
  manager.stop()
  print('Server stopped', flush=True)
  return 0


def serve(args, default_name: str, default_base_path: str) -> int:
  """Serves the models `args` name: with TF Serving's own
  tensorflow_model_server if one is found, else with this package's server.

  Args:
    args: `tfx-e2e serve`'s parsed arguments (`add_arguments`).
    default_name: the model name when `args` names none.
    default_base_path: where that model's versions are pushed.

  Returns:
    The exit code when the server stops.
  """
  configs = model_configs(args, default_name, default_base_path)
  logging_configs(args, configs)  # a bad one stops here, before serving
  binary = find_model_server(args)
  if binary:
    return run_model_server(binary, args, configs)
  return run_own_server(args, configs)

