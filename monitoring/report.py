"""monitoring.html: the monitor's windows in one self-contained page.

Distance over time per feature against its threshold (skew: window vs
training; drift: window vs the one before), the worst windows, and the
distributions of training vs the worst window side by side.
"""

from __future__ import annotations

import html
import math

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import pandas as pd  # pylint: disable=wrong-import-position
from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=wrong-import-position

from tfx_e2e.reports.report import _STYLE, _figure, _note, _table  # pylint: disable=wrong-import-position,protected-access

MAX_DISTRIBUTIONS = 6


def _frame(result) -> pd.DataFrame:
  from tfx_e2e.monitoring.monitor import windows_rows  # pylint: disable=import-outside-toplevel
  frame = pd.DataFrame(windows_rows(result.windows))
  if len(frame):
    for column in ('skew', 'skew_threshold', 'drift', 'drift_threshold'):
      frame[column] = pd.to_numeric(frame[column])  # None -> NaN: blank
    frame['ratio'] = [s / t if t else math.nan for s, t in
                      zip(frame['skew'].astype(float),
                          frame['skew_threshold'].astype(float))]
  return frame


def _distance_plot(frame: pd.DataFrame):
  features = sorted(frame['feature'].unique())
  columns = 3
  rows = max(1, math.ceil(len(features) / columns))
  figure, axes = plt.subplots(rows, columns, figsize=(12, 2.6 * rows),
                              squeeze=False)
  every = pd.to_datetime(frame['window_start'])
  # One window's point alone would get an axis of years.
  pad = pd.Timedelta(hours=1) if every.min() == every.max() else (
      (every.max() - every.min()) * 0.05)
  for axis, feature in zip(axes.ravel(), features):
    part = frame[frame['feature'] == feature]
    times = pd.to_datetime(part['window_start'])
    axis.set_xlim(every.min() - pad, every.max() + pad)
    axis.plot(times, part['skew'].astype(float), 'o-', label='skew')
    if part['drift'].notna().any():
      axis.plot(times, part['drift'].astype(float), 's--', label='drift')
    threshold = part['skew_threshold'].astype(float).max()
    if not math.isnan(threshold):
      axis.axhline(threshold, color='#c0362c', lw=1, label='threshold')
    axis.set_title(f'{feature} ({part["measure"].iloc[0] or "-"})',
                   fontsize=9)
    axis.tick_params(labelsize=7)
    axis.tick_params(axis='x', rotation=30)
  for axis in axes.ravel()[len(features):]:
    axis.axis('off')
  axes.ravel()[0].legend(fontsize=7)
  figure.tight_layout()
  return figure


def _feature(dataset, name):
  for feature in dataset.features:
    if '.'.join(feature.path.step) == name:
      return feature
  return None


def _distribution_plot(axis, name, training, window, label):
  train = _feature(training.datasets[0], name)
  served = _feature(window.datasets[0], name)
  axis.set_title(name, fontsize=9)
  axis.tick_params(labelsize=7)
  if train is None or served is None:
    axis.text(0.5, 0.5, 'not in both', ha='center')
    return
  if train.HasField('string_stats') or served.HasField('string_stats'):
    def frequencies(feature):
      buckets = feature.string_stats.rank_histogram.buckets
      total = sum(b.sample_count for b in buckets) or 1
      return {b.label: b.sample_count / total for b in buckets}
    left, right = frequencies(train), frequencies(served)
    labels = sorted(set(left) | set(right),
                    key=lambda v: -(left.get(v, 0) + right.get(v, 0)))[:10]
    positions = range(len(labels))
    axis.bar([p - 0.2 for p in positions], [left.get(v, 0) for v in labels],
             0.4, label='training')
    axis.bar([p + 0.2 for p in positions], [right.get(v, 0) for v in labels],
             0.4, label=label)
    axis.set_xticks(list(positions))
    axis.set_xticklabels([v[:14] for v in labels], rotation=60, fontsize=6)
  else:
    for feature, text in ((train, 'training'), (served, label)):
      quantiles = [h for h in feature.num_stats.histograms
                   if h.type == statistics_pb2.Histogram.QUANTILES]
      if not quantiles:
        continue
      buckets = quantiles[0].buckets
      total = sum(b.sample_count for b in buckets) or 1
      xs, ys, seen = [], [], 0.0
      for bucket in buckets:
        seen += bucket.sample_count
        xs.append(bucket.high_value)
        ys.append(seen / total)
      axis.step(xs, ys, where='post', label=text)
    # Quantities with a long tail (taxi trips of 1,000+ miles).
    axis.set_xscale('symlog')
    axis.set_ylabel('share <= x', fontsize=7)
  axis.legend(fontsize=6)


