"""The short human summary printed at the end of `tfx-e2e run`."""

from __future__ import annotations

from typing import Dict, List, Optional

from tfx_e2e.pipeline import input_check
from tfx_e2e.reports import results as results_lib
from tfx_e2e.pipeline.runner import RunOutcome

# Per sliced feature, the summary shows the largest slices; all are in MLMD.
MAX_SLICES_PER_FEATURE = 12

_COLUMNS = tuple(results_lib.METRIC_NAMES.items())


def _width(title: str) -> int:
  return max(11, len(title))


def _number(value: Optional[float]) -> str:
  if value is None:
    return '-'
  if float(value).is_integer() and abs(value) >= 1:
    return f'{int(value):,}'
  return f'{value:.4g}'


def _components_table(outcome: RunOutcome) -> List[str]:
  lines = [f'  {"component":<32} {"status":<10} {"time":>8}']
  for component in outcome.results.components:
    seconds = ('' if component.seconds is None
               else f'{component.seconds:.1f}s')
    lines.append(f'  {component.node_id:<32} {component.state:<10} '
                 f'{seconds:>8}')
  return lines


def _shown_slices(metrics: Dict[str, Dict[str, float]]) -> List[str]:
  """Overall, then per feature the largest slices (by example count)."""
  by_feature: Dict[str, List[str]] = {}
  for name in metrics:
    if name != results_lib.OVERALL:
      by_feature.setdefault(name.split('=', 1)[0], []).append(name)
  shown = [results_lib.OVERALL] if results_lib.OVERALL in metrics else []
  for feature in sorted(by_feature):
    names = sorted(by_feature[feature],
                   key=lambda n: -metrics[n].get('example_count', 0))
    kept = names[:MAX_SLICES_PER_FEATURE]
    shown += sorted(kept, key=results_lib.slice_sort_key)
    if len(names) > len(kept):
      shown.append(f'... {len(names) - len(kept)} smaller {feature} slices')
  return shown


def _metrics_table(metrics: Dict[str, Dict[str, float]]) -> List[str]:
  width = max([len(s) for s in metrics] + [len('slice')])
  width = min(width, 40)
  lines = ['  ' + f'{"slice":<{width}}' + ''.join(
      f' {title:>{_width(title)}}' for _, title in _COLUMNS)]
  for name in _shown_slices(metrics):
    values = metrics.get(name)
    if values is None:
      lines.append(f'  {name}')
      continue
    lines.append('  ' + f'{name[:width]:<{width}}' + ''.join(
        f' {_number(values.get(key)):>{_width(title)}}'
        for key, title in _COLUMNS))
  return lines


def format_summary(outcome: RunOutcome, log_path: Optional[str] = None) -> str:
  results = outcome.results
  report = outcome.input_report
  lines = [f'Pipeline {results.pipeline_name}, run {results.run_id}', '']
  lines.append(f'Input: {", ".join(report.files)}: {report.rows:,} rows, '
               f'{report.dropped_rows:,} dropped for a missing or non-finite '
               'label' + (f' (e.g. {", ".join(report.dropped_examples)})'
                          if report.dropped_rows else ''))
  lines += input_check.input_notes(report)
  lines.append(f'Beam profile: {outcome.beam_profile}')
  lines += ['', 'Components:'] + _components_table(outcome)
  if outcome.abandoned_executions:
    lines.append(f'  (an earlier run was interrupted: its '
                 f'{outcome.abandoned_executions} unfinished execution(s) '
                 'are marked canceled in MLMD)')

  if results.has_anomalies:
    lines += ['', 'Data anomalies (ExampleValidator):']
    for split, found in results.anomalies.items():
      lines += [f'  {split}: {item}' for item in found]

  if results.metrics:
    lines += ['', 'Evaluation (eval split, candidate model):']
    lines += _metrics_table(results.metrics)
    baseline_rmse = results.baseline_metrics.get(
        results_lib.OVERALL, {}).get(results_lib.RMSE)
    if baseline_rmse is not None:
      lines.append(f'  baseline (the served model) overall RMSE: '
                   f'{_number(baseline_rmse)}')

  lines.append('')
  if results.blessed is None:
    lines.append('Blessing: not evaluated')
  else:
    lines.append(f'Blessing: {"BLESSED" if results.blessed else "NOT BLESSED"}')
    for check in results.thresholds:
      value = '' if check.value is None else f' (value {_number(check.value)})'
      setting = f' [{check.setting}]' if check.setting else ''
      lines.append(f'  {check.description}: {check.verdict}{value}{setting}')

  if results.pushed:
    lines.append(f'Pushed: version {results.pushed_version} to '
                 f'{results.pushed_path}')
  else:
    lines.append(f'Pushed: nothing ({_why_not_pushed(results)})')
    if results.blessed is False:
      lines += [f'  failed: {check.description}, value '
                f'{_number(check.value)}; {check.remedy}'
                for check in results.thresholds if check.passed is False]
  if log_path:
    lines.append(f'Log: {log_path}')
  return '\n'.join(lines)


def _why_not_pushed(results: results_lib.RunResults) -> str:
  if results.has_anomalies and results.blessed is None:
    return ('the data gate stopped the run: ExampleValidator found anomalies;'
            ' fix the data or schema, or pass --allow-anomalies')
  if results.blessed is False:
    return 'the model was not blessed'
  return 'the Pusher did not run'
