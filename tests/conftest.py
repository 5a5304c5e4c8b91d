"""Shared fixtures: small real data samples and a way to run the CLI."""

import csv
import glob
import io
import json
from contextlib import redirect_stdout, redirect_stderr
from pathlib import Path
from typing import List, NamedTuple

import pytest

from tfx_e2e import cli
from tfx_e2e.pipeline.config import BUNDLED_TAXI_CSV, PipelineConfig

TESTS_DATA = Path(__file__).parent / 'data'
PENGUINS_CSV = TESTS_DATA / 'penguins.csv'
# Small enough for a fast run, large enough for every payment type and hour.
TAXI_SAMPLE_ROWS = 3000
# Fast settings for end-to-end runs on samples.


class CliResult(NamedTuple):
  exit_code: int
  stdout: str
  stderr: str


def run_cli(args: List[str]) -> CliResult:
  """Runs `tfx-e2e ARGS` in this process (no TensorFlow start-up per call)."""
  out, err = io.StringIO(), io.StringIO()
  with redirect_stdout(out), redirect_stderr(err):
    code = cli.main(args)
  return CliResult(code, out.getvalue(), err.getvalue())


def write_csv(path: Path, header: List[str], rows: List[List[str]]) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def predictions_written(work: Path) -> List[dict]:
  """The rows `predict --output-prefix WORK/out/pred` wrote, file by file."""
  records = []
  for path in sorted(glob.glob(str(work / 'out' / 'pred-0*.csv'))):
    with open(path, newline='') as f:
      records += list(csv.DictReader(f))
  return records


def dead_letters_written(work: Path) -> List[dict]:
  """The dead letters of that `predict`, one dict a record."""
  return [json.loads(line) for path in
          glob.glob(str(work / 'out' / 'pred-dead-letters-*.jsonl'))
          for line in Path(path).read_text().splitlines()]


def assert_same_metrics(actual, expected, rel: float) -> None:
  """Every metric of every slice of two runs' results (reports.results
  RunResults) equal, to `rel`."""
  assert set(actual.metrics) == set(expected.metrics)
  for name, metrics in actual.metrics.items():
    for metric, value in metrics.items():
      assert expected.metrics[name][metric] == pytest.approx(
          value, rel=rel, abs=1e-6, nan_ok=True), (name, metric)


def read_csv(path: Path):
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


@pytest.fixture(scope='session')
def taxi_run(taxi_sample, tmp_path_factory):
  """One real pipeline run on the taxi sample: (CliResult, output dir).

  Shared by the end-to-end tests (which run more on the same directory) and
  the serving tests (which copy the pushed model).
  """
  output = tmp_path_factory.mktemp('taxi-run')
  result = run_cli(['run', '--set', f'data.path={taxi_sample}', '--output',
                    str(output)])
  return result, output


@pytest.fixture(scope='session')
def taxi_pushed_model(taxi_run) -> Path:
  """The version directory the taxi run's Pusher wrote first."""
  _, output = taxi_run
  pushed = Path(PipelineConfig(output_dir=str(output)).serving_model_dir)
  return sorted(pushed.iterdir())[0]


@pytest.fixture(scope='session')
def taxi_sample(tmp_path_factory) -> Path:
  """The first rows of the bundled taxi data, as their own CSV."""
  header, rows = read_csv(BUNDLED_TAXI_CSV)
  return write_csv(tmp_path_factory.mktemp('taxi') / 'data.csv', header,
                   rows[:TAXI_SAMPLE_ROWS])
