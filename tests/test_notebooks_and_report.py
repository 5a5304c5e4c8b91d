"""The result notebooks run top to bottom on a real run, and the HTML report
matches the evaluation artifacts and renders in a browser."""

import html
import json
import math
import os
import re
import shutil
import subprocess

import nbclient
import nbformat
import numpy as np
import pytest

from tfx_e2e.pipeline import environment
from tfx_e2e.reports import analysis
from tfx_e2e.pipeline.config import REPO_ROOT
from tfx_e2e.reports.report import write_report
from tfx_e2e.reports.results import OVERALL, RMSE

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

NOTEBOOKS = REPO_ROOT / 'notebooks'
# What TensorFlow prints when it starts on a machine without a GPU, and the
# deprecation notes about TFMA's own calls: none of it is about the run.
TF_NOISE = re.compile(r'cuda|cudnn|cufft|cublas|TF-TRT|TensorRT|'
                      r'is deprecated and will be removed', re.IGNORECASE)
PAGE_WIDTH = 1300


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


@pytest.fixture(scope='module')
def model_notebook(taxi_run):
  return _execute('model_analysis.ipynb', taxi_run[1])


@pytest.fixture(scope='module')
def data_notebook(taxi_run):
  return _execute('data_validation.ipynb', taxi_run[1])


def _code_cell(notebook, text):
  """The one code cell whose source contains `text`."""
  cells = [c for c in notebook.cells
           if c.cell_type == 'code' and text in c.source]
  assert len(cells) == 1, text
  return cells[0]


def _pngs(cell):
  return [output['data']['image/png'] for output in cell.get('outputs', [])
          if 'image/png' in output.get('data', {})]


def _streams(notebook, name):
  return [(index, output.get('text', ''))
          for index, cell in enumerate(notebook.cells)
          for output in cell.get('outputs', [])
          if output.get('output_type') == 'stream'
          and output.get('name') == name]


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


def test_model_analysis_notebook(taxi_run, model_notebook):
  _, output = taxi_run
  _, results = analysis.load(str(output))
  notebook = model_notebook
  text = _outputs_text(notebook)
  assert f'{results.metrics[OVERALL][RMSE]:.6f}' in text
  assert f'run {results.run_id}' in text
  assert 'payment_type=Cash' in text
  assert ('BLESSED' if results.blessed else 'NOT BLESSED') in text
  assert _images(notebook) >= 3  # two slice plots and the calibration plot


def test_data_validation_notebook(taxi_run, data_notebook):
  _, output = taxi_run
  _, results = analysis.load(str(output))
  notebook = data_notebook
  text = _outputs_text(notebook)
  sizes = analysis.split_sizes(results)
  assert f"'train': {sizes['train']}" in text
  assert 'trip_miles' in text and 'payment_type' in text
  assert 'No anomalies' in text
  # One grid of distribution plots, captioned with how many features it
  # holds: every feature of the statistics (fewer than the cap).
  cell = _code_cell(notebook, 'feature_distributions')
  assert len(_pngs(cell)) == 1
  features = {name for name, _ in analysis.statistics_frame(results).index}
  assert len(features) <= analysis.MAX_DISTRIBUTIONS
  assert f'{len(features)} features, ordered by' in text


def test_notebooks_show_no_tensorflow_start_up_noise(model_notebook,
                                                     data_notebook):
  for notebook in (model_notebook, data_notebook):
    first = next(i for i, c in enumerate(notebook.cells)
                 if c.cell_type == 'code')
    assert not [t for i, t in _streams(notebook, 'stderr') if i == first]
    for name in ('stderr', 'stdout'):
      noise = [t for _, t in _streams(notebook, name) if TF_NOISE.search(t)]
      assert not noise, noise


def test_each_figure_appears_once(taxi_run, model_notebook, data_notebook):
  config, results = analysis.load(str(taxi_run[1]))
  sliced = [f for f in config.data.slice_features
            if any(s.startswith(f'{f}=') for s in results.metrics)]
  assert sliced
  assert len(_pngs(_code_cell(model_notebook, 'plot_metric_by_slice'))
             ) == len(sliced)
  assert len(_pngs(_code_cell(model_notebook, 'plot_calibration'))) == 1
  assert len(_pngs(_code_cell(data_notebook, 'feature_distributions'))) == 1
  for notebook in (model_notebook, data_notebook):
    images = [png for cell in notebook.cells for png in _pngs(cell)]
    assert len(images) == len(set(images))  # no figure drawn twice


def _statistics_protos(results):
  return {split: analysis._statistics(results, split).datasets[0]  # pylint: disable=protected-access
          for split in analysis.SPLITS}


