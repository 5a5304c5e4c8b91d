"""Tables and plots of a pipeline run, for the notebooks and the HTML report.

Everything starts from `results.load_run_results` (MLMD), so a notebook or a
report needs only the configuration (or an output directory) of a run. The
tables are pandas DataFrames and the plots matplotlib Figures: both render in
any notebook front end, in nbconvert output and in a static HTML file, where
TFMA's widgets do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline import pipeline as pipeline_def
from pipeline import results as results_lib
from pipeline.config import PipelineConfig

SPLITS = ('train', 'eval')


def load(output_dir: str):
  """(config, results) of the latest run in `output_dir`, as it was
  configured (the run records its configuration there)."""
  from pipeline import config as config_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.load_config(config_lib.run_config_file(output_dir),
                                  {'output_dir': output_dir})
  return config, results_lib.load_run_results(config)


def components_frame(results: results_lib.RunResults) -> pd.DataFrame:
  return pd.DataFrame(
      [(c.node_id, c.state, c.seconds) for c in results.components],
      columns=['component', 'status', 'seconds']).set_index('component')


def metrics_frame(metrics: Dict[str, Dict[str, float]]) -> pd.DataFrame:
  """Slices x metrics; the overall slice first, then by feature and value."""
  frame = pd.DataFrame.from_dict(metrics, orient='index')
  frame = frame[[m for m in results_lib.METRIC_NAMES if m in frame.columns]]
  frame = frame.rename(columns=results_lib.METRIC_NAMES)
  order = sorted(frame.index, key=lambda s: (s != results_lib.OVERALL,
                                             s.split('=')[0],
                                             results_lib.slice_sort_key(s)))
  frame = frame.loc[order]
  frame.index.name = 'slice'
  if 'examples' in frame:
    frame['examples'] = frame['examples'].astype(int)
  return frame


def comparison_frame(results: results_lib.RunResults) -> Optional[pd.DataFrame]:
  """Candidate vs baseline per slice (RMSE and MAE), or None without one."""
  if not results.baseline_metrics:
    return None
  rows = []
  for name in metrics_frame(results.metrics).index:
    candidate = results.metrics.get(name, {})
    baseline = results.baseline_metrics.get(name, {})
    row = {'slice': name}
    for metric in (results_lib.RMSE, 'mean_absolute_error'):
      label = results_lib.METRIC_NAMES[metric]
      row[f'{label} candidate'] = candidate.get(metric)
      row[f'{label} baseline'] = baseline.get(metric)
      if candidate.get(metric) is not None and baseline.get(metric) is not None:
        row[f'{label} change'] = candidate[metric] - baseline[metric]
    rows.append(row)
  return pd.DataFrame(rows).set_index('slice')


def thresholds_frame(results: results_lib.RunResults) -> pd.DataFrame:
  """The blessing gates as the Evaluator applied them, with the setting
  that holds each."""
  return pd.DataFrame(
      [(c.description, c.value, c.verdict, c.setting or '')
       for c in results.thresholds],
      columns=['threshold', 'value', 'result', 'setting'])


def plot_metric_by_slice(metrics: Dict[str, Dict[str, float]], feature: str,
                         metric: str = results_lib.RMSE):
  """A bar per value of `feature`, with the overall value as a line."""
  frame = metrics_frame(metrics)
  rows = frame[[s.startswith(f'{feature}=') for s in frame.index]]
  label = results_lib.METRIC_NAMES[metric]
  figure, axes = plt.subplots(figsize=(8, 3.2))
  axes.bar([s.split('=', 1)[1] for s in rows.index], rows[label],
           color='#4c72b0')
  if results_lib.OVERALL in frame.index:
    axes.axhline(frame.loc[results_lib.OVERALL, label], color='#c44e52',
                 linestyle='--', label='overall')
    axes.legend()
  axes.set_xlabel(feature)
  axes.set_ylabel(label)
  axes.set_title(f'{label} by {feature} (eval split)')
  if len(rows) > 12:
    axes.tick_params(axis='x', labelrotation=90)
  figure.tight_layout()
  return figure


def predictions_frame(results: results_lib.RunResults, config: PipelineConfig,
                      max_rows: int = 2000) -> pd.DataFrame:
  """Label and the candidate model's prediction for held-out (eval) rows."""
  examples = results.component(pipeline_def.EXAMPLE_GEN).output('examples')
  model = results.component(pipeline_def.TRAINER).output('model')
  files = tf.io.gfile.glob(f'{examples.uri}/Split-eval/*')
  records = [r.numpy() for r in tf.data.TFRecordDataset(
      files, compression_type='GZIP').take(max_rows)]
  labels = []
  for record in records:
    values = tf.train.Example.FromString(record).features.feature[
        config.data.label]
    labels.append((values.float_list.value or values.int64_list.value or
                   [np.nan])[0])
  loaded = tf.saved_model.load(str(Path(model.uri) / 'Format-Serving'))
  predictions = loaded.signatures['serving_default'](
      inputs=tf.constant(records))['outputs'].numpy()
  return pd.DataFrame({'label': np.asarray(labels, dtype=float),
                       'prediction': predictions.astype(float)})


