"""Wide-data benchmark: the pipeline on a CSV of hundreds of numeric columns.

    .venv/bin/python bench/wide_bench.py [--rows 10000,100000] [--columns 300]
        [--old-rev 280afc7] [--old-rows 10000,100000] [--timeout 1800]

For each size it writes a CSV of `--columns` random numeric columns (fixed
seed; normal, uniform and integer columns, about 5% of the cells empty) and
a label `y` that is a linear function of them plus noise. On that CSV, in
the same benchmark run, each from an empty output directory and without the
cache, it runs `tfx-e2e run` twice:
- `new`: this checkout's code;
- `old`: the same, but with components/preprocessing.py as it was at
  `--old-rev` (one z-score analyzer per numeric column), imported from a
  copy of components/ put first on PYTHONPATH. The rest of components/ is
  this checkout's, so that the Trainer can fit all-numeric data in both.
Reported: wall time and each component's seconds (from MLMD), and the old
over new Transform ratio. A run that exceeds `--timeout` seconds is
stopped and reported as such. Prints a Markdown report for BENCHMARKS.md.
"""

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, NamedTuple, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfx_e2e.pipeline import environment  # noqa: E402
environment.configure()  # before anything imports TensorFlow
from tfx_e2e.reports.results import latest_component_runs  # noqa: E402
import numpy as np  # noqa: E402

SEED = 20261129
VENV_BIN = Path(sys.executable).parent
# The last commit whose preprocessing_fn z-scored each numeric column with
# its own analyzer.
OLD_REV = '280afc7'
PIPELINE_NAME = 'wide'  # tfx-e2e names a pipeline after its CSV: wide.csv
MISSING = 0.05
COMPONENTS = ['CsvExampleGen', 'StatisticsGen', 'SchemaGen',
              'ExampleValidator', 'Transform', 'Trainer', 'Evaluator',
              'Pusher']


def make_data(path: Path, rows: int, columns: int) -> Path:
  """`columns` numeric columns x0.. and a linear label y, some cells empty."""
  rng = np.random.default_rng(SEED)
  x = np.empty((rows, columns))
  kinds = np.arange(columns) % 3
  x[:, kinds == 0] = rng.normal(size=(rows, (kinds == 0).sum()))
  x[:, kinds == 1] = rng.uniform(-3, 3, size=(rows, (kinds == 1).sum()))
  x[:, kinds == 2] = rng.integers(0, 100, size=(rows, (kinds == 2).sum()))
  y = x @ rng.normal(size=columns) + rng.normal(size=rows)
  cells = np.where(kinds == 2, x.astype(np.int64).astype(str),
                   np.char.mod('%.5g', x))
  cells[rng.random((rows, columns)) < MISSING] = ''
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w') as f:
    f.write(','.join([f'x{i}' for i in range(columns)] + ['y']) + '\n')
    for row, label in zip(cells, np.char.mod('%.6g', y)):
      f.write(','.join(row) + ',' + label + '\n')
  return path


def old_components(directory: Path, rev: str) -> Path:
  """A copy of components/ with preprocessing.py at `rev`; its parent goes
  on PYTHONPATH."""
  package = directory / 'components'
  shutil.copytree(REPO / 'components', package,
                  ignore=shutil.ignore_patterns('__pycache__', '*_test.py'))
  (package / 'preprocessing.py').write_bytes(subprocess.run(
      ['git', 'show', f'{rev}:components/preprocessing.py'], cwd=REPO,
      check=True, capture_output=True).stdout)
  features = package / 'features.py'
  if 'def transformed_name' not in features.read_text():
    # The old preprocessing_fn names its outputs with it; it has gone since.
    features.write_text(features.read_text() + (
        "\n\ndef transformed_name(key: str) -> str:\n"
        "  return f'{key}_xf'\n"))
  return directory


class Run(NamedTuple):
  seconds: float
  code: Optional[int]  # None: stopped at the timeout
  parts: Dict[str, float]  # component -> seconds


