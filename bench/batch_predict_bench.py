"""Batch prediction benchmark: `tfx-e2e predict` against the floor.

    .venv/bin/python bench/batch_predict_bench.py [--rows 1500000]
        [--shards 8] [--model_base_path DIR]

Resamples the bundled taxi rows (fixed seed) into `--shards` CSV files in a
temporary directory (generated, never committed), then measures in the same
run on the same files and the latest pushed model (default: `make run`'s):
- the floor any implementation pays: one process that reads the CSV with
  pandas, calls the SavedModel's columnar `serving_raw` signature in batches
  of 1,024 and writes the same CSV (key, prediction, model version);
- the Beam job (`batch_predict.run`) on the in-memory DirectRunner and on
  the multi-process one (a worker per core).
Prints a Markdown report for BENCHMARKS.md with rows/s and the ratios.
"""

import argparse
import datetime
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfx_e2e.pipeline import environment  # noqa: E402
environment.configure()  # before anything imports TensorFlow
from tfx_e2e.inference import batch_predict  # noqa: E402
from tfx_e2e.inference import prediction  # noqa: E402
from tfx_e2e.pipeline.config import (  # noqa: E402
    BUNDLED_TAXI_CSV, PipelineConfig)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

SEED = 20261125
FLOOR_BATCH = 1024


def make_data(directory: Path, rows: int, shards: int) -> list:
  source = pd.read_csv(BUNDLED_TAXI_CSV, dtype=str, keep_default_na=False)
  picks = np.random.default_rng(SEED).integers(0, len(source), rows)
  paths = []
  for shard, part in enumerate(np.array_split(picks, shards)):
    path = directory / f'taxi-{shard:03d}.csv'
    source.iloc[part].to_csv(path, index=False)
    paths.append(path)
  return paths


def floor(paths, model_dir: str, output: Path) -> int:
  """Plain single-process prediction: pandas in, columnar model calls, CSV
  out. An empty integer cell becomes 0 (serving_raw has no missing marker
  for integers), an empty float NaN and an empty string ''."""
  model = tf.saved_model.load(model_dir)
  signature = model.signatures['serving_raw']
  specs = signature.structured_input_signature[1]
  version = Path(model_dir).name
  rows = 0
  with open(output, 'w') as out:
    out.write('key,prediction,model_version\n')
    for path in paths:
      frame = pd.read_csv(path, usecols=list(specs), dtype={
          name: str for name, spec in specs.items() if spec.dtype == tf.string},
          keep_default_na=False, na_values={
              name: [''] for name, spec in specs.items()
              if spec.dtype != tf.string})
      columns = {}
      for name, spec in specs.items():
        values = frame[name]
        if spec.dtype.is_integer:
          values = values.fillna(0).astype(np.int64)
        elif spec.dtype.is_floating:
          values = values.astype(np.float32)
        columns[name] = values.to_numpy()
      predictions = []
      for start in range(0, len(frame), FLOOR_BATCH):
        batch = {name: tf.constant(values[start:start + FLOOR_BATCH],
                                   dtype=specs[name].dtype)
                 for name, values in columns.items()}
        predictions.append(next(iter(signature(**batch).values())).numpy()
                           .ravel())
      keys = [f'{path}:{line}' for line in range(2, len(frame) + 2)]
      pd.DataFrame({'key': keys, 'prediction': np.concatenate(predictions),
                    'model_version': version}).to_csv(
                        out, header=False, index=False)
      rows += len(frame)
  return rows


def beam_job(pattern: str, model_dir: str, output: Path, profile: str) -> int:
  options = batch_predict.BatchPredictOptions(
      input_pattern=pattern, output_prefix=str(output / 'pred'),
      model_dir=model_dir)
  result = batch_predict.run(options, PipelineConfig().beam_args(profile))
  return result.rows_predicted


def _timed(function, *args):
  start = time.perf_counter()
  rows = function(*args)
  return rows, time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', type=int, default=1_500_000)
  parser.add_argument('--shards', type=int, default=8)
  parser.add_argument('--model_base_path',
                      default=PipelineConfig().serving_model_dir)
  args = parser.parse_args()
  model_dir = prediction.latest_version_dir(args.model_base_path)
  work = Path(tempfile.mkdtemp(prefix='batch-bench-'))
  try:
    started = time.perf_counter()
    (work / 'in').mkdir()
    paths = make_data(work / 'in', args.rows, args.shards)
    size = sum(p.stat().st_size for p in paths) / 2**20
    print(f'data: {args.rows:,} rows in {args.shards} files, {size:.0f} MiB, '
          f'made in {time.perf_counter() - started:.0f} s', flush=True)
    results = []
    for name, function, arguments in (
        ('floor: pandas + SavedModel (serving_raw, batches of 1,024), '
         '1 process', floor, (paths, model_dir, work / 'floor.csv')),
        ('Beam job, in-memory DirectRunner', beam_job,
         (str(work / 'in' / '*.csv'), model_dir, work / 'in-memory',
          'in-memory')),
        ('Beam job, multi-process DirectRunner', beam_job,
         (str(work / 'in' / '*.csv'), model_dir, work / 'multi-process',
          'multi-process'))):
      rows, seconds = _timed(function, *arguments)
      assert rows == args.rows, (name, rows)
      results.append((name, seconds, rows / seconds))
      print(f'{name}: {seconds:.1f} s, {rows / seconds:,.0f} rows/s',
            flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  floor_rate = results[0][2]
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f'\n### Run of {datetime.date.today()} ({platform.node()}, '
        f'{os.cpu_count()} cores, {platform.machine()})\n\n'
        f'{args.rows:,} rows in {args.shards} CSV files, model version '
        f'{Path(model_dir).name}; peak RSS of the benchmark process '
        f'{peak:.1f} GiB.\n\n'
        '| job | wall time | rows/s | ratio to the floor |\n'
        '| --- | ---: | ---: | ---: |')
  for name, seconds, rate in results:
    print(f'| {name} | {seconds:.1f} s | {rate:,.0f} | '
          f'{rate / floor_rate:.2f} |')


if __name__ == '__main__':
  main()
