"""Tables and plots of a pipeline run, for the notebooks and the HTML report.

Everything starts from `results.load_run_results` (MLMD), so a notebook or a
report needs only the configuration (or an output directory) of a run. The
tables are pandas DataFrames and the plots matplotlib Figures: both render in
any notebook front end, in nbconvert output and in a static HTML file, where
TFMA's widgets do not. The Figures are made without pyplot, so a notebook's
inline backend does not draw them a second time beside the one a cell shows.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from matplotlib import patches as matplotlib_patches
from matplotlib import ticker as matplotlib_ticker
from matplotlib.figure import Figure
import numpy as np
import pandas as pd

import tensorflow as tf

from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline.config import PipelineConfig
from tfx_e2e.reports import results as results_lib

SPLITS = ('train', 'eval')


def load(output_dir: str):
  """(config, results) of the latest run in `output_dir`, as it was
  configured (the run records its configuration there)."""
  from tfx_e2e.pipeline import config as config_lib  # pylint: disable=import-outside-toplevel
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
  figure = Figure(figsize=(8, 3.2))
  axes = figure.subplots()
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
  figure = Figure(figsize=(5.5, 5))
  axes = figure.subplots()
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


def _present(feature, total: int) -> int:
  """Rows where the column is filled.

  A CSV cell holds at most one value, and an empty cell none, so the number
  of values is the number of filled rows.
  """
  stats = getattr(feature, feature.WhichOneof('stats'))
  return min(int(stats.common_stats.tot_num_values), total)


def _shorten(text: str, width: int) -> str:
  return text if len(text) <= width else text[:width - 1] + '…'


def _feature_row(feature, total: int) -> Dict[str, object]:
  kind = feature.WhichOneof('stats')
  stats = getattr(feature, kind)
  present = _present(feature, total)
  row = {'type': {'num_stats': 'numeric', 'string_stats': 'string'}.get(
      kind, kind), 'present': present,
         'missing %': 100.0 * (total - present) / total if total else 0.0}
  if kind == 'num_stats':
    row.update(mean=stats.mean, std=stats.std_dev, min=stats.min,
               max=stats.max)
  elif kind == 'string_stats':
    # Shortened so that one long category does not widen the whole table.
    row.update(unique=int(stats.unique),
               top=_shorten(stats.top_values[0].value, 24)
               if stats.top_values else '')
  return row


def statistics_frame(results: results_lib.RunResults) -> pd.DataFrame:
  """Per feature, a train row and an eval row under it.

  Stacked rather than side by side, so the table has one set of columns and
  fits a page (side by side it is twice as wide).
  """
  rows = {}
  for split in SPLITS:
    dataset = _statistics(results, split).datasets[0]
    for feature in dataset.features:
      rows[('.'.join(feature.path.step), split)] = _feature_row(
          feature, dataset.num_examples)
  frame = pd.DataFrame.from_dict(rows, orient='index')
  frame.index = pd.MultiIndex.from_tuples(frame.index,
                                          names=['feature', 'split'])
  frame = frame.reindex(columns=[c for c in (
      'type', 'present', 'missing %', 'mean', 'std', 'min', 'max', 'unique',
      'top') if c in frame.columns])
  for column in ('present', 'unique'):
    if column in frame:  # whole numbers, blank where they do not apply
      frame[column] = [('' if pd.isna(v) else int(v)) for v in frame[column]]
  order = {split: i for i, split in enumerate(SPLITS)}
  return frame.sort_index(
      key=lambda level: level.map(order) if level.name == 'split' else level)


# --- per-feature distributions ---------------------------------------------

# Small multiples per page: more would make the report long and each plot
# unreadable. Wider data shows the features where train and eval differ most.
MAX_DISTRIBUTIONS = 32
_COLUMNS = 4
_BINS = 20
_TOP_VALUES = 8
_COLORS = {'train': '#4c72b0', 'eval': '#dd8452'}


@dataclasses.dataclass
class _Split:
  """One split's view of a feature."""
  missing: float  # share of rows without a value
  # Numeric: cumulative shares at the bucket edges of TFDV's equal-width
  # histogram and of its quantiles histogram (deciles by default); `knots`
  # is the one drawn.
  standard: Optional[Tuple[np.ndarray, np.ndarray]] = None
  deciles: Optional[Tuple[np.ndarray, np.ndarray]] = None
  knots: Optional[Tuple[np.ndarray, np.ndarray]] = None
  low: float = math.nan  # numeric: smallest and largest value
  high: float = math.nan
  shares: Optional[Dict[str, float]] = None  # categorical: value -> share
  complete: bool = True  # categorical: every value is in `shares`