def plot_calibration(predictions: pd.DataFrame, bins: int = 10):
  """Prediction vs label: every row, and the mean label per prediction bin."""
  figure, axes = plt.subplots(figsize=(5.5, 5))
  axes.scatter(predictions['prediction'], predictions['label'], s=6,
               alpha=0.35, color='#4c72b0', label='rows')
  edges = np.unique(np.quantile(predictions['prediction'],
                                np.linspace(0, 1, bins + 1)))
  binned = predictions.groupby(pd.cut(predictions['prediction'], edges,
                                      include_lowest=True), observed=True)
  axes.plot(binned['prediction'].mean(), binned['label'].mean(), 'o-',
            color='#c44e52', label='mean label per prediction decile')
  low = float(min(predictions.min()))
  high = float(np.quantile(predictions.to_numpy(), 0.99))
  axes.plot([low, high], [low, high], color='gray', linestyle=':',
            label='perfect calibration')
  axes.set_xlim(low, high)
  axes.set_ylim(low, high)
  axes.set_xlabel('prediction')
  axes.set_ylabel('label')
  axes.set_title('Calibration on the eval split')
  axes.legend(loc='upper left', fontsize='small')
  figure.tight_layout()
  return figure


# --- data validation -------------------------------------------------------

def _statistics(results: results_lib.RunResults, split: str):
  import tensorflow_data_validation as tfdv  # pylint: disable=import-outside-toplevel
  artifact = results.component(pipeline_def.STATISTICS_GEN).output(
      'statistics')
  return tfdv.load_stats_binary(
      str(Path(artifact.uri) / f'Split-{split}' / 'FeatureStats.pb'))


def _feature_row(feature, total: int) -> Dict[str, object]:
  kind = feature.WhichOneof('stats')
  stats = getattr(feature, kind)
  # A CSV cell holds at most one value, and an empty cell none, so the
  # number of values is the number of rows where the column is filled.
  present = min(int(stats.common_stats.tot_num_values), total)
  row = {'type': {'num_stats': 'numeric', 'string_stats': 'string'}.get(
      kind, kind), 'present': present,
         'missing %': 100.0 * (total - present) / total if total else 0.0}
  if kind == 'num_stats':
    row.update(mean=stats.mean, std=stats.std_dev, min=stats.min,
               max=stats.max)
  elif kind == 'string_stats':
    row.update(unique=int(stats.unique),
               top=stats.top_values[0].value if stats.top_values else '')
  return row


def statistics_frame(results: results_lib.RunResults) -> pd.DataFrame:
  """Per feature, the train and eval statistics side by side."""
  frames = {}
  for split in SPLITS:
    dataset = _statistics(results, split).datasets[0]
    frames[split] = pd.DataFrame.from_dict(
        {'.'.join(f.path.step): _feature_row(f, dataset.num_examples)
         for f in dataset.features}, orient='index')
  frame = pd.concat(frames, axis=1)
  frame.index.name = 'feature'
  return frame.sort_index()


def split_sizes(results: results_lib.RunResults) -> Dict[str, int]:
  return {split: int(_statistics(results, split).datasets[0].num_examples)
          for split in SPLITS}


def schema_frame(results: results_lib.RunResults) -> pd.DataFrame:
  import tensorflow_data_validation as tfdv  # pylint: disable=import-outside-toplevel
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=import-outside-toplevel
  artifact = results.component(pipeline_def.SCHEMA_GEN).output('schema')
  schema = tfdv.load_schema_text(str(Path(artifact.uri) / 'schema.pbtxt'))
  domains = {d.name: list(d.value) for d in schema.string_domain}
  rows = []
  for feature in schema.feature:
    domain = domains.get(feature.domain, [])
    rows.append({
        'feature': feature.name,
        'type': schema_pb2.FeatureType.Name(feature.type),
        'required fraction': feature.presence.min_fraction,
        'domain': (', '.join(domain[:6]) + (f' (+{len(domain) - 6} more)'
                                            if len(domain) > 6 else '')),
    })
  return pd.DataFrame(rows).set_index('feature')


def anomalies_frame(results: results_lib.RunResults) -> pd.DataFrame:
  rows = [(split, *item.split(': ', 1))
          for split, items in results.anomalies.items() for item in items]
  return pd.DataFrame(rows, columns=['split', 'feature', 'anomaly'])


# --- lineage ---------------------------------------------------------------

def lineage(results: results_lib.RunResults,
            config: PipelineConfig) -> List[Dict[str, str]]:
  """From the input data to the pushed version, via each artifact's URI."""
  steps = [{'step': 'input data', 'component': '(CSV)',
            'artifact': str(Path(config.data.path).resolve())}]

  def add(step: str, node: str, key: str):
    component = results.component(node)
    artifact = component.output(key) if component else None
    if artifact is not None:
      steps.append({'step': step, 'component': node, 'artifact': artifact.uri})

  add('examples (train/eval)', pipeline_def.EXAMPLE_GEN, 'examples')
  add('statistics', pipeline_def.STATISTICS_GEN, 'statistics')
  add('schema', pipeline_def.SCHEMA_GEN, 'schema')
  add('anomalies', pipeline_def.EXAMPLE_VALIDATOR, 'anomalies')
  add('transform graph', pipeline_def.TRANSFORM, 'transform_graph')
  add('model', pipeline_def.TRAINER, 'model')
  add('evaluation', pipeline_def.EVALUATOR, 'evaluation')
  add('blessing', pipeline_def.EVALUATOR, 'blessing')
  if results.pushed:
    steps.append({'step': f'pushed version {results.pushed_version}',
                  'component': pipeline_def.PUSHER,
                  'artifact': results.pushed_path})
  return steps