def render(result, baseline_of, config) -> str:
  """The page for a MonitorResult (baseline_of: version -> Baseline)."""
  frame = _frame(result)
  title = f'Monitoring {config.model_name}'
  flagged = result.flagged
  parts = [f'<h1>{html.escape(title)}</h1>',
           f'<p>{result.files:,} log files, {result.records:,} records, '
           f'{result.rows:,} rows, {len(result.windows)} windows of '
           f'{config.monitoring.window_seconds} s. Thresholds: categorical '
           f'L-infinity {config.monitoring.categorical_threshold:g}, numeric '
           f'Jensen-Shannon {config.monitoring.numeric_threshold:g}'
           + ''.join(f', {html.escape(k)} {v:g}' for k, v in sorted(
               config.monitoring.thresholds.items())) + '.</p>']
  if flagged:
    parts.append('<p class="bad">Out of bounds: ' + '; '.join(
        f'{html.escape(w.name)}: {html.escape(", ".join(w.flagged))}'
        for w in flagged) + '</p>')
  else:
    parts.append('<p class="ok">Every window is within its thresholds.</p>')
  if result.bad_files:
    parts += ['<h2>Bad log files (skipped)</h2>', _table(pd.DataFrame(
        result.bad_files, columns=['file', 'reason']), index=False)]
  parts.append('<h2>Distance over time</h2>')
  if len(frame):
    parts.append(_figure(_distance_plot(frame), 'distances per window'))
    worst = frame.sort_values('ratio', ascending=False).head(10)
    parts += ['<h2>Worst windows</h2>', '<div class="wide">' + _table(worst[[
        'window_start', 'rows', 'model_version', 'feature', 'measure',
        'skew', 'skew_threshold', 'drift', 'drift_threshold', 'anomaly']],
                                               index=False) + '</div>']
    worst_window = max(result.windows, key=lambda w: (
        len(w.flagged), frame[frame['window_start'] == w.name]['ratio']
        .max() if len(frame) else 0))
    shown = [f for f in worst_window.flagged
             if f in set(frame['feature'])] or list(
                 frame[frame['window_start'] == worst_window.name]
                 .sort_values('ratio', ascending=False)['feature'])
    shown = shown[:MAX_DISTRIBUTIONS]
    baseline = baseline_of(worst_window.model_version)
    figure, axes = plt.subplots(1, max(1, len(shown)),
                                figsize=(4 * max(1, len(shown)), 3.2),
                                squeeze=False)
    for axis, name in zip(axes.ravel(), shown):
      _distribution_plot(axis, name, baseline.statistics,
                         worst_window.statistics, worst_window.name)
    figure.tight_layout()
    parts += [f'<h2>Training vs the worst window ({html.escape(worst_window.name)})'
              '</h2>', _figure(figure, 'distributions of: '
                               + ', '.join(shown))]
  else:
    parts.append(_note('No feature was compared.'))
  return (f'<!DOCTYPE html><html><head><meta charset="utf-8">'
          f'<title>{html.escape(title)}</title><style>{_STYLE}</style>'
          f'</head><body>{"".join(parts)}</body></html>')