def _knots(histogram) -> Optional[Tuple[np.ndarray, np.ndarray]]:
  """A histogram's cumulative shares at its bucket edges (None if empty)."""
  buckets = list(histogram.buckets)
  counts = np.array([b.sample_count for b in buckets], dtype=float)
  if not buckets or counts.sum() <= 0:
    return None
  edges = np.array([buckets[0].low_value] + [b.high_value for b in buckets])
  return edges, np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])


def _cdf(knots: Tuple[np.ndarray, np.ndarray], x: float) -> float:
  """Share of values <= x, linear inside a bucket (a point mass where a
  bucket has no width)."""
  edges, shares = knots
  j = int(np.searchsorted(edges, x, side='right'))
  if j == 0:
    return 0.0
  if j == len(edges):
    return 1.0
  return float(shares[j - 1] + (shares[j] - shares[j - 1]) *
               (x - edges[j - 1]) / (edges[j] - edges[j - 1]))


def _split_view(feature, total: int) -> _Split:
  from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=import-outside-toplevel
  view = _Split(missing=1.0 - _present(feature, total) / total if total
                else 1.0)
  kind = feature.WhichOneof('stats')
  if kind == 'num_stats':
    stats = feature.num_stats
    histograms = {h.type: h for h in stats.histograms}
    standard = histograms.get(statistics_pb2.Histogram.STANDARD)
    quantiles = histograms.get(statistics_pb2.Histogram.QUANTILES)
    view.standard = _knots(standard) if standard else None
    view.deciles = _knots(quantiles) if quantiles else None
    view.low, view.high = stats.min, stats.max
  elif kind == 'string_stats':
    stats = feature.string_stats
    counts = ({b.label: b.sample_count for b in stats.rank_histogram.buckets}
              or {v.value: v.frequency for v in stats.top_values})
    filled = sum(counts.values())
    listed_all = len(counts) >= stats.unique
    denominator = (filled if listed_all else
                   max(float(stats.common_stats.tot_num_values), filled))
    view.shares = {value: count / denominator
                   for value, count in counts.items()} if denominator else {}
    view.complete = listed_all
  return view


def _choose_knots(views: List[_Split]) -> bool:
  """Sets each split's drawn histogram; True if they are the deciles.

  Ten equal-width buckets cannot show data whose range a few extreme values
  set (one bucket holds most of it): deciles can. Both splits are drawn
  from the same kind, so that they compare.
  """
  with_values = [v for v in views if v.standard or v.deciles]
  skewed = all(v.deciles for v in with_values) and any(
      v.standard is None or np.diff(v.standard[1]).max() > 0.5
      for v in with_values)
  for view in with_values:
    view.knots = view.deciles if skewed else view.standard or view.deciles
  return skewed


def _window(views: List[_Split], skewed: bool) -> Tuple[float, float, bool]:
  """The x range to draw a numeric feature over, and whether it is clipped.

  The full range, unless the data is drawn from deciles and a tail decile is
  wider than the eight in the middle together (a few extreme values): then
  that side ends half the middle's width beyond the 10th or 90th
  percentile, so that the bulk of the data is not squeezed into one bin.
  """
  drawn = [v for v in views if v.knots is not None]
  low = min(v.low for v in drawn)
  high = max(v.high for v in drawn)
  if not skewed:
    return low, high, False
  tenth = min(v.knots[0][1] for v in drawn)
  ninetieth = max(v.knots[0][-2] for v in drawn)
  bulk = ninetieth - tenth
  clipped = False
  if high - ninetieth > bulk:
    high, clipped = ninetieth + bulk / 2, True
  if tenth - low > bulk:
    low, clipped = tenth - bulk / 2, True
  return low, high, clipped


def _numeric_difference(views: List[_Split]) -> float:
  """The largest gap between the splits' cumulative shares (as the
  Kolmogorov-Smirnov statistic, at the histograms' resolution).

  From the deciles where both splits have them: each split's equal-width
  buckets have edges of their own (its own min and max), deciles do not
  depend on outliers.
  """
  pairs = ([v.deciles for v in views] if all(v.deciles for v in views)
           else [v.knots for v in views])
  if any(k is None for k in pairs):
    return 0.0
  points = np.unique(np.concatenate([k[0] for k in pairs]))
  return max(abs(_cdf(pairs[0], x) - _cdf(pairs[1], x)) for x in points)


