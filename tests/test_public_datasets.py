"""The pipeline, unchanged and with no settings but `--data` and `--label`,
on public datasets that ship inside an installed package (no network):
scikit-learn's diabetes data (all numeric, a label in the hundreds) and
Fisher's iris (header names with spaces and parentheses, a text column), and
on the taxi sample under the header names real exports have.

Each run must push a model that beats the mean predictor on its eval split
(computed here from the eval examples, not taken from the Evaluator), whose
`serving_raw` signature takes exactly the header's feature columns under
their valid names, and which was trained and evaluated on every row.
"""

import glob
from pathlib import Path

import numpy as np
from sklearn import datasets
import tensorflow as tf
import pytest

from tfx_e2e.pipeline import runner
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports.results import OVERALL, RMSE, load_run_results
from tests.conftest import read_csv, run_cli, write_csv

pytestmark = pytest.mark.e2e  # runs the pipeline or a server


def _examples(output: Path, split: str):
  files = glob.glob(str(output / 'pipeline' / 'CsvExampleGen' / 'examples' /
                        '*' / f'Split-{split}' / '*.gz'))
  assert files
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    yield tf.train.Example.FromString(record.numpy())


def _label_values(output: Path, split: str, label: str) -> np.ndarray:
  values = []
  for example in _examples(output, split):
    feature = example.features.feature[label]
    values += list(feature.float_list.value) + list(feature.int64_list.value)
  return np.array(values, np.float64)


def _serving_inputs(output: Path, model_name: str):
  versions = sorted((output / 'serving' / model_name).iterdir())
  model = tf.saved_model.load(str(versions[-1]))
  return model, sorted(
      model.signatures['serving_raw'].structured_input_signature[1])


def _run(tmp_path, data: Path, label: str, model_name: str):
  output = tmp_path / 'out'
  result = run_cli(['run', '--data', str(data), '--label', label,
                    '--output', str(output)])
  assert result.exit_code == runner.EXIT_PUSHED, result.stdout + result.stderr
  config = PipelineConfig(pipeline_name=model_name.replace('_', '-'),
                          model_name=model_name, output_dir=str(output))
  rmse = load_run_results(config).metrics[OVERALL][RMSE]
  return result, output, rmse


def _beats_the_mean_predictor(output: Path, label: str, rmse: float) -> None:
  labels = _label_values(output, 'eval', label)
  assert rmse < labels.std(), (rmse, labels.std())


def test_diabetes_all_numeric(tmp_path):
  frame = datasets.load_diabetes(as_frame=True, scaled=False).frame
  data = tmp_path / 'diabetes.csv'
  frame.to_csv(data, index=False)
  result, output, rmse = _run(tmp_path, data, 'target', 'diabetes')
  _beats_the_mean_predictor(output, 'target', rmse)
  _, inputs = _serving_inputs(output, 'diabetes')
  assert inputs == sorted(c for c in frame.columns if c != 'target')
  assert f'{len(frame):,} rows, 0 dropped' in result.stdout
  train = len(_label_values(output, 'train', 'target'))
  assert train + len(_label_values(output, 'eval', 'target')) == len(frame)


def test_iris_with_spaces_in_its_header_and_a_text_column(tmp_path):
  iris = datasets.load_iris(as_frame=True)
  frame = iris.frame.assign(species=iris.target_names[iris.target]).drop(
      columns='target')
  data = tmp_path / 'iris.csv'
  frame.to_csv(data, index=False)
  result, output, rmse = _run(tmp_path, data, 'petal width (cm)', 'iris')
  assert "'petal width (cm)' -> petal_width_cm" in result.stdout
  # The report reads the label by its model name too.
  assert 'report could not be written' not in result.stderr
  assert (output / 'report.html').is_file()
  _beats_the_mean_predictor(output, 'petal_width_cm', rmse)
  model, inputs = _serving_inputs(output, 'iris')
  assert inputs == ['petal_length_cm', 'sepal_length_cm', 'sepal_width_cm',
                    'species']
  # A setosa and a virginica flower: small and large petals.
  outputs = model.signatures['serving_raw'](
      sepal_length_cm=tf.constant([5.1, 6.7]),
      sepal_width_cm=tf.constant([3.5, 3.0]),
      petal_length_cm=tf.constant([1.4, 5.2]),
      species=tf.constant(['setosa', 'virginica']))['outputs'].numpy()
  assert abs(outputs[0] - 0.2) < 0.3 and abs(outputs[1] - 2.3) < 0.5


def test_taxi_under_the_header_names_of_a_real_export(taxi_sample, tmp_path):
  """Spaces, punctuation, accents, a leading `_`, an empty name, and
  missing-value markers: trained on every row under valid names."""
  header, rows = read_csv(taxi_sample)
  keep = ['fare', 'trip_miles', 'trip_seconds', 'payment_type', 'company',
          'trip_start_hour']
  titles = ['Fare ($)', 'Trip Miles', '_trip seconds', 'Payment Type',
            'Compañía', '']
  rows = [[row[header.index(k)] for k in keep] for row in rows[:2000]]
  for i in range(0, len(rows), 10):
    rows[i][1] = 'NA'
  data = write_csv(tmp_path / 'Taxi Export (2024).csv', titles, rows)
  result, output, rmse = _run(tmp_path, data, 'Fare ($)',
                              'taxi_export_2024')
  assert 'missing-value markers (data.na_values) per column: Trip_Miles 200' \
      in result.stdout
  _beats_the_mean_predictor(output, 'Fare', rmse)
  _, inputs = _serving_inputs(output, 'taxi_export_2024')
  assert inputs == sorted(['Trip_Miles', 'trip_seconds', 'Payment_Type',
                           'Compania', 'column_6'])
  examples = list(_examples(output, 'train')) + list(_examples(output, 'eval'))
  assert len(examples) == len(rows)
  # Where the file says NA, the example holds no value.
  assert sum(len(e.features.feature['Trip_Miles'].float_list.value) == 0
             for e in examples) >= 200