def test_feature_distributions_match_the_statistics(taxi_run):
  _, results = analysis.load(str(taxi_run[1]))
  protos = _statistics_protos(results)
  names = {'.'.join(f.path.step) for f in protos['train'].features}
  drawn = analysis.feature_distributions(results)
  assert sorted(drawn.shown) == sorted(names)
  assert not drawn.left_out and not drawn.not_plotted
  plots = [a for a in drawn.figure.axes if a.get_visible() and a.get_title(
      loc='left')]
  assert [a.get_title(loc='left').split()[0] for a in plots] == drawn.shown
  differences = [float(re.search(r'Δ ([\d.]+)', a.get_title(loc='left'))[1])
                 for a in plots]
  assert differences == sorted(differences, reverse=True)

  for axes, name in zip(plots, drawn.shown):
    steps = [p for p in axes.patches if hasattr(p, 'get_data')]
    if not steps:  # a categorical feature: bars
      continue
    assert len(steps) == 2, name  # train and eval overlaid
    for step in steps:
      density, edges = step.get_data().values, step.get_data().edges
      inside = float(np.sum(density * np.diff(edges)))
      # Densities of the values in the drawn range: they add up to one
      # unless the plot says how much is outside it.
      if 'outside the x range' in axes.get_xlabel():
        assert 0.7 < inside <= 1.0 + 1e-9, name
      else:
        assert math.isclose(inside, 1.0, rel_tol=1e-9), name

  # Category bars are each value's share of the rows with a value.
  axes = plots[drawn.shown.index('payment_type')]
  labels = [t.get_text() for t in axes.get_yticklabels()]
  for split, bars in zip(analysis.SPLITS, (axes.containers[0],
                                           axes.containers[1])):
    stats = next(f for f in protos[split].features
                 if f.path.step == ['payment_type']).string_stats
    counts = {b.label: b.sample_count for b in stats.rank_histogram.buckets}
    total = sum(counts.values())
    for label, bar in zip(labels, bars):
      assert math.isclose(bar.get_width(), counts.get(label, 0) / total)
  assert labels[0] == 'Cash'  # most frequent first
  # Shares of the rows with a value, not of all rows (company is often empty).
  axes = plots[drawn.shown.index('company')]
  statistics = analysis.statistics_frame(results)
  for split, bars in zip(analysis.SPLITS, axes.containers):
    stats = next(f for f in protos[split].features
                 if f.path.step == ['company']).string_stats
    present = statistics.loc[('company', split), 'present']
    assert present < protos[split].num_examples
    assert math.isclose(bars[0].get_width(),
                        stats.top_values[0].frequency / present)


def test_feature_distributions_cap_keeps_the_largest_differences(taxi_run):
  _, results = analysis.load(str(taxi_run[1]))
  every = analysis.feature_distributions(results)
  capped = analysis.feature_distributions(results, max_features=5)
  assert capped.shown == every.shown[:5]
  assert capped.left_out == every.shown[5:]
  visible = [a for a in capped.figure.axes if a.get_visible()]
  assert len(visible) == 5
  total = len(every.shown)
  assert f'5 of {total} features' in capped.caption
  assert f'{total - 5} left out' in capped.caption


def _steps(axes):
  """The histogram outlines of a numeric plot: {label: (density, edges)}."""
  return {p.get_label(): (p.get_data().values, p.get_data().edges)
          for p in axes.patches if hasattr(p, 'get_data')}


