"""`tfx-e2e stream`: windows and lateness with TestStream (deterministic
watermarks), then real streaming runs on the pipeline's pushed model: files
dropped into a watched directory, a model pushed mid-stream, a restart."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing import test_stream
from apache_beam.transforms import window
import pytest
import tensorflow as tf

from tfx_e2e.inference import stream_predict
from tfx_e2e.pipeline.config import BUNDLED_TAXI_CSV, StreamConfig
from tests.conftest import read_csv, write_csv

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

PANES = []  # (window start, pane timing, count), as WriteWindow emitted them


def _record(key, event_time, prediction, label=None):
  return window.TimestampedValue(
      {'key': key, 'event_time': float(event_time), 'prediction': prediction,
       'label': label, 'model_version': '1'}, event_time)


def _read_windows(output):
  return {p.stem: json.loads(p.read_text())
          for p in (output / 'windows').glob('*.json')}


def test_windows_lateness_and_the_late_output(tmp_path):
  """Sliding windows of 60 s every 30 s, allowed lateness 30 s."""
  settings = StreamConfig(window_seconds=60, period_seconds=30,
                          allowed_lateness_seconds=30)
  events = (test_stream.TestStream()
            .add_elements([_record('a', 10, 1.0, 2.0), _record('b', 50, 3.0)])
            .advance_watermark_to(60)
            # Late for [0, 60) but within its lateness (expires at 90).
            .add_elements([_record('c', 40, 5.0, 5.0)])
            .advance_watermark_to(200)
            # Too late for both of its windows, [0, 60) and [30, 90).
            .add_elements([_record('d', 45, 7.0)])
            .advance_watermark_to_infinity())
  options = PipelineOptions()
  options.view_as(StandardOptions).streaming = True
  PANES.clear()
  with beam.Pipeline(options=options) as root:
    bodies = stream_predict.window_and_write(root | events, settings,
                                             str(tmp_path))
    _ = bodies | beam.Map(lambda body: PANES.append(
        (body['window_start'], body['pane']['timing'], body['count'])))
  names = {0: '1970-01-01T000000Z--1970-01-01T000100Z',
           30: '1970-01-01T000030Z--1970-01-01T000130Z'}
  assert sorted(PANES) == sorted([
      ('1969-12-31T23:59:30Z', 'ON_TIME', 1),  # [-30, 30): a
      ('1970-01-01T00:00:00Z', 'ON_TIME', 2),  # [0, 60): a, b
      ('1970-01-01T00:00:00Z', 'LATE', 3),     # + c, within lateness
      ('1970-01-01T00:00:30Z', 'ON_TIME', 2),  # [30, 90): b, c
  ])
  windows = _read_windows(tmp_path)
  assert len(windows) == 3
  first = windows[names[0]]
  assert [p['key'] for p in first['predictions']] == ['a', 'c', 'b']
  assert first['pane'] == {'index': 1, 'timing': 'LATE', 'final': False}
  assert first['count'] == 3 and first['mean_prediction'] == 3.0
  assert first['labelled'] == 2
  assert first['mean_absolute_error'] == 0.5  # (|1 - 2| + |5 - 5|) / 2
  assert windows[names[30]]['count'] == 2
  assert windows[names[30]]['mean_absolute_error'] == 0.0
  late = {p.stem: [json.loads(line) for line in p.read_text().splitlines()]
          for p in (tmp_path / 'late').glob('*.jsonl')}
  assert sorted(late) == sorted(names.values())
  for name, records in late.items():
    assert [r['key'] for r in records] == ['d']
    assert records[0]['window_start'] == windows[name]['window_start']


# --- real streaming runs ----------------------------------------------------

EVENT_COLUMN = 'trip_start_timestamp'
ROWS_PER_FILE = 40


@pytest.fixture(scope='module')
def taxi_rows():
  """Bundled taxi rows in event-time order."""
  header, rows = read_csv(BUNDLED_TAXI_CSV)
  column = header.index(EVENT_COLUMN)
  return header, sorted(rows, key=lambda row: int(row[column]))


def _drop(directory: Path, name: str, header, rows):
  """Writes elsewhere, then moves into the watched directory."""
  staged = write_csv(directory.parent / 'staging' / name, header, rows)
  os.replace(staged, directory / name)


def _wait_for(path: Path, seconds: float = 90):
  deadline = time.monotonic() + seconds
  while not path.exists():
    assert time.monotonic() < deadline, f'{path} did not appear'
    time.sleep(0.2)


def _predictions(output: Path, name: str):
  with open(output / 'predictions' / name, newline='') as f:
    return list(csv.DictReader(f))


DAY = 86400
SETTINGS = StreamConfig(window_seconds=DAY, period_seconds=DAY // 2,
                        allowed_lateness_seconds=DAY, poll_seconds=0.5,
                        idle_timeout_seconds=6)


def _options(work: Path):
  return stream_predict.StreamOptions(
      input_dir=str(work / 'in'), output_dir=str(work / 'out'),
      model_base=str(work / 'models' / 'taxi_fare'), label_column='fare',
      passthrough=['payment_type'], settings=SETTINGS)


@pytest.fixture(scope='module')
def first_stream(taxi_pushed_model, taxi_rows, tmp_path_factory):
  """A stream that sees one file, then a model push, then more files."""
  header, rows = taxi_rows
  work = tmp_path_factory.mktemp('stream')
  (work / 'in').mkdir()
  base = work / 'models' / 'taxi_fare'
  shutil.copytree(taxi_pushed_model, base / '1')
  result = {}
  job = threading.Thread(target=lambda: result.update(run=stream_predict.run(
      _options(work), ['--direct_running_mode=in_memory'])))
  job.start()
  # File 0 has a bad number and a row without an event time.
  bad_number, no_time = list(rows[0]), list(rows[1])
  bad_number[header.index('trip_miles')] = 'far'
  no_time[header.index(EVENT_COLUMN)] = ''
  first = [bad_number, no_time] + rows[2:ROWS_PER_FILE]
  _drop(work / 'in', 'part-000.csv', header, first)
  _wait_for(work / 'out' / 'predictions' / 'part-000.csv')
  # Push version 2 while the stream runs; drop files until it answers.
  shutil.copytree(taxi_pushed_model, base / '2')
  files = {'part-000.csv': first}
  for number in range(1, 40):
    name = f'part-{number:03d}.csv'
    files[name] = rows[number * ROWS_PER_FILE:(number + 1) * ROWS_PER_FILE]
    _drop(work / 'in', name, header, files[name])
    _wait_for(work / 'out' / 'predictions' / name)
    if _predictions(work / 'out', name)[0]['model_version'] == '2':
      break
  job.join(timeout=120)
  assert not job.is_alive(), 'the stream did not stop after its idle timeout'
  return work, result['run'], files, header


def test_files_are_predicted_as_they_arrive(first_stream):
  work, run, files, _ = first_stream
  output = work / 'out'
  assert run.files_read == len(files)
  assert run.rows_read == sum(len(rows) for rows in files.values())
  assert run.rows_dead_lettered == 2
  assert run.rows_read == run.rows_predicted + run.rows_dead_lettered
  dead = [json.loads(line) for line in
          (output / 'dead-letters' / 'part-000.csv.jsonl').read_text()
          .splitlines()]
  assert [(d['line'], d['error']) for d in dead] == [
      (2, "column 'trip_miles': could not convert string to float: 'far'"),
      (3, f"no event time in column '{EVENT_COLUMN}'")]
  first = _predictions(output, 'part-000.csv')
  assert [p['key'] for p in first] == [
      f'part-000.csv:{n}' for n in range(4, ROWS_PER_FILE + 2)]
  assert {p['model_version'] for p in first} == {'1'}


def test_a_version_pushed_mid_stream_answers_later_files(first_stream):
  work, run, files, _ = first_stream
  versions = [{p['model_version'] for p in _predictions(work / 'out', name)}
              for name in sorted(files)]
  assert versions[-1] == {'2'}
  switch = versions.index({'2'})
  assert versions[:switch] == [{'1'}] * switch, versions
  assert run.model_versions == ['1', '2']


def _expected_windows(output: Path, names):
  """Window start -> predictions, computed from the per-file outputs."""
  expected = {}
  for name in names:
    for p in _predictions(output, name):
      t = float(p['event_time'])
      for start in (t // (DAY // 2) * (DAY // 2) - DAY // 2,
                    t // (DAY // 2) * (DAY // 2)):
        expected.setdefault(start, []).append(p)
  return expected


def _check_windows(output: Path, names):
  expected = _expected_windows(output, names)
  windows = _read_windows(output)
  assert len(windows) == len(expected)
  for body in windows.values():
    start = stream_predict.parse_event_time(body['window_start'])
    rows = expected[start]
    assert sorted(p['key'] for p in body['predictions']) == sorted(
        p['key'] for p in rows)
    assert body['count'] == len(rows)
    assert body['mean_prediction'] == pytest.approx(
        sum(float(p['prediction']) for p in rows) / len(rows))
    labelled = [p for p in rows if p['label']]
    assert body['labelled'] == len(labelled)
    assert body['mean_absolute_error'] == pytest.approx(sum(
        abs(float(p['prediction']) - float(p['label'])) for p in labelled) /
        len(labelled))
  return windows


def test_windows_aggregate_the_stream(first_stream):
  work, run, files, _ = first_stream
  windows = _check_windows(work / 'out', files)
  assert run.windows == len(windows)
  summary = (work / 'out' / 'windows.csv').read_text().splitlines()
  assert len(summary) == len(windows) + 1


def test_a_restarted_stream_neither_loses_nor_repeats(first_stream, taxi_rows):
  """The CLI, stopped by SIGINT: finished files are replayed, not
  predicted again; their prediction files are left as they were."""
  work, _, files, header = first_stream
  _, rows = taxi_rows
  output = work / 'out'
  before = {name: (output / 'predictions' / name).stat().st_mtime_ns
            for name in files}
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  process = subprocess.Popen(
      [sys.executable, '-m', 'tfx_e2e.cli', 'stream', '--input',
       str(work / 'in'), '--stream-output', str(output), '--model',
       str(work / 'models' / 'taxi_fare'), '--passthrough', 'payment_type',
       '--window', str(DAY), '--period', str(DAY // 2), '--poll', '0.5'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  try:
    _drop(work / 'in', 'part-100.csv', header, rows[-ROWS_PER_FILE:])
    _wait_for(output / 'predictions' / 'part-100.csv')
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
  finally:
    process.kill()
  assert process.returncode == 0, stderr
  assert f'Files read: 1 (replayed from an earlier run: {len(files)})' in (
      stdout)
  assert f'predicted: {ROWS_PER_FILE}; dead-lettered: 0' in stdout
  assert 'SIGINT: stopping' in stdout
  assert 'part-100.csv: 40 rows predicted by model version 2' in stdout
  assert 'Traceback' not in stderr
  assert {name: (output / 'predictions' / name).stat().st_mtime_ns
          for name in files} == before
  _check_windows(output, [*files, 'part-100.csv'])


@pytest.mark.parametrize('allowed', [False, True])
def test_a_file_without_a_model_column_is_dead_lettered_unless_allowed(
    taxi_rows, tmp_path, allowed):
  """Each row of a file that lacks a column the model reads goes to the
  dead letters with the reason, instead of being predicted with the
  column imputed; --allow-missing-columns predicts it."""
  header, rows = taxi_rows
  drop = header.index('trip_miles')
  path = write_csv(tmp_path / 'in' / 'no-miles.csv',
                   header[:drop] + header[drop + 1:],
                   [row[:drop] + row[drop + 1:] for row in rows[:5]])
  options = dataclasses.replace(_options(tmp_path),
                                allow_missing_columns=allowed)
  (tmp_path / 'out' / stream_predict.PREDICTIONS).mkdir(parents=True)
  types = {'trip_miles': tf.float32, 'trip_seconds': tf.int64}
  watch = stream_predict.WatchDirectory(options, types)
  outputs = list(watch._read_file(str(path)))  # pylint: disable=protected-access
  dead_letters = tmp_path / 'out' / 'dead-letters' / 'no-miles.csv.jsonl'
  if allowed:
    assert len(outputs) == 5 and not dead_letters.exists()
    return
  assert outputs == []
  dead = [json.loads(line) for line in dead_letters.read_text().splitlines()]
  assert [d['line'] for d in dead] == [2, 3, 4, 5, 6]
  assert all("no column 'trip_miles'" in d['error'] and
             '--allow-missing-columns' in d['error'] for d in dead)


def test_a_renamed_label_and_columns_are_found_by_their_model_names(
    taxi_rows, tmp_path):
  """The run records the label by its model name (`Fare` for `Fare ($)`):
  the stream finds it, and the id and passthrough columns, either way."""
  header, rows = taxi_rows
  renamed = {'fare': 'Fare ($)', 'payment_type': 'Payment Type',
             'trip_miles': 'Trip Miles'}
  path = write_csv(tmp_path / 'in' / 'renamed.csv',
                   [renamed.get(c, c) for c in header], rows[:5])
  options = dataclasses.replace(_options(tmp_path), label_column='Fare',
                                passthrough=['Payment_Type'])
  (tmp_path / 'out' / stream_predict.PREDICTIONS).mkdir(parents=True)
  types = {'Trip_Miles': tf.float32, 'trip_seconds': tf.int64}
  watch = stream_predict.WatchDirectory(options, types)
  outputs = list(watch._read_file(str(path)))  # pylint: disable=protected-access
  records = [record for record, _ in (o.value for o in outputs)]
  fare = header.index('fare')
  assert [r['label'] for r in records] == [float(row[fare]) for row in rows[:5]]
  assert [r['Payment_Type'] for r in records] == [
      row[header.index('payment_type')] for row in rows[:5]]
