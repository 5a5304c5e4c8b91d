"""Pipeline benchmark: this pipeline next to the TFX taxi template.

    .venv/bin/python bench/pipeline_bench.py [--rows 15002,150000,1500000]
        [--pipelines template,ours,ours-mp]

For each size, the bundled taxi rows are resampled (fixed seed; 15,002 is
the bundled file itself) into a temporary directory. On the same data, in
the same benchmark run, it then runs:
- the TFX taxi template shipped in the pinned tfx wheel (`tfx template copy
  --model=taxi`, every component switched on, its own local_runner.py);
- this project's pipeline (`tfx-e2e run`, the taxi settings, no cache), on
  the in-memory DirectRunner (`ours`), the multi-process one (`ours-mp`)
  and Beam's portable runner with a worker pool (`ours-portable`).
Each runs in its own process, from an empty output directory. Reported:
wall time, each component's time (from MLMD), the peak memory of the
process tree (sampled every 0.5 s) over the run and while each component
ran, and the marginal cost per 100k rows between consecutive sizes (with the
start-up cost: the wall time at no rows on the line through both sizes). Memory
is the sum of the processes' PSS (shared pages counted once, so that the
multi-process runner's workers are not charged three times for the same
TensorFlow libraries); the sum of their RSS is shown too. Prints a Markdown
report for BENCHMARKS.md.
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfx_e2e.pipeline import environment  # noqa: E402
environment.configure()  # before anything imports TensorFlow
from tfx_e2e.pipeline.config import BUNDLED_TAXI_CSV  # noqa: E402
from tfx_e2e.reports.results import latest_component_runs  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402

SEED = 20261125
VENV_BIN = Path(sys.executable).parent
COMPONENTS = ['CsvExampleGen', 'StatisticsGen', 'SchemaGen',
              'ExampleValidator', 'Transform', 'Trainer', 'Evaluator',
              'Pusher']


def make_data(directory: Path, rows: int) -> Path:
  directory.mkdir(parents=True)
  path = directory / 'data.csv'
  if rows == 15002:
    shutil.copy(BUNDLED_TAXI_CSV, path)
  else:
    source = pd.read_csv(BUNDLED_TAXI_CSV, dtype=str, keep_default_na=False)
    picks = np.random.default_rng(SEED).integers(0, len(source), rows)
    source.iloc[picks].to_csv(path, index=False)
  return path


class Sample(NamedTuple):
  at: float   # seconds since the epoch
  pss: float  # MiB, summed over the process tree
  rss: float  # MiB, summed over the process tree


def _timed(command, cwd: Path, log: Path):
  """(wall seconds, [Sample], exit code)."""
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', PYTHONUNBUFFERED='1')
  samples = []
  started = time.monotonic()
  with open(log, 'w') as out:
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    root = psutil.Process(process.pid)
    done = threading.Event()

    def sample():
      while not done.wait(0.5):
        try:
          tree = [root] + root.children(recursive=True)
          memory = [p.memory_full_info() for p in tree if p.is_running()]
          samples.append(Sample(time.time(),
                                sum(m.pss for m in memory) / 2**20,
                                sum(m.rss for m in memory) / 2**20))
        except psutil.Error:
          pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    done.set()
    sampler.join()
  return time.monotonic() - started, samples, code


def _peak(samples: List[Sample], start: float = 0.0,
          end: float = float('inf'), field: str = 'pss') -> float:
  """Peak of `field` (pss or rss) between `start` and `end`."""
  return max((getattr(sample, field) for sample in samples
              if start <= sample.at <= end), default=0.0)


def run_template(work: Path, data: Path):
  """The taxi template with every component switched on."""
  root = work / 'template'
  subprocess.run([str(VENV_BIN / 'tfx'), 'template', 'copy', '--model=taxi',
                  '--pipeline_name=taxi-template',
                  f'--destination_path={root}'], check=True,
                 capture_output=True)
  pipeline_file = root / 'pipeline' / 'pipeline.py'
  pipeline_file.write_text(re.sub(r'# (components\.append\()', r'\1',
                                  pipeline_file.read_text()))
  shutil.copy(data, root / 'data' / 'data.csv')
  seconds, samples, code = _timed([sys.executable, 'local_runner.py'], root,
                                  work / 'template.log')
  metadata = root / 'tfx_metadata' / 'taxi-template' / 'metadata.db'
  return seconds, samples, code, metadata, 'taxi-template'


def run_ours(work: Path, data: Path, profile: str = 'in-memory'):
  output = work / 'ours'
  seconds, samples, code = _timed(
      [str(VENV_BIN / 'tfx-e2e'), 'run', '--set', f'data.path={data}',
       '--set', f'beam.profile={profile}', '--output', str(output),
       '--no-cache'], work, work / 'ours.log')
  return seconds, samples, code, output / 'metadata.sqlite', 'taxi-fare'


RUNNERS = {
    'template': run_template,
    'ours': run_ours,  # the in-memory DirectRunner
    'ours-mp': lambda work, data: run_ours(work, data, 'multi-process'),
    # Beam's portable runner, SDK workers (one per core) from a worker pool
    # on loopback that `run` starts.
    'ours-portable': lambda work, data: run_ours(work, data, 'portable'),
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', default='15002,150000')
  parser.add_argument('--pipelines', default='template,ours')
  args = parser.parse_args()
  sizes = [int(n) for n in args.rows.split(',')]
  names = args.pipelines.split(',')
  results, peaks = {}, {}
  with tempfile.TemporaryDirectory(prefix='pipeline-bench-') as tmp:
    for rows in sizes:
      data = make_data(Path(tmp) / f'data-{rows}', rows)
      for name in names:
        work = Path(tmp) / f'{name}-{rows}'
        work.mkdir()
        seconds, samples, code, metadata, pipeline_name = RUNNERS[name](
            work, data)
        if code != 0:
          print(f'{name} at {rows:,} rows failed (exit {code}):\n' +
                (work / f'{name}.log').read_text()[-3000:])
        runs = latest_component_runs(str(metadata), pipeline_name)
        parts = {node: run.seconds for node, run in runs.items()}
        peaks[rows, name] = {
            node: _peak(samples, run.started, run.started + run.seconds)
            for node, run in runs.items()}
        results[rows, name] = (seconds, _peak(samples),
                               _peak(samples, field='rss'), code, parts)
        print(f'{name} {rows:,} rows: {seconds:.0f} s, peak PSS '
              f'{_peak(samples):,.0f} MiB, exit {code}', flush=True)
  print(f'\n### Run of {datetime.date.today()} ({platform.node()}, '
        f'{os.cpu_count()} cores, {platform.machine()})\n')
  header = ['rows', 'pipeline', 'wall s', 'peak PSS MiB', 'peak RSS MiB', *[
      c.replace('Csv', '').replace('Example', 'Ex.') for c in COMPONENTS]]
  print('| ' + ' | '.join(header) + ' |')
  print('|' + ' --- |' * 2 + ' ---: |' * (len(header) - 2))
  for (rows, name), (seconds, pss, rss, code, parts) in results.items():
    cells = [f'{rows:,}', name, f'{seconds:.0f}', f'{pss:,.0f}',
             f'{rss:,.0f}'] + [
        f'{parts[c]:.1f}' if c in parts else '-' for c in COMPONENTS]
    print('| ' + ' | '.join(cells) + ' |')
  print('\nPeak PSS of the process tree (MiB) while each component ran:\n')
  print('| ' + ' | '.join(header[:2] + header[5:]) + ' |')
  print('|' + ' --- |' * 2 + ' ---: |' * (len(header) - 5))
  for (rows, name), by_node in peaks.items():
    print('| ' + ' | '.join([f'{rows:,}', name] + [
        f'{by_node[c]:,.0f}' if c in by_node else '-' for c in COMPONENTS])
          + ' |')
  print()
  for rows in sizes:
    for name in names:
      if name != 'template' and (rows, 'template') in results:
        ratio = results[rows, name][0] / results[rows, 'template'][0]
        print(f'{rows:,} rows: {name} / template wall time = {ratio:.2f}')
  # Marginal cost between consecutive sizes: what each extra row costs once
  # the fixed start-up costs are paid.
  for small, large in zip(sizes, sizes[1:]):
    print(f'\nMarginal cost from {small:,} to {large:,} rows:\n')
    print('| pipeline | start-up s | s per 100k rows | rows/s | ' + ' | '.join(
        c.replace('Csv', '').replace('Example', 'Ex.') for c in COMPONENTS)
          + ' |')
    print('| --- |' + ' ---: |' * (3 + len(COMPONENTS)))
    for name in names:
      seconds = results[large, name][0] - results[small, name][0]
      per_100k = [
          (results[large, name][4].get(c, 0) - results[small, name][4].get(
              c, 0)) / (large - small) * 1e5 for c in COMPONENTS]
      # The wall time a run of no rows would take on the line through the
      # two sizes: the fixed cost of the profile.
      start_up = results[small, name][0] - seconds / (large - small) * small
      print(f'| {name} | {start_up:.0f} | '
            f'{seconds / (large - small) * 1e5:.1f} | '
            f'{(large - small) / seconds:,.0f} | ' + ' | '.join(
                f'{s:.1f}' for s in per_100k) + ' |')


if __name__ == '__main__':
  main()
