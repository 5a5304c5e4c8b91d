"""Data gate benchmark: `input_check.check_input` now against an earlier
revision's, side by side, on the bundled taxi rows resampled.

    .venv/bin/python bench/input_check_bench.py [--rows 1500000]
        [--old-rev 280afc7] [--rounds 3]

The earlier revision's module is loaded from git beside the current one, so
both read the same file in the same process, alternating (round 1 old, new;
round 2 old, new; ...). The file is clean (the bundled data's shape), so
neither writes a copy: this is the cost every run pays before TFX starts.
Prints a Markdown table for BENCHMARKS.md.
"""

import argparse
import dataclasses
import datetime
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.pipeline_bench import make_data  # noqa: E402
from tfx_e2e.pipeline import environment  # noqa: E402
environment.configure()  # before anything imports TensorFlow
from tfx_e2e.pipeline import input_check  # noqa: E402
from tfx_e2e.pipeline.config import PipelineConfig  # noqa: E402


def _module_at(rev: str, work: Path):
  """pipeline/input_check.py as it was at `rev`, as a module of its own."""
  source = subprocess.run(['git', 'show', f'{rev}:pipeline/input_check.py'],
                          cwd=REPO, check=True, capture_output=True).stdout
  path = work / 'input_check_old.py'
  path.write_bytes(source)
  spec = importlib.util.spec_from_file_location('input_check_old', path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', type=int, default=1_500_000)
  parser.add_argument('--old-rev', default='280afc7')
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix='input-check-bench-') as tmp:
    work = Path(tmp)
    data = make_data(work / 'data', args.rows)
    old = _module_at(args.old_rev, work)
    config = PipelineConfig(output_dir=str(work / 'out'))
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, path=str(data)))
    times = {'old': [], 'new': []}
    for _ in range(args.rounds):
      for name, module in (('old', old), ('new', input_check)):
        started = time.perf_counter()
        report = module.check_input(config)
        times[name].append(time.perf_counter() - started)
        assert report.rows == args.rows and not report.dropped_rows
        print(f'{name}: {times[name][-1]:.2f} s', flush=True)
  old_median = statistics.median(times['old'])
  new_median = statistics.median(times['new'])
  print(f'\n### Run of {datetime.date.today()}: {args.rows:,} rows, '
        f'{args.rounds} alternating rounds\n')
  print('| gate | seconds per round | median | per 100k rows |')
  print('| --- | --- | ---: | ---: |')
  for name, revision in (('old', args.old_rev), ('new', 'this tree')):
    print(f'| {name} ({revision}) | '
          f'{" / ".join(f"{t:.2f}" for t in times[name])} | '
          f'{statistics.median(times[name]):.2f} | '
          f'{statistics.median(times[name]) / args.rows * 1e5:.2f} |')
  print(f'\nnew / old: {new_median / old_median:.2f}')


if __name__ == '__main__':
  main()
