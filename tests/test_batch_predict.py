"""`tfx-e2e predict`: a real Beam job with tfx-bsl's RunInference on the
pushed model; every input row lands once, in the output or the dead letters;
and its predictions equal the serving API's for the same rows."""

import csv
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
import numpy as np
import pytest
import requests
import tensorflow as tf

from tfx_e2e.inference import batch_predict
from tfx_e2e.inference import prediction
from tfx_e2e.pipeline import worker_marks
from tfx_e2e.pipeline.config import BUNDLED_TAXI_CSV
from tests.conftest import (dead_letters_written, predictions_written,
                            read_csv, run_cli, write_csv)
from tests.serving_support import serving_copy

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

BAD_ROWS = 2


@pytest.fixture(scope='module')
def batch(taxi_sample, taxi_pushed_model, tmp_path_factory):
  """Two input files, one with a ragged row and one with a bad number."""
  header, rows = read_csv(taxi_sample)
  work = tmp_path_factory.mktemp('predict')
  write_csv(work / 'in' / 'a.csv', header, rows[:300])
  bad_number = list(rows[300])
  bad_number[header.index('trip_miles')] = 'far'
  b_rows = rows[301:400] + [['1', '2', '3'], bad_number]
  write_csv(work / 'in' / 'b.csv', header, b_rows)
  result = run_cli(['predict', '--input', str(work / 'in' / '*.csv'),
                    '--output-prefix', str(work / 'out' / 'pred'),
                    '--model', str(taxi_pushed_model),
                    '--passthrough', 'fare,payment_type'])
  return result, work, header, rows[:300] + b_rows


def test_every_row_is_predicted_or_dead_lettered_once(batch,
                                                     taxi_pushed_model):
  result, work, _, rows = batch
  assert result.exit_code == 0, result.stderr
  assert (f'Rows read: {len(rows):,}; predicted: {len(rows) - BAD_ROWS:,}; '
          f'dead-lettered: {BAD_ROWS}') in result.stdout
  predictions, dead = predictions_written(work), dead_letters_written(work)
  keys = [p['key'] for p in predictions] + [
      f'{d["file"]}:{d["line"]}' for d in dead]
  expected = [f'{work / "in" / "a.csv"}:{n}' for n in range(2, 302)] + [
      f'{work / "in" / "b.csv"}:{n}' for n in range(2, 2 + 101)]
  assert sorted(keys) == sorted(expected)  # each exactly once
  assert {d['error'] for d in dead} == {
      '3 fields, but the header has 18',
      "column 'trip_miles': could not convert string to float: 'far'"}
  assert {p['model_version'] for p in predictions} == {
      taxi_pushed_model.name}
  assert all(np.isfinite(float(p['prediction'])) for p in predictions)
  # Pass-through columns come from the same row as the key.
  a_rows = {f'{work / "in" / "a.csv"}:{n}': row
            for n, row in enumerate(rows[:300], start=2)}
  for p in predictions:
    if p['key'] in a_rows:
      assert p['fare'] == a_rows[p['key']][1]


def test_predictions_match_the_serving_api(batch, taxi_pushed_model, tmp_path):
  """The parity check: batch and REST give the same numbers for a sample."""
  _, work, header, rows = batch
  predictions = {p['key']: float(p['prediction']) for p in predictions_written(work)}
  sample = [(f'{work / "in" / "a.csv"}:{n}', dict(zip(header, row)))
            for n, row in enumerate(rows[:300], start=2)]
  with serving_copy(taxi_pushed_model, tmp_path) as server:
    metadata = requests.get(f'{server.rest}/v1/models/taxi_fare/metadata',
                            timeout=10).json()
    inputs = metadata['metadata']['signature_def']['signature_def'][
        'serving_raw']['inputs']
    instances = []
    for _, row in sample:
      instance = {}
      for name, info in inputs.items():
        value = row[name]
        if info['dtype'] == 'DT_STRING':
          instance[name] = value
        elif info['dtype'] == 'DT_FLOAT':
          instance[name] = float(value) if value else float('nan')
        else:
          instance[name] = int(float(value)) if value else 0
      instances.append(instance)
    # Rows with a missing integer are left out: serving_raw has no
    # "missing" marker for integers (the batch job omits the feature).
    complete = [i for i, (_, row) in enumerate(sample)
                if all(row[n] for n, info in inputs.items()
                       if info['dtype'] == 'DT_INT64')]
    # A missing float is NaN (json.dumps writes the NaN literal, as TF
    # Serving's JSON parser accepts).
    body = json.dumps({'signature_name': 'serving_raw', 'instances': [
        instances[i] for i in complete]})
    response = requests.post(f'{server.rest}/v1/models/taxi_fare:predict',
                             data=body.encode(), timeout=30)
  assert response.status_code == 200, response.text
  served = response.json()['predictions']
  batch_values = [predictions[sample[i][0]] for i in complete]
  assert len(complete) > 100
  np.testing.assert_allclose(batch_values, served, rtol=1e-5, atol=1e-4)


