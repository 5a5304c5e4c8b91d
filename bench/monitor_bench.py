"""Monitor benchmark: `tfx-e2e monitor` against TFDV's own GenerateStatistics
on the same rows, and the serving latency with request logging off and on.

    .venv/bin/python bench/monitor_bench.py --output DIR [--rows 1000000]

DIR is a pipeline run's output directory (`make run` writes ./output). The
run's ExampleGen examples (both splits, label removed) are resampled to
--rows rows and written twice: as PredictionLog records of one row each
(regress_log, as `serve --logging_config` logs a one-example Regress), and
as plain tf.Example TFRecords. Then, on the same machine and Beam runner:
- the monitor (read, decode, window, TFDV statistics, validate, report);
- TFDV's `generate_statistics_from_tfrecord` over the tf.Examples with
  StatisticsGen's options (statistics only: the floor the monitor builds
  on);
in alternating order, --repeats times each, rows/s from the wall time.
Then `tfx-e2e serve` of the run's pushed model without and with
--logging_config (rate 1), alternating, p50/p99 of one-row predicts over
REST (libcurl) and gRPC.
Prints a Markdown report for BENCHMARKS.md.
"""

import argparse
import datetime
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfx_e2e.pipeline import environment  # noqa: E402
environment.configure()  # before anything imports TensorFlow
import tensorflow as tf  # noqa: E402
import tensorflow_data_validation as tfdv  # noqa: E402

from tfx_e2e.monitoring import monitor  # noqa: E402
from tfx_e2e.pipeline import config as config_lib  # noqa: E402
from tfx_e2e.pipeline import pipeline as pipeline_def  # noqa: E402
from tfx_e2e.reports.results import load_run_results  # noqa: E402
from tfx_e2e.serving import request_log  # noqa: E402

from bench.serving_bench import (_curl_caller, _grpc_caller,  # noqa: E402
                                 latency)
from tests.serving_support import OWN, running_server  # noqa: E402

FILES = 8