def test_feature_distributions_of_wide_and_awkward_data(monkeypatch):
  """124 features of TFDV's own statistics: the cap keeps those whose train
  and eval differ most, and a heavy tail, a split with no values and a
  constant are drawn without inventing data."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  import tensorflow_data_validation as tfdv  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)

  def frame(rows, shift):
    # Every third feature moves by 0.6 standard deviations in eval.
    columns = {f'num_{i:03d}': rng.normal(shift * (i % 3 == 2), 1, rows)
               for i in range(120)}
    columns['constant'] = np.full(rows, 5.0)
    columns['heavy'] = np.concatenate([rng.exponential(1, rows - 3),
                                       [1e6, 2e6, 5e6]])
    columns['sparse'] = np.where(rng.random(rows) < 0.9, np.nan,
                                 rng.normal(0, 1, rows))
    columns['category'] = rng.choice(['a', 'b', 'c'], rows)
    return pd.DataFrame(columns)

  statistics = {
      'train': tfdv.generate_statistics_from_dataframe(frame(3000, 0.0)),
      'eval': tfdv.generate_statistics_from_dataframe(
          frame(1000, 0.6).assign(sparse=np.nan))}
  monkeypatch.setattr(analysis, '_statistics',
                      lambda results, split: statistics[split])

  drawn = analysis.feature_distributions(None)
  assert len(drawn.shown) == analysis.MAX_DISTRIBUTIONS
  assert len(drawn.left_out) == 124 - analysis.MAX_DISTRIBUTIONS
  assert f'{len(drawn.left_out)} left out' in drawn.caption
  assert all(int(name[-3:]) % 3 == 2 for name in drawn.shown), drawn.shown

  for proto in statistics.values():  # the awkward ones on their own
    features = proto.datasets[0].features
    kept = [f for f in features if not f.path.step[0].startswith('num_')]
    del features[:]
    features.extend(kept)
  awkward = analysis.feature_distributions(None)
  plots = {a.get_title(loc='left').split()[0]: a
           for a in awkward.figure.axes if a.get_visible()}
  assert sorted(plots) == ['category', 'constant', 'heavy', 'sparse']
  heavy = plots['heavy']
  assert 'outside the x range: train 10%, eval 10%' in heavy.get_xlabel()
  assert heavy.get_xlim()[1] < 100  # the bulk, not up to 5e6
  for density, edges in _steps(heavy).values():
    assert math.isclose(np.sum(density * np.diff(edges)), 0.9, abs_tol=0.02)
  sparse = plots['sparse']
  assert list(_steps(sparse)) == ['train']  # eval has no value to draw
  assert 'eval 100%' in sparse.get_title(loc='left')
  for density, edges in _steps(plots['constant']).values():
    assert math.isclose(np.sum(density * np.diff(edges)), 1.0)
    assert edges[0] <= 5.0 <= edges[-1]


def test_start_up_noise_is_dropped_and_other_stderr_kept(tmp_path, capfd,
                                                         monkeypatch):
  (tmp_path / 'noisy_native_module.py').write_text(
      'import os\n'
      'os.write(2, b"2026-01-01 00:00:00: E external/local_xla/xla/stream_'
      'executor/cuda/cuda_dnn.cc:10575] Unable to register cuDNN factory: '
      'Attempting to register factory for plugin cuDNN\\n")\n'
      'os.write(2, b"a real problem at start-up\\n")\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  capfd.readouterr()
  environment.import_quietly('noisy_native_module')
  err = capfd.readouterr().err
  assert 'a real problem at start-up' in err
  assert 'cuDNN' not in err


def _numbers(html_text):
  return set(re.findall(r'>\s*(-?[\d.]+(?:e[+-]?\d+)?)\s*<', html_text))


@pytest.fixture(scope='module')
def report(taxi_run, tmp_path_factory):
  config, _ = analysis.load(str(taxi_run[1]))
  return write_report(config, str(tmp_path_factory.mktemp('report') /
                                  'report.html'))


def _chromium():
  chromium = shutil.which('chromium')
  if not chromium:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
  return chromium


def _headless(chromium, profile, *args):
  return subprocess.run(
      [chromium, '--headless', '--no-sandbox', '--disable-gpu',
       '--disable-quic', '--no-first-run', '--disable-background-networking',
       '--disable-component-update', '--disable-sync',
       f'--user-data-dir={profile}',
       f'--window-size={PAGE_WIDTH},2400', *args],
      check=True, timeout=120, capture_output=True, text=True)


# Measures the page as laid out: its scroll width, and the right edge of
# the statistics table (the one with a "missing %" column).
_MEASURE = """<script>
const table = Array.from(document.querySelectorAll('table')).find(
    t => t.textContent.includes('missing %'));
document.body.setAttribute('data-measure', JSON.stringify({
  page: document.documentElement.scrollWidth, viewport: window.innerWidth,
  table: table ? table.getBoundingClientRect().right : null}));
</script>"""


def _layout(chromium, page_html, tmp_path):
  tmp_path.mkdir(parents=True, exist_ok=True)
  page = tmp_path / 'measured.html'
  page.write_text(page_html.replace('</body>', _MEASURE + '</body>'))
  dom = _headless(chromium, tmp_path / 'profile', '--dump-dom',
                  page.as_uri()).stdout
  return json.loads(html.unescape(re.search(r'data-measure="([^"]*)"',
                                            dom)[1]))


def test_report_matches_the_evaluation_and_renders(taxi_run, report,
                                                   tmp_path):
  _, output = taxi_run
  config, results = analysis.load(str(output))
  path = report
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

  screenshot = tmp_path / 'report.png'
  _headless(_chromium(), tmp_path / 'profile', f'--screenshot={screenshot}',
            path.as_uri())
  assert screenshot.stat().st_size > 20_000  # a page, not a blank image


def test_report_has_a_distribution_plot_per_feature(taxi_run, report):
  _, results = analysis.load(str(taxi_run[1]))
  page = report.read_text()
  match = re.search(r'<img alt="distributions of: ([^"]*)" src="data:image/'
                    r'png;base64,', page)
  assert match, 'no distributions figure'
  features = {name for name, _ in analysis.statistics_frame(results).index}
  assert sorted(html.unescape(match[1]).split(', ')) == sorted(features)
  assert f'{len(features)} features, ordered by' in page


def test_statistics_tables_fit_the_page(report, data_notebook, tmp_path):
  from nbconvert import HTMLExporter  # pylint: disable=import-outside-toplevel
  chromium = _chromium()
  notebook_html, _ = HTMLExporter(template_name='lab').from_notebook_node(
      data_notebook)
  layouts = {name: _layout(chromium, page, tmp_path / name)
             for name, page in (('report', report.read_text()),
                                ('notebook', notebook_html))}
  for layout in layouts.values():
    assert layout['viewport'] == PAGE_WIDTH, layouts
    assert layout['table'] is not None, layouts
    assert layout['table'] <= layout['viewport'], layouts
    assert layout['page'] <= layout['viewport'], layouts