def _categorical_difference(views: List[_Split]) -> float:
  """The largest gap in one value's share between the splits (the
  L-infinity distance TFDV's drift check uses for categories)."""
  values = set(views[0].shares) | set(views[1].shares)
  return max((abs(views[0].shares.get(v, 0.0) - views[1].shares.get(v, 0.0))
              for v in values), default=0.0)


@dataclasses.dataclass
class _Feature:
  name: str
  kind: str
  views: List[_Split]
  difference: float
  skewed: bool = False  # numeric: drawn from deciles


def _features(results: results_lib.RunResults) -> Tuple[List[_Feature],
                                                         List[str]]:
  """Plottable features (numeric, string) and the names of the others."""
  datasets = {split: _statistics(results, split).datasets[0]
              for split in SPLITS}
  by_split = {split: {'.'.join(f.path.step): f for f in d.features}
              for split, d in datasets.items()}
  names = list(dict.fromkeys(list(by_split['train']) + list(by_split['eval'])))
  features, other = [], []
  for name in names:
    kinds = {by_split[s][name].WhichOneof('stats') for s in SPLITS
             if name in by_split[s]}
    if len(kinds) != 1 or not kinds <= {'num_stats', 'string_stats'}:
      other.append(name)
      continue
    kind = kinds.pop()
    views = [_split_view(by_split[s][name], datasets[s].num_examples)
             if name in by_split[s] else _Split(missing=1.0) for s in SPLITS]
    skewed = False
    if kind == 'num_stats':
      if all(v.standard is None and v.deciles is None for v in views):
        other.append(name)
        continue
      skewed = _choose_knots(views)
      difference = _numeric_difference(views)
    else:
      for view in views:
        view.shares = view.shares or {}
      difference = _categorical_difference(views)
    difference = max(difference, abs(views[0].missing - views[1].missing))
    features.append(_Feature(name, kind, views, difference,
                             kind == 'num_stats' and skewed))
  return features, other


def _draw_numeric(axes, feature: _Feature) -> str:
  low, high, clipped = _window(feature.views, feature.skewed)
  if high <= low:  # one value: a single bin around it
    low, high = low - 0.5, high + 0.5
  edges = np.linspace(low, high, _BINS + 1)
  width = edges[1] - edges[0]
  outside = []
  for split, view in zip(SPLITS, feature.views):
    if view.knots is None:
      continue
    cumulative = np.array([_cdf(view.knots, x) for x in edges])
    # Values below the window's left edge are outside it, unless the
    # window starts at this split's smallest value (then they are in).
    cumulative[0] = 0.0 if edges[0] <= view.low else cumulative[0]
    mass = np.diff(cumulative)
    density = mass / width
    if split == 'train':
      axes.stairs(density, edges, fill=True, alpha=0.35,
                  color=_COLORS[split], label=split)
    else:
      axes.stairs(density, edges, color=_COLORS[split], linewidth=1.6,
                  label=split)
    beyond = 1.0 - mass.sum()
    if beyond > 0.005:
      outside.append(f'{split} {beyond:.0%}')
  axes.set_yticks([])
  axes.set_xlim(low, high)
  axes.xaxis.set_major_locator(matplotlib_ticker.MaxNLocator(4))
  axes.tick_params(axis='x', labelsize=7)
  axes.xaxis.get_offset_text().set_fontsize(7)
  if clipped or outside:
    drawn = [v for v in feature.views if v.knots is not None]
    return (f'outside the x range: {", ".join(outside) or "none"}\n'
            f'(values {min(v.low for v in drawn):.4g} to '
            f'{max(v.high for v in drawn):.4g})')
  return ''


def _draw_categorical(axes, feature: _Feature) -> str:
  train, evaluation = feature.views
  values = sorted(set(train.shares) | set(evaluation.shares),
                  key=lambda v: (-train.shares.get(v, 0.0),
                                 -evaluation.shares.get(v, 0.0), v))
  shown = values[:_TOP_VALUES]
  positions = np.arange(len(shown))
  for offset, split, view in ((-0.2, 'train', train),
                              (0.2, 'eval', evaluation)):
    axes.barh(positions + offset, [view.shares.get(v, 0.0) for v in shown],
              height=0.4, color=_COLORS[split], label=split,
              alpha=0.6 if split == 'train' else 0.9)
  axes.set_yticks(positions)
  axes.set_yticklabels([_shorten(v, 18) if v else '(empty)' for v in shown],
                       fontsize=7)
  axes.invert_yaxis()
  axes.tick_params(axis='x', labelsize=7)
  axes.xaxis.set_major_formatter(
      matplotlib_ticker.PercentFormatter(xmax=1.0, decimals=0))
  more = len(values) - len(shown)
  if not (train.complete and evaluation.complete):
    return f'{more}+ more values (the statistics list the most frequent)'
  return f'{more} more values' if more else ''