def make_data(config, rows: int, work: Path):
  """(logs dir, examples glob, model version) for `rows` resampled rows."""
  results = load_run_results(config)
  uri = results.component(pipeline_def.EXAMPLE_GEN).output('examples').uri
  source = []
  for record in tf.data.TFRecordDataset(
      sorted(tf.io.gfile.glob(f'{uri}/Split-*/*')), compression_type='GZIP'):
    example = tf.train.Example.FromString(record.numpy())
    del example.features.feature[config.data.label]
    source.append(example.SerializeToString())
  version = int(results.pushed_version)
  chosen = random.Random(0).choices(source, k=rows)
  logs, examples = work / 'logs', work / 'examples'
  logs.mkdir(parents=True)
  examples.mkdir(parents=True)
  now = int(time.time())
  per_file = -(-rows // FILES)
  for index in range(FILES):
    part = chosen[index * per_file:(index + 1) * per_file]
    with tf.io.TFRecordWriter(str(logs / f'requests-{index}.tfrecord')) as w:
      # One row a request, all in one window.
      for record in request_log.regress_records(part, [0.0] * len(part),
                                                config.model_name, version,
                                                now):
        w.write(record)
    with tf.io.TFRecordWriter(str(examples / f'data-{index}.tfrecord')) as w:
      for row in part:
        w.write(row)
  return logs, str(examples / '*.tfrecord'), version


def time_monitor(config, logs, work, beam_args):
  out = work / 'monitor-out'
  start = time.perf_counter()
  result = monitor.run(config, str(logs), str(out), beam_args)
  seconds = time.perf_counter() - start
  shutil.rmtree(out)
  return seconds, result.rows


def time_tfdv(pattern, beam_args):
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  stats = tfdv.generate_statistics_from_tfrecord(
      pattern, stats_options=monitor.stats_options(),
      pipeline_options=PipelineOptions(beam_args))
  seconds = time.perf_counter() - start
  return seconds, int(stats.datasets[0].num_examples)


def serving_latency(model_dir: Path, work: Path, calls: int, pairs: int):
  base = work / 'models' / 'taxi_fare'
  shutil.copytree(model_dir, base / model_dir.name)
  config = work / 'logging.config'
  config.write_text(f'log_collector_config {{ type: "tfrecord" '
                    f'filename_prefix: "{work / "served" / "r"}" }} '
                    'sampling_config { sampling_rate: 1 }')
  figures = {False: {'rest': [], 'grpc': []}, True: {'rest': [], 'grpc': []}}
  for _ in range(pairs):
    for logged in (False, True):
      extra = [f'--logging_config={config}'] if logged else []
      with running_server(OWN, ['--model_name=taxi_fare',
                                f'--model_base_path={base}'], work,
                          extra) as server:
        figures[logged]['rest'].append(latency(
            _curl_caller(server, 'taxi_fare', 1), calls))
        figures[logged]['grpc'].append(latency(
            _grpc_caller(server, 'taxi_fare', 1), calls))
  logged_records = sum(1 for path in (work / 'served').glob('r-*.tfrecord')
                       for _ in tf.data.TFRecordDataset(str(path)))
  return figures, logged_records


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--output', default='output',
                      help="a pipeline run's output directory")
  parser.add_argument('--rows', type=int, default=1_000_000)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--calls', type=int, default=3000)
  parser.add_argument('--pairs', type=int, default=2)
  parser.add_argument('--beam', default='in-memory',
                      choices=list(config_lib.BEAM_PROFILES))
  args = parser.parse_args()
  config = config_lib.load_config(config_lib.run_config_file(args.output))
  beam_args = config.beam_args(args.beam)
  work = Path(tempfile.mkdtemp(prefix='monitor-bench-'))
  try:
    started = time.perf_counter()
    logs, pattern, _ = make_data(config, args.rows, work)
    made = time.perf_counter() - started
    log_bytes = sum(p.stat().st_size for p in logs.iterdir())
    runs = {'monitor': [], 'tfdv': []}
    for _ in range(args.repeats):
      runs['monitor'].append(time_monitor(config, logs, work, beam_args))
      runs['tfdv'].append(time_tfdv(pattern, beam_args))
    results = load_run_results(config)
    model_dir = Path(results.pushed_path)
    figures, logged = serving_latency(model_dir, work, args.calls,
                                      args.pairs)
  finally:
    shutil.rmtree(work, ignore_errors=True)

  print(f'### Monitor (issue 23), {datetime.date.today()}\n')
  print(f'{args.rows:,} logged requests of one row each ({FILES} files, '
        f'{log_bytes / 2**20:.0f} MiB of PredictionLog TFRecords; made in '
        f'{made:.0f} s), Beam profile `{args.beam}` '
        f'({" ".join(beam_args) or "DirectRunner, in memory"}), '
        f'{platform.node() and "2 cores"}; {args.repeats} runs each, '
        'alternating.\n')
  print('| job | rows | wall s (runs) | rows/s (median) |')
  print('| --- | ---: | --- | ---: |')
  for name, label in (('monitor', '`tfx-e2e monitor` (read, decode, window, '
                       'statistics, validate, report)'),
                      ('tfdv', "TFDV `generate_statistics_from_tfrecord`, "
                       'same rows as tf.Examples (statistics only)')):
    walls = [s for s, _ in runs[name]]
    rows = runs[name][0][1]
    print(f'| {label} | {rows:,} | '
          f'{" / ".join(f"{s:.1f}" for s in walls)} | '
          f'{rows / statistics.median(walls):,.0f} |')
  print(f'\nServing, one-row predict, {args.calls:,} calls per figure, '
        f'{args.pairs} server starts each, alternating (p50 / p99 ms, '
        f'per start); {logged:,} records logged in the runs with logging.\n')
  print('| API | logging off | logging on (rate 1) | on / off p50 |')
  print('| --- | --- | --- | ---: |')
  for api in ('rest', 'grpc'):
    off = figures[False][api]
    on = figures[True][api]
    ratio = (statistics.median(p for p, _ in on) /
             statistics.median(p for p, _ in off))
    print(f'| {"REST (libcurl)" if api == "rest" else "gRPC"} | '
          + ', '.join(f'{p:.2f} / {q:.2f}' for p, q in off) + ' | '
          + ', '.join(f'{p:.2f} / {q:.2f}' for p, q in on)
          + f' | {ratio:.3f} |')


if __name__ == '__main__':
  main()