def run_pipeline(data: Path, output: Path, log: Path, timeout: float,
                 pythonpath: Optional[Path] = None) -> Run:
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', PYTHONUNBUFFERED='1')
  if pythonpath:
    env['PYTHONPATH'] = os.pathsep.join(
        [str(pythonpath)] + [p for p in [env.get('PYTHONPATH')] if p])
  # Which preprocessing module the run imports, in its environment. Not
  # from the checkout's directory: `python -c` puts its working directory
  # first on sys.path (tfx-e2e, a script, puts its own directory there).
  module = subprocess.run(
      [sys.executable, '-c', 'import tfx_e2e.components.preprocessing as p; '
       'print(p.__file__)'], env=env, cwd=log.parent, check=True,
      capture_output=True, text=True).stdout.strip()
  started = time.monotonic()
  with open(log, 'w') as out:
    out.write(f'preprocessing module: {module}\n')
    out.flush()
    process = subprocess.Popen(
        [str(VENV_BIN / 'tfx-e2e'), 'run', '--data', str(data), '--label',
         'y', '--output', str(output), '--no-cache',
         # Timing, not gating: any RMSE passes.
         '--set', 'evaluation.rmse_upper_bound=1e30'],
        cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
      code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
      code = None
  seconds = time.monotonic() - started
  try:
    runs = latest_component_runs(str(output / 'metadata.sqlite'),
                                 PIPELINE_NAME)
    parts = {node: run.seconds for node, run in runs.items()}
  except Exception:  # pylint: disable=broad-except
    parts = {}  # stopped before MLMD had a run
  return Run(seconds, code, parts)


def _cell(run: Run, component: Optional[str] = None) -> str:
  if run is None:
    return 'not run'
  if run.code is None and (component is None or component not in run.parts):
    return f'> {run.seconds:.0f} (stopped)'
  if component is None:
    return f'{run.seconds:.0f}'
  return f'{run.parts[component]:.1f}' if component in run.parts else '-'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', default='10000,100000')
  parser.add_argument('--columns', type=int, default=300)
  parser.add_argument('--old-rev', default=OLD_REV)
  parser.add_argument('--old-rows', default=None,
                      help='sizes to run the old code at (default: --rows; '
                      "'' for none)")
  parser.add_argument('--timeout', type=float, default=1800.0,
                      help='seconds after which a run is stopped')
  args = parser.parse_args()
  sizes = [int(n) for n in args.rows.split(',')]
  # An empty --old-rows: the new code only.
  old_sizes = {int(n) for n in (
      args.rows if args.old_rows is None else args.old_rows).split(',') if n}
  results = {}
  with tempfile.TemporaryDirectory(prefix='wide-bench-') as tmp:
    tmp = Path(tmp)
    old_path = old_components(tmp / 'old-code', args.old_rev)
    for rows in sizes:
      data = make_data(tmp / f'data-{rows}' / 'wide.csv', rows, args.columns)
      for name in ['old', 'new']:
        if name == 'old' and rows not in old_sizes:
          results[rows, name] = None
          continue
        work = tmp / f'{name}-{rows}'
        work.mkdir()
        run = run_pipeline(data, work / 'out', work / 'run.log', args.timeout,
                           old_path if name == 'old' else None)
        if run.code not in (0, None) or not run.parts:
          print(f'{name} at {rows:,} rows: exit {run.code}\n' +
                (work / 'run.log').read_text()[-3000:])
        results[rows, name] = run
        print(f'{name} {rows:,} rows: {run.seconds:.0f} s, exit {run.code}, '
              f'Transform {_cell(run, "Transform")} s', flush=True)
  print(f'\n### Run of {datetime.date.today()} ({platform.node()}, '
        f'{os.cpu_count()} cores, {platform.machine()}), {args.columns} '
        f'numeric columns, old = components/preprocessing.py at '
        f'{args.old_rev}\n')
  print('| rows | old Transform s | new Transform s | ratio | whole pipeline '
        'old / new s |')
  print('| ---: | ---: | ---: | ---: | ---: |')
  for rows in sizes:
    old, new = results[rows, 'old'], results[rows, 'new']
    ratio = ('-' if old is None or 'Transform' not in old.parts or
             'Transform' not in new.parts else
             f'{old.parts["Transform"] / new.parts["Transform"]:.1f}x')
    print(f'| {rows:,} | {_cell(old, "Transform")} | '
          f'{_cell(new, "Transform")} | {ratio} | {_cell(old)} / '
          f'{_cell(new)} |')
  print('\nEach component, seconds:\n')
  header = ['rows', 'code', 'wall s'] + [
      c.replace('Csv', '').replace('Example', 'Ex.') for c in COMPONENTS]
  print('| ' + ' | '.join(header) + ' |')
  print('|' + ' --- |' * 2 + ' ---: |' * (len(header) - 2))
  for (rows, name), run in results.items():
    if run is not None:
      print('| ' + ' | '.join([f'{rows:,}', name, _cell(run)] + [
          _cell(run, c) for c in COMPONENTS]) + ' |')


if __name__ == '__main__':
  main()
