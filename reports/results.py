"""What a pipeline run did, read back from MLMD and the artifacts it lists.

One place serves the end-of-run summary, the tests, the notebooks and the
report: find the run in MLMD, then each component's execution state and
duration, the validation anomalies, the TFMA metrics per slice, the blessing
with its thresholds, and the push.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional

from google.protobuf import json_format
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.writers import eval_config_writer
from tensorflow_metadata.proto.v0 import anomalies_pb2

from tfx_e2e.components import metrics as metrics_lib
from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline.config import PipelineConfig

OVERALL = 'Overall'
RMSE = 'root_mean_squared_error'
R_SQUARED = 'r_squared'
# The metrics reported, in display order: TFMA name -> display name.
METRIC_NAMES = {
    'example_count': 'examples', RMSE: 'RMSE', 'mean_squared_error': 'MSE',
    'mean_absolute_error': 'MAE', 'mean_label': 'mean label',
    'mean_prediction': 'mean prediction', R_SQUARED: 'R²',
}

_STATES = {
    metadata_store_pb2.Execution.NEW: 'new',
    metadata_store_pb2.Execution.RUNNING: 'running',
    metadata_store_pb2.Execution.COMPLETE: 'complete',
    metadata_store_pb2.Execution.FAILED: 'failed',
    metadata_store_pb2.Execution.CACHED: 'cached',
    metadata_store_pb2.Execution.CANCELED: 'canceled',
}
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT,
                  metadata_store_pb2.Event.DECLARED_OUTPUT)


@dataclasses.dataclass
class ComponentRun:
  node_id: str
  state: str  # complete | cached | failed | running | skipped | ...
  seconds: Optional[float] = None
  started: Optional[float] = None  # seconds since the epoch
  outputs: Dict[str, List[metadata_store_pb2.Artifact]] = dataclasses.field(
      default_factory=dict)
  # Its execution properties as MLMD holds them (text; protos as JSON).
  properties: Dict[str, str] = dataclasses.field(default_factory=dict)

  def output(self, key: str) -> Optional[metadata_store_pb2.Artifact]:
    artifacts = self.outputs.get(key) or []
    return artifacts[0] if artifacts else None


@dataclasses.dataclass
class ThresholdCheck:
  """A blessing gate as the Evaluator applied it to the overall eval split
  (from the eval config stored with the evaluation), and its verdict (from
  the validation result)."""
  metric: str  # TFMA metric name, e.g. 'root_mean_squared_error'
  # upper_bound or lower_bound (on the value), absolute or relative (on the
  # change to the served model's value): pipeline.Gate.bound.
  bound: str
  threshold: float  # the bound applied
  # What was compared with it: the candidate's value; for a change, its
  # difference to the baseline's (relative: over the baseline's value).
  value: Optional[float]
  passed: Optional[bool]  # None: not checked (no baseline yet)
  setting: Optional[str] = None  # e.g. 'evaluation.rmse_upper_bound'

  @property
  def description(self) -> str:
    """E.g. 'RMSE <= 10 (absolute)'."""
    name = METRIC_NAMES.get(self.metric, self.metric)
    return {
        'upper_bound': f'{name} <= {self.threshold:g} (absolute)',
        'lower_bound': f'{name} >= {self.threshold:g} (absolute)',
        'absolute': f'{name} - baseline {name} <= {self.threshold:g} '
                    '(change)',
        'relative': f'({name} - baseline {name}) / baseline {name} <= '
                    f'{self.threshold:g} (change)',
    }.get(self.bound, f'{name} {self.bound} {self.threshold:g}')

  @property
  def verdict(self) -> str:
    return {True: 'pass', False: 'FAIL',
            None: 'not checked (no model served yet)'}[self.passed]

  @property
  def remedy(self) -> str:
    """What to change to let such a model through."""
    if not self.setting:
      return 'the threshold is not one of the evaluation settings'
    return (f'to change the gate: --set {self.setting}=VALUE (none turns it '
            'off), or the same setting in the YAML file')


@dataclasses.dataclass
class RunResults:
  pipeline_name: str
  run_id: str
  components: List[ComponentRun]
  # split -> ['feature: short description', ...]; empty lists when clean.
  anomalies: Dict[str, List[str]]
  # slice -> metric -> value, for the candidate model and (if any) baseline.
  metrics: Dict[str, Dict[str, float]]
  baseline_metrics: Dict[str, Dict[str, float]]
  blessed: Optional[bool]
  thresholds: List[ThresholdCheck]
  pushed_version: Optional[str]
  pushed_path: Optional[str]
  evaluation_uri: Optional[str]

  @property
  def pushed(self) -> bool:
    return self.pushed_version is not None

  @property
  def has_anomalies(self) -> bool:
    return any(self.anomalies.values())

  def component(self, node_id: str) -> Optional[ComponentRun]:
    return next((c for c in self.components if c.node_id == node_id), None)


def open_store(metadata_path: str, writable: bool = False
               ) -> metadata_store.MetadataStore:
  """A run's SQLite MLMD store, read-only unless asked otherwise."""
  if not Path(metadata_path).is_file():
    raise FileNotFoundError(f'no metadata store at {metadata_path}')
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = metadata_path
  if not writable:
    connection.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
  return metadata_store.MetadataStore(connection)


