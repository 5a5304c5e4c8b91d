"""`tfx-e2e predict`: a real Beam job with tfx-bsl's RunInference on the
pushed model; every input row lands once, in the output or the dead letters;
and its predictions equal the serving API's for the same rows."""

import csv
import glob
import json
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf

from pipeline import prediction
from tests.conftest import read_csv, run_cli, write_csv
from tests.serving_support import serving_copy

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
                    '--output', str(work / 'out' / 'pred'),
                    '--model', str(taxi_pushed_model),
                    '--passthrough', 'fare,payment_type'])
  return result, work, header, rows[:300] + b_rows


def _predictions(work):
  records = []
  for path in sorted(glob.glob(str(work / 'out' / 'pred-0*.csv'))):
    with open(path, newline='') as f:
      records += list(csv.DictReader(f))
  return records


def _dead_letters(work):
  return [json.loads(line) for path in
          glob.glob(str(work / 'out' / 'pred-dead-letters-*.jsonl'))
          for line in Path(path).read_text().splitlines()]


def test_every_row_is_predicted_or_dead_lettered_once(batch,
                                                     taxi_pushed_model):
  result, work, _, rows = batch
  assert result.exit_code == 0, result.stderr
  assert (f'Rows read: {len(rows):,}; predicted: {len(rows) - BAD_ROWS:,}; '
          f'dead-lettered: {BAD_ROWS}') in result.stdout
  predictions, dead = _predictions(work), _dead_letters(work)
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
  predictions = {p['key']: float(p['prediction']) for p in _predictions(work)}
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
  examples, errors = prediction.encode_examples(
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
                    '--output', str(work / 'tfrecord-out' / 'pred'),
                    '--model', str(taxi_pushed_model), '--passthrough',
                    'fare'])
  assert result.exit_code == 0, result.stderr
  assert 'Rows read: 102; predicted: 100; dead-lettered: 2' in result.stdout
  predicted = {}
  for name in glob.glob(str(work / 'tfrecord-out' / 'pred-0*.csv')):
    with open(name, newline='') as f:
      predicted.update({r['key']: r for r in csv.DictReader(f)})
  from_csv = {p['key']: p for p in _predictions(work)}
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
