"""`tfx-e2e report`: one self-contained HTML file for a pipeline run.

No network is needed to view it: styles are inline and plots are embedded
PNGs. Parts a run does not have (no evaluation, no baseline, no push) say so.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import List

import matplotlib.pyplot as plt
import pandas as pd

from tfx_e2e.formats import files
from tfx_e2e.reports import analysis
from tfx_e2e.reports import results as results_lib
from tfx_e2e.pipeline.config import PipelineConfig

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #c0362c;
font-weight: bold; } .note { background: #fff8e1; padding: 0.6em 1em;
border-left: 4px solid #f0b400; } img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 3px; }
.wide { overflow-x: auto; max-width: 100%; }
.caption { font-size: 0.9em; color: #444; }
"""


def _table(frame: pd.DataFrame, index: bool = True) -> str:
  return frame.to_html(index=index, float_format=lambda v: f'{v:.4g}',
                       na_rep='', border=0)


def _figure(figure, alt: str = 'plot') -> str:
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=90)
  plt.close(figure)
  encoded = base64.b64encode(buffer.getvalue()).decode()
  return (f'<img alt="{html.escape(alt)}" '
          f'src="data:image/png;base64,{encoded}">')


def _note(text: str) -> str:
  return f'<p class="note">{html.escape(text)}</p>'


def _evaluation(results: results_lib.RunResults,
                config: PipelineConfig) -> List[str]:
  parts = ['<h2>Evaluation (eval split)</h2>']
  if not results.metrics:
    return parts + [_note(
        'The Evaluator did not run in this run'
        + (': the data gate stopped it (anomalies above).'
           if results.has_anomalies else '.'))]
  parts.append(_table(analysis.metrics_frame(results.metrics)))
  for feature in config.data.slice_features:
    if any(s.startswith(f'{feature}=') for s in results.metrics):
      parts.append(_figure(analysis.plot_metric_by_slice(results.metrics,
                                                         feature)))
  parts.append(_figure(analysis.plot_calibration(
      analysis.predictions_frame(results, config))))

  verdict = ('<span class="ok">BLESSED</span>' if results.blessed else
             '<span class="bad">NOT BLESSED</span>')
  parts += [f'<h2>Blessing: {verdict}</h2>',
            _table(analysis.thresholds_frame(results), index=False)]
  for check in results.thresholds:
    if check.passed is False:
      value = '-' if check.value is None else f'{check.value:.4g}'
      parts.append(_note(f'Failed: {check.description}, value {value}; '
                         f'{check.remedy}.'))
  comparison = analysis.comparison_frame(results)
  if comparison is None:
    parts.append(_note('No baseline: no model was served when this one was '
                       'evaluated, so the change thresholds were not '
                       'checked.'))
  else:
    parts += ['<h3>Candidate vs baseline (the model served now)</h3>',
              _table(comparison)]
  return parts


def render(config: PipelineConfig) -> str:
  """The report of the latest run of `config`'s pipeline, as HTML."""
  results = results_lib.load_run_results(config)
  title = f'Pipeline {results.pipeline_name}, run {results.run_id}'
  parts = [f'<h1>{html.escape(title)}</h1>',
           f'<p>Output: <code>{html.escape(str(config.output_path))}</code>'
           '</p>', '<h2>Components</h2>',
           _table(analysis.components_frame(results))]

  parts.append('<h2>Data</h2>')
  sizes = analysis.split_sizes(results)
  parts.append('<p>' + ', '.join(f'{split}: {count:,} rows'
                                 for split, count in sizes.items()) + '</p>')
  # A box of its own scrolls sideways if a CSV's long names still make the
  # table wider than the page; the page itself never does.
  parts.append('<div class="wide" id="statistics">'
               f'{_table(analysis.statistics_frame(results))}</div>')
  distributions = analysis.feature_distributions(results)
  parts += ['<h3>Distributions: train vs eval</h3>',
            f'<p class="caption">{html.escape(distributions.caption)}</p>',
            _figure(distributions.figure, 'distributions of: '
                    + ', '.join(distributions.shown))]
  parts.append('<h3>Anomalies (ExampleValidator)</h3>')
  anomalies = analysis.anomalies_frame(results)
  parts.append(_table(anomalies, index=False) if len(anomalies) else
               '<p class="ok">None: both splits match the schema.</p>')

  parts += _evaluation(results, config)

  parts.append('<h2>Push</h2>')
  parts.append(
      f'<p class="ok">Pushed version {html.escape(results.pushed_version)} '
      f'to <code>{html.escape(results.pushed_path)}</code></p>'
      if results.pushed else _note('Nothing was pushed in this run.'))
  parts += ['<h2>Lineage</h2>', _table(
      pd.DataFrame(analysis.lineage(results, config)), index=False)]
  return (f'<!DOCTYPE html><html><head><meta charset="utf-8">'
          f'<title>{html.escape(title)}</title><style>{_STYLE}</style>'
          f'</head><body>{"".join(parts)}</body></html>')


def write_report(config: PipelineConfig, path: str = '') -> Path:
  """Writes the report (default `<output>/report.html`); returns its path."""
  target = Path(path) if path else config.output_path / 'report.html'
  text = render(config)  # first: a run that cannot be read creates nothing
  target.parent.mkdir(parents=True, exist_ok=True)
  files.write_atomically(target, text)
  return target