def _latest_run(store, pipeline_name: str) -> metadata_store_pb2.Context:
  pipeline_context = store.get_context_by_type_and_name('pipeline',
                                                        pipeline_name)
  runs = {}
  if pipeline_context:
    for execution in store.get_executions_by_context(pipeline_context.id):
      for context in store.get_contexts_by_execution(execution.id):
        if context.type == 'pipeline_run':
          runs[context.id] = context
  if not runs:
    raise LookupError(f'no run of pipeline {pipeline_name!r} in MLMD')
  return max(runs.values(), key=lambda c: (c.create_time_since_epoch, c.id))


def _component_runs(store, pipeline_name: str,
                    run: metadata_store_pb2.Context) -> Dict[str, ComponentRun]:
  executions = store.get_executions_by_context(run.id)
  events = store.get_events_by_execution_ids([e.id for e in executions])
  artifacts = {a.id: a for a in store.get_artifacts_by_id(
      list({e.artifact_id for e in events}))}
  outputs: Dict[int, Dict[str, List]] = {}
  for event in events:
    if event.type in _OUTPUT_EVENTS:
      key = event.path.steps[0].key if event.path.steps else ''
      outputs.setdefault(event.execution_id, {}).setdefault(key, []).append(
          artifacts[event.artifact_id])
  prefix = f'{pipeline_name}.'
  runs = {}
  for execution in sorted(executions, key=lambda e: e.id):
    node = next((c.name[len(prefix):]
                 for c in store.get_contexts_by_execution(execution.id)
                 if c.type == 'node' and c.name.startswith(prefix)), None)
    if node is None:
      continue
    seconds = (execution.last_update_time_since_epoch -
               execution.create_time_since_epoch) / 1000
    runs[node] = ComponentRun(
        node_id=node, state=_STATES.get(execution.last_known_state, 'unknown'),
        seconds=seconds, started=execution.create_time_since_epoch / 1000,
        outputs=outputs.get(execution.id, {}),
        properties={key: value.string_value for key, value
                    in execution.custom_properties.items()
                    if value.HasField('string_value')})
  return runs


def _anomalies(artifact) -> Dict[str, List[str]]:
  found = {}
  for split_dir in sorted(Path(artifact.uri).glob('Split-*')):
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString((split_dir / 'SchemaDiff.pb').read_bytes())
    found[split_dir.name[len('Split-'):]] = [
        f'{feature}: {info.short_description or info.description}'
        for feature, info in sorted(anomalies.anomaly_info.items())] + (
            [f'dataset: {anomalies.dataset_anomaly_info.description}']
            if anomalies.HasField('dataset_anomaly_info') else [])
  return found


