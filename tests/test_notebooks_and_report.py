"""The result notebooks run top to bottom on a real run, and the HTML report
matches the evaluation artifacts and renders in a browser."""

import os
import re
import shutil
import subprocess

import nbclient
import nbformat
import pytest

from pipeline import analysis
from pipeline.config import REPO_ROOT
from pipeline.report import write_report
from pipeline.results import OVERALL, RMSE

NOTEBOOKS = REPO_ROOT / 'notebooks'


def _execute(name, output_dir):
  notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
  os.environ['TFX_E2E_OUTPUT'] = str(output_dir)
  try:
    nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': str(NOTEBOOKS)}}
                            ).execute()
  finally:
    del os.environ['TFX_E2E_OUTPUT']
  return notebook


def _outputs_text(notebook) -> str:
  texts = []
  for cell in notebook.cells:
    for output in cell.get('outputs', []):
      texts.append(output.get('text', ''))
      for mime in ('text/plain', 'text/html'):
        texts.append(output.get('data', {}).get(mime, ''))
  return '\n'.join(texts)


def _images(notebook) -> int:
  return sum('image/png' in output.get('data', {})
             for cell in notebook.cells for output in cell.get('outputs', []))


def test_model_analysis_notebook(taxi_run):
  _, output = taxi_run
  _, results = analysis.load(str(output))
  notebook = _execute('model_analysis.ipynb', output)
  text = _outputs_text(notebook)
  assert f'{results.metrics[OVERALL][RMSE]:.6f}' in text
  assert f'run {results.run_id}' in text
  assert 'payment_type=Cash' in text
  assert ('BLESSED' if results.blessed else 'NOT BLESSED') in text
  assert _images(notebook) >= 3  # two slice plots and the calibration plot


def test_data_validation_notebook(taxi_run):
  _, output = taxi_run
  _, results = analysis.load(str(output))
  notebook = _execute('data_validation.ipynb', output)
  text = _outputs_text(notebook)
  sizes = analysis.split_sizes(results)
  assert f"'train': {sizes['train']}" in text
  assert 'trip_miles' in text and 'payment_type' in text
  assert 'No anomalies' in text


def _numbers(html_text):
  return set(re.findall(r'>\s*(-?[\d.]+(?:e[+-]?\d+)?)\s*<', html_text))


def test_report_matches_the_evaluation_and_renders(taxi_run, tmp_path):
  _, output = taxi_run
  config, results = analysis.load(str(output))
  path = write_report(config, str(tmp_path / 'report.html'))
  page = path.read_text()
  numbers = _numbers(page)
  overall = results.metrics[OVERALL]
  for metric in (RMSE, 'mean_absolute_error', 'mean_label'):
    assert f'{overall[metric]:.4g}' in numbers, metric
  assert f'{int(overall["example_count"])}' in numbers
  assert page.count('data:image/png;base64,') >= 3
  assert not re.search(r'(src|href)="https?://', page)  # self-contained
  assert 'BLESSED' in page and 'Lineage' in page
  assert str(config.data.path) in page  # lineage starts at the input CSV
  assert results.pushed_path in page
  assert ('No baseline' in page) == (not results.baseline_metrics)

  chromium = shutil.which('chromium')
  if not chromium:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
  screenshot = tmp_path / 'report.png'
  subprocess.run(
      [chromium, '--headless', '--no-sandbox', '--disable-gpu',
       '--disable-quic', '--no-first-run', '--disable-background-networking',
       '--disable-component-update', '--disable-sync',
       f'--user-data-dir={tmp_path / "profile"}', '--window-size=1200,2400',
       f'--screenshot={screenshot}', path.as_uri()],
      check=True, timeout=120, capture_output=True)
  assert screenshot.stat().st_size > 20_000  # a page, not a blank image