def test_tfrecord_input_gives_the_same_predictions(batch, taxi_pushed_model):
  """tf.Examples in a GZIP TFRecord file: keyed by record number; a record
  that is not a tf.Example, or has a feature of the wrong type, is a dead
  letter."""
  _, work, header, rows = batch
  types = prediction.model_input_types(str(taxi_pushed_model))
  path = work / 'tfrecord' / 'a.tfrecord.gz'
  path.parent.mkdir()
  wrong_type = tf.train.Example()
  wrong_type.features.feature['trip_miles'].bytes_list.value.append(b'far')
  examples, errors = prediction.examples_for_model(
      prediction.read_csv((work / 'in' / 'a.csv').read_bytes()), types)
  assert not errors
  with tf.io.TFRecordWriter(str(path), options='GZIP') as writer:
    for row, serialized in zip(rows[:100], examples):
      example = tf.train.Example.FromString(serialized)
      example.features.feature['fare'].bytes_list.value.append(
          row[header.index('fare')].encode())
      writer.write(example.SerializeToString())
    writer.write(b'not a tf.Example')
    writer.write(wrong_type.SerializeToString())
  result = run_cli(['predict', '--input',
                    str(work / 'tfrecord' / '*.tfrecord.gz'),
                    '--output-prefix', str(work / 'tfrecord-out' / 'pred'),
                    '--model', str(taxi_pushed_model), '--passthrough',
                    'fare'])
  assert result.exit_code == 0, result.stderr
  assert 'Rows read: 102; predicted: 100; dead-lettered: 2' in result.stdout
  predicted = {}
  for name in glob.glob(str(work / 'tfrecord-out' / 'pred-0*.csv')):
    with open(name, newline='') as f:
      predicted.update({r['key']: r for r in csv.DictReader(f)})
  from_csv = {p['key']: p for p in predictions_written(work)}
  for number, row in enumerate(rows[:100], start=1):
    record = predicted[f'{path}:{number}']
    assert record['fare'] == row[header.index('fare')]
    assert float(record['prediction']) == pytest.approx(float(
        from_csv[f'{work / "in" / "a.csv"}:{number + 1}']['prediction']),
        rel=1e-6)
  dead = [json.loads(line) for name in
          glob.glob(str(work / 'tfrecord-out' / 'pred-dead-letters-*'))
          for line in Path(name).read_text().splitlines()]
  assert sorted((d['line'], d['error'].split(':')[0]) for d in dead) == [
      (101, 'not a valid tf.Example'), (102, 'not a valid tf.Example')]
  assert "feature 'trip_miles': bytes_list where the model reads float32" in (
      dead[0]['error'] + dead[1]['error'])


# --- inputs that would be silently wrong, refused ---------------------------

def _one_error_line(result):
  """The CLI's answer to an expected failure: exit 2, one error line."""
  assert result.exit_code == 2, (result.stdout, result.stderr)
  assert 'Traceback' not in result.stderr + result.stdout
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  return lines[0]