@dataclasses.dataclass
class Distributions:
  """Per-feature train vs eval distributions, as drawn by
  `feature_distributions`.

  Attributes:
    figure: the grid of small plots, one per feature in `shown`.
    shown: the features drawn, in the order drawn.
    left_out: features not drawn because of the cap, in the same order.
    not_plotted: features whose statistics are neither numeric nor string.
    caption: what the figure shows and in which order, for a reader.
  """
  figure: Figure
  shown: List[str]
  left_out: List[str]
  not_plotted: List[str]
  caption: str


def feature_distributions(results: results_lib.RunResults,
                          max_features: int = MAX_DISTRIBUTIONS
                          ) -> Distributions:
  """Small multiples of each feature's train and eval distributions.

  Drawn from the StatisticsGen artifact (TFDV's statistics, no pass over the
  data). Numeric features: a density over 20 shared bins, from TFDV's
  equal-width histogram, or from its deciles where one equal-width bucket
  holds most values (outliers set the range); a tail decile wider than the
  rest of the data is cut off, and the share of values outside the drawn
  range is noted. String features: the share of each of the top values
  among rows with a value, as horizontal bars. Each plot's title gives the
  share of rows with no value in each split. Splits differ in size, so both
  are drawn as densities or shares, never counts.

  Features are ordered by how much train and eval differ, largest first:
  the largest gap in cumulative share (numbers) or in one value's share
  (categories), or in the missing share if larger. At most `max_features`
  are drawn; the caption says how many were left out.

  Args:
    results: the run's results (`load`).
    max_features: the most features to draw.

  Returns:
    A `Distributions` with the figure, the features drawn and left out, and
    a caption.
  """
  features, not_plotted = _features(results)
  features.sort(key=lambda f: (-f.difference, f.name))
  shown, rest = features[:max_features], features[max_features:]
  rows = max(1, math.ceil(len(shown) / _COLUMNS))
  height = 2.35 * rows + 0.7
  # Fixed margins in inches (room for category labels on the left, two
  # title lines and a note under each plot), not tight_layout: that
  # measures every tick label and took longer than drawing the plots.
  figure = Figure(figsize=(12, height))
  grid = figure.subplots(rows, _COLUMNS, squeeze=False, gridspec_kw={
      'left': 1.05 / 12, 'right': 0.985, 'wspace': 0.62,
      'top': 1 - 0.95 / height, 'bottom': 0.5 / height, 'hspace': 0.95})
  for axes, feature in zip(grid.flat, shown):
    draw = _draw_numeric if feature.kind == 'num_stats' else _draw_categorical
    note = draw(axes, feature)
    train, evaluation = feature.views
    axes.set_title(
        f'{_shorten(feature.name, 26)}  Δ {feature.difference:.2f}\n'
        f'missing: train {train.missing:.0%}, eval {evaluation.missing:.0%}',
        fontsize=8, loc='left')
    if note:
      axes.set_xlabel(note, fontsize=6.5)
    for side in ('top', 'right'):
      axes.spines[side].set_visible(False)
  for axes in list(grid.flat)[len(shown):]:
    axes.set_visible(False)
  handles = [matplotlib_patches.Patch(color=_COLORS[s], alpha=0.6, label=s)
             for s in SPLITS]
  figure.legend(handles=handles, loc='upper right', ncol=2, fontsize=9,
                frameon=False)
  figure.suptitle('Train vs eval per feature (numbers: density; categories: '
                  'share of rows with a value)', fontsize=10, x=0.01,
                  ha='left')

  caption = (f'{len(shown)} of {len(features)} features'
             if rest else f'{len(shown)} features')
  caption += (', ordered by how much train and eval differ (Δ, largest '
              'first: the largest gap in cumulative share for numbers, in '
              "one value's share for categories, or in the missing share).")
  if rest:
    listed = ', '.join(f.name for f in rest[:20])
    caption += (f' {len(rest)} left out (they differ less): {listed}'
                f'{", …" if len(rest) > 20 else ""}.')
  if not_plotted:
    caption += f' Not plotted (not numbers or text): {", ".join(not_plotted)}.'
  return Distributions(figure, [f.name for f in shown],
                       [f.name for f in rest], not_plotted, caption)


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