def slice_sort_key(slice_name: str):
  """Orders slices of one feature by value: numbers numerically, then text."""
  value = slice_name.split('=', 1)[-1]
  try:
    return (0, float(value), '')
  except ValueError:
    return (1, 0.0, value)


def _slice_name(slice_key) -> str:
  parts = []
  for key in slice_key.single_slice_keys:
    value = getattr(key, key.WhichOneof('kind'))
    if isinstance(value, bytes):
      value = value.decode('utf-8', 'replace')
    parts.append(f'{key.column}={value}')
  return ', '.join(parts) or OVERALL


def _metrics(evaluation_uri: str):
  """(candidate, baseline, diff): slice -> metric -> value."""
  candidate, baseline, diff = {}, {}, {}
  for metrics_for_slice in tfma.load_metrics(evaluation_uri):
    name = _slice_name(metrics_for_slice.slice_key)
    for item in metrics_for_slice.metric_keys_and_values:
      if not item.value.HasField('double_value'):
        continue
      key = item.key
      target = (diff if key.is_diff else
                baseline if key.model_name == 'baseline' else candidate)
      target.setdefault(name, {})[key.name] = item.value.double_value.value
  return candidate, baseline, diff


def _overall_thresholds(eval_config: tfma.EvalConfig):
  """[(metric name, bound, its value, the Generic*Threshold holding it)] of
  the overall slice in `eval_config`."""
  names = {metric.__name__: metric().name for metric in metrics_lib.ALL}
  found = []
  for spec in eval_config.metrics_specs:
    for metric in spec.metrics:
      name = names.get(metric.class_name, metric.class_name)
      thresholds = ([metric.threshold] if metric.HasField('threshold') else
                    []) + [t.threshold for t in metric.per_slice_thresholds
                           if tfma.SlicingSpec() in t.slicing_specs]
      for threshold in thresholds:
        for kind in ('value_threshold', 'change_threshold'):
          if not threshold.HasField(kind):
            continue
          part = getattr(threshold, kind)
          for bound in ('upper_bound', 'lower_bound', 'absolute',
                        'relative'):
            if bound in part.DESCRIPTOR.fields_by_name and part.HasField(
                bound):
              found.append((name, bound, getattr(part, bound).value, part))
  return found


def _given_eval_config(evaluator: ComponentRun) -> Optional[tfma.EvalConfig]:
  """The eval config the Evaluator was given (its execution property), or
  None if MLMD does not hold it."""
  text = evaluator.properties.get('eval_config')
  if not text:
    return None
  return json_format.Parse(text, tfma.EvalConfig(),
                           ignore_unknown_fields=True)