def test_a_missing_model_column_is_refused_unless_allowed(batch,
                                                          taxi_pushed_model):
  """A column the model reads, absent from a file, would be imputed in
  every row; the label and extra columns do not matter."""
  _, work, header, rows = batch
  drop = header.index('trip_miles')
  directory = work / 'missing'
  write_csv(directory / 'no-miles.csv', header[:drop] + header[drop + 1:],
            [row[:drop] + row[drop + 1:] for row in rows[:20]])
  label = header.index('fare')
  write_csv(directory / 'no-label.csv',
            header[:label] + header[label + 1:] + ['extra'],
            [row[:label] + row[label + 1:] + ['x'] for row in rows[:10]])
  args = ['predict', '--input', str(directory), '--model',
          str(taxi_pushed_model)]
  refused = run_cli(args + ['--output-prefix',
                            str(work / 'refused' / 'pred')])
  error = _one_error_line(refused)
  assert str(directory / 'no-miles.csv') in error
  assert "'trip_miles'" in error and '--allow-missing-columns' in error
  assert 'no-label.csv' not in error
  assert not list((work / 'refused').glob('pred-0*'))

  allowed = run_cli(args + ['--output-prefix',
                            str(work / 'allowed' / 'pred'),
                            '--allow-missing-columns'])
  assert allowed.exit_code == 0, allowed.stderr
  assert 'Rows read: 30; predicted: 30; dead-lettered: 0' in allowed.stdout
  assert ('Imputed in every row (--allow-missing-columns): trip_miles '
          f'(absent from {directory / "no-miles.csv"})') in allowed.stdout
  assert 'no-label.csv' not in allowed.stdout


def test_a_file_that_changed_after_the_check_is_dead_lettered(batch):
  """The job itself refuses a file without a model column (every row a
  dead letter), for a file that lost it after the check before the job."""
  _, work, header, rows = batch
  drop = header.index('trip_seconds')
  path = write_csv(work / 'changed' / 'a.csv',
                   header[:drop] + header[drop + 1:],
                   [row[:drop] + row[drop + 1:] for row in rows[:3]])
  parse = batch_predict.ParseCsvFile(
      {'trip_seconds': tf.int64, 'trip_miles': tf.float32}, None, ())
  outputs = list(parse.process(fileio.ReadableFile(
      FileMetadata(str(path), path.stat().st_size))))
  dead = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
  assert len(dead) == len(outputs)  # nothing to predict
  assert [d['line'] for d in dead] == [2, 3, 4]
  assert all("no column 'trip_seconds'" in d['error'] for d in dead)


@pytest.mark.parametrize('case', ['no such file', 'empty glob',
                                  'directory without CSVs',
                                  'unreadable file'])
def test_an_input_that_is_not_there_is_one_clear_error(case, taxi_pushed_model,
                                                       tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'notes.txt').write_text('not a CSV')
  broken = tmp_path / 'broken.csv'
  broken.symlink_to(tmp_path / 'gone.csv')  # unreadable, even by root
  path, expected = {
      'no such file': (tmp_path / 'nope.csv', 'no such input file: {}'),
      'empty glob': (tmp_path / 'nope-*.csv', 'no input files match {}'),
      'directory without CSVs': (
          empty, 'no CSV files (*.csv, *.csv.gz, *.csv.bz2) in the '
          'directory {}'),
      'unreadable file': (broken, 'cannot read the input file {}: ')}[case]
  result = run_cli(['predict', '--input', str(path), '--output-prefix',
                    str(tmp_path / 'out' / 'pred'), '--model',
                    str(taxi_pushed_model)])
  assert _one_error_line(result).startswith(
      'error: ' + expected.format(path))