def _threshold_checks(evaluator: ComponentRun, evaluation_uri: str,
                      metrics, baseline, diff) -> List[ThresholdCheck]:
  """The gates the Evaluator applied (the eval config it stored with its
  evaluation), with its verdicts (its validation result); then the gates it
  was given but did not apply: TFMA drops change thresholds when there is
  no baseline."""
  failed = []
  validation = tfma.load_validation_result(evaluation_uri)
  for per_slice in validation.metric_validations_per_slice:
    if per_slice.slice_key.single_slice_keys:  # ours are overall only
      continue
    for failure in per_slice.failures:
      failed.append((failure.metric_key.name, failure.metric_key.is_diff,
                     failure.metric_threshold))
  # Which setting holds a gate, for the remedy a failed one names; the
  # threshold itself always comes from what the Evaluator applied.
  settings = {(gate.metric().name, gate.bound): f'evaluation.{gate.setting}'
              for gate in pipeline_def.BLESSING_GATES}
  stored, *_ = eval_config_writer.load_eval_run(evaluation_uri)
  applied = _overall_thresholds(stored)
  checks = []
  # A failure records the threshold it failed, so two gates on one metric
  # (an absolute and a relative change, say) get a verdict each.
  for name, bound, threshold, part in applied:
    change = bound in pipeline_def.CHANGE_BOUNDS
    value = (diff if change else metrics).get(OVERALL, {}).get(name)
    if bound == 'relative' and value is not None:
      base = baseline.get(OVERALL, {}).get(name)
      value = value / base if base else float('nan')
    passed = not any(
        metric == name and is_diff == change and
        part == (failed_threshold.change_threshold if change else
                 failed_threshold.value_threshold)
        for metric, is_diff, failed_threshold in failed)
    checks.append(ThresholdCheck(name, bound, threshold, value, passed,
                                 settings.get((name, bound))))
  given = _given_eval_config(evaluator)
  if given is not None:
    done = [(name, bound, part) for name, bound, _, part in applied]
    for name, bound, threshold, part in _overall_thresholds(given):
      if (name, bound, part) not in done:
        checks.append(ThresholdCheck(name, bound, threshold, None, None,
                                     settings.get((name, bound))))
  return checks


def latest_component_runs(metadata_path: str, pipeline_name: str
                          ) -> Dict[str, ComponentRun]:
  """Each component of the latest run of any TFX pipeline in an MLMD store
  (the benchmarks read the TFX template's runs with it too)."""
  store = open_store(metadata_path)
  return _component_runs(store, pipeline_name,
                         _latest_run(store, pipeline_name))


def load_run_results(config: PipelineConfig) -> RunResults:
  """The results of the latest run of `config`'s pipeline."""
  store = open_store(config.metadata_path)
  run = _latest_run(store, config.pipeline_name)
  by_node = _component_runs(store, config.pipeline_name, run)
  node_order = [pipeline_def.EXAMPLE_GEN, pipeline_def.STATISTICS_GEN,
                pipeline_def.SCHEMA_GEN, pipeline_def.EXAMPLE_VALIDATOR,
                pipeline_def.TRANSFORM, pipeline_def.TRAINER,
                pipeline_def.BASELINE, pipeline_def.EVALUATOR,
                pipeline_def.PUSHER]
  components = [by_node.get(node, ComponentRun(node, 'skipped'))
                for node in node_order]

  validator = by_node.get(pipeline_def.EXAMPLE_VALIDATOR)
  anomalies_artifact = validator.output('anomalies') if validator else None
  anomalies = _anomalies(anomalies_artifact) if anomalies_artifact else {}

  metrics, baseline, diff, thresholds = {}, {}, {}, []
  blessed = evaluation_uri = None
  evaluator = by_node.get(pipeline_def.EVALUATOR)
  if evaluator and evaluator.output('evaluation'):
    evaluation_uri = evaluator.output('evaluation').uri
    metrics, baseline, diff = _metrics(evaluation_uri)
    thresholds = _threshold_checks(evaluator, evaluation_uri, metrics,
                                   baseline, diff)
    blessing = evaluator.output('blessing')
    blessed = bool(blessing.custom_properties['blessed'].int_value)

  pushed_version = pushed_path = None
  pusher = by_node.get(pipeline_def.PUSHER)
  pushed_model = pusher.output('pushed_model') if pusher else None
  if pushed_model and pushed_model.custom_properties['pushed'].int_value:
    properties = pushed_model.custom_properties
    pushed_version = properties['pushed_version'].string_value
    pushed_path = properties['pushed_destination'].string_value

  return RunResults(
      pipeline_name=config.pipeline_name, run_id=run.name,
      components=components, anomalies=anomalies, metrics=metrics,
      baseline_metrics=baseline, blessed=blessed, thresholds=thresholds,
      pushed_version=pushed_version, pushed_path=pushed_path,
      evaluation_uri=evaluation_uri)