def test_predict_keeps_tensorflow_start_up_noise_off_the_console(
    taxi_pushed_model, taxi_sample, tmp_path):
  """In a fresh process (TensorFlow's CUDA and TensorRT notes come at its
  import): nothing on stderr but an error, which -v keeps last."""
  command = [str(Path(sys.executable).parent / 'tfx-e2e'), 'predict',
             '--input', str(taxi_sample), '--model', str(taxi_pushed_model)]
  quiet = subprocess.run(command + ['--output-prefix',
                                    str(tmp_path / 'q' / 'pred')],
                         capture_output=True, text=True, timeout=300,
                         check=False)
  assert quiet.returncode == 0, quiet.stderr
  assert quiet.stderr == ''
  logs = list((tmp_path / 'q').glob('pred-predict-*.log'))
  assert len(logs) == 1 and f'log: {logs[0]}' in quiet.stdout
  error = f'error: no such input file: {tmp_path / "nope.csv"}'
  for verbose in ([], ['-v']):
    missing = subprocess.run(
        command[:3] + [str(tmp_path / 'nope.csv')] + command[4:] + verbose +
        ['--output-prefix', str(tmp_path / 'm' / 'pred')],
        capture_output=True, text=True, timeout=300, check=False)
    assert missing.returncode == 2
    lines = missing.stderr.splitlines()
    assert lines[-1] == error and (verbose or len(lines) == 1)


def test_a_file_named_with_pattern_characters_is_read_by_name(
    taxi_run, tmp_path):
  """`w[1].csv` is that file, not a pattern that finds `w1.csv`."""
  _, output = taxi_run
  header, rows = read_csv(BUNDLED_TAXI_CSV)
  named = write_csv(tmp_path / 'w[1].csv', header, rows[:30])
  write_csv(tmp_path / 'w1.csv', header, rows[:5])
  result = run_cli(['predict', '--set', f'output_dir={output}', '--input',
                    str(named), '--output-prefix', str(tmp_path / 'p')])
  assert result.exit_code == 0, result.stderr
  assert 'predicted: 30' in result.stdout


def test_unknown_id_or_passthrough_columns_are_refused(taxi_run, tmp_path):
  _, output = taxi_run
  header, rows = read_csv(BUNDLED_TAXI_CSV)
  data = write_csv(tmp_path / 'in.csv', header, rows[:5])
  for flag in ('--id-column', '--passthrough'):
    result = run_cli(['predict', '--set', f'output_dir={output}', '--input',
                      str(data), '--output-prefix', str(tmp_path / 'p'),
                      flag, 'nope'])
    assert result.exit_code == 2, result
    assert "has no column 'nope'" in result.stderr


def test_portable_profile_predicts_as_in_memory(batch, taxi_pushed_model,
                                                tmp_path, monkeypatch):
  """The same job on the portable profile (a worker pool on loopback, two
  SDK workers): the same predictions and dead letters, parsed and scored
  in the pool's worker processes (their own marks), none left after."""
  _, work, _, _ = batch
  marks = tmp_path / 'marks'
  monkeypatch.setenv(worker_marks.ENV, str(marks))
  portable = tmp_path / 'portable'
  result = run_cli(['predict', '--input', str(work / 'in' / '*.csv'),
                    '--output-prefix', str(portable / 'out' / 'pred'),
                    '--model', str(taxi_pushed_model),
                    '--passthrough', 'fare,payment_type',
                    '--set', 'beam.profile=portable', '--set', 'beam.workers=2'])
  assert result.exit_code == 0, result.stderr
  assert '--environment_type=EXTERNAL' in result.stdout
  by_key = lambda records: sorted(records, key=lambda r: r.get('key') or (
      r['file'], r['line']))
  assert by_key(predictions_written(portable)) == by_key(
      predictions_written(work))
  assert by_key(dead_letters_written(portable)) == by_key(
      dead_letters_written(work))
  processes = worker_marks.read(str(marks))['predict']
  assert processes and all(pid != os.getpid() for pid, _ in processes)
  (pool,) = {ppid for _, ppid in processes}
  assert pool != os.getpid()
  assert not any(_alive(pid) for pid, _ in processes | {(pool, 0)})


def _alive(pid: int) -> bool:
  """Whether process `pid` runs (a zombie does not)."""
  try:
    stat = Path(f'/proc/{pid}/stat').read_text()
  except OSError:
    return False
  return stat[stat.rindex(')') + 2] != 'Z'
