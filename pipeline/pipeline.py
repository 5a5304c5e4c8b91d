"""The TFX pipeline: components and their wiring, nothing else.

Every runner (local, Beam, Kubeflow) builds its pipeline here from the one
`PipelineConfig`. With `beam.fast_paths` on, CsvExampleGen, StatisticsGen,
Transform and the Evaluator run this project's faster executors
(components/executors/); off, TFX's stock ones.
"""

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from google.protobuf import wrappers_pb2
import tensorflow_model_analysis as tfma
# Each class from its module, not `from tfx import v1`: that also imports
# every TFX extension (Google Cloud clients, KFP), ~2.4 s a run.
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.pusher.component import Pusher
from tfx.components.schema_gen.component import SchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.components.trainer.component import Trainer
from tfx.components.transform.component import Transform
from tfx.dsl.compiler import compiler
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.base.base_beam_component import BaseBeamComponent
from tfx.dsl.experimental.conditionals.conditional import Cond
from tfx.orchestration.metadata import sqlite_metadata_connection_config
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2
from tfx.proto import pusher_pb2
from tfx.proto import trainer_pb2

from tfx_e2e.components import curated_schema
from tfx_e2e.components import data_gate
from tfx_e2e.components import executors
from tfx_e2e.components import features
from tfx_e2e.components import metrics
from tfx_e2e.components import preprocessing
from tfx_e2e.components import screened_example_gen
from tfx_e2e.components import served_baseline
from tfx_e2e.components.executors import atomic_pusher
from tfx_e2e.pipeline import input_check
from tfx_e2e.pipeline.config import PipelineConfig

PREPROCESSING_FN = 'tfx_e2e.components.preprocessing.preprocessing_fn'
RUN_FN = 'tfx_e2e.components.model.run_fn'
# Component ids, as they appear in MLMD, logs and the summary.
EXAMPLE_GEN = 'CsvExampleGen'
STATISTICS_GEN = 'StatisticsGen'
SCHEMA_GEN = 'SchemaGen'
EXAMPLE_VALIDATOR = 'ExampleValidator'
TRANSFORM = 'Transform'
TRAINER = 'Trainer'
BASELINE = 'ServedBaseline'
EVALUATOR = 'Evaluator'
PUSHER = 'Pusher'
# Components whose result depends on more than their inputs: what the push
# destination serves now. Never taken from the cache, on any orchestrator
# (`compile_ir`; kubeflow.py turns their task's cache off).
UNCACHED = (BASELINE,)
# Each component's pod size on Kubeflow (a field of config.PodSizes).
POD_SIZES = {EXAMPLE_GEN: 'csv_example_gen',
             STATISTICS_GEN: 'statistics_gen', SCHEMA_GEN: 'schema_gen',
             EXAMPLE_VALIDATOR: 'example_validator', TRANSFORM: 'transform',
             TRAINER: 'trainer', BASELINE: 'served_baseline',
             EVALUATOR: 'evaluator', PUSHER: 'pusher'}

# Where a component's properties hold the digest of its code: a key of
# Transform's and Trainer's custom_config, an argument of every metric.
CODE_DIGEST = 'code_sha256'


def _code_digest(*modules: str) -> str:
  """SHA-256 of the sources of `modules` (import paths).

  TFX's cache key covers a component's properties, not the code they name:
  Transform's and Trainer's functions by import path, the Evaluator's metric
  classes, ExampleGen's executor. With this digest among the properties, an
  edit to that code reruns the component instead of reusing a stale result.
  """
  digest = hashlib.sha256()
  for module in modules:
    digest.update(Path(importlib.util.find_spec(module).origin).read_bytes())
  return digest.hexdigest()


def _module(function: str) -> str:
  return function.rpartition('.')[0]


class Implementation(NamedTuple):
  """The component classes of the Beam-based steps, stock or fast."""
  example_gen: Callable[..., Any]  # takes FileBasedExampleGen's arguments
  statistics_gen: type
  transform: type
  evaluator: type
  # The Evaluator's `module_path` (its custom_extractors), or None.
  extractors: Optional[str]
  # The modules whose code each step runs, beyond TFX's: in its cache key.
  example_gen_code: Tuple[str, ...]
  examples_code: Tuple[str, ...]  # what StatisticsGen, Transform and the
  # Evaluator read examples with


def _stock_csv_example_gen(**kwargs) -> FileBasedExampleGen:
  """TFX's CsvExampleGen executor (screened: components/
  screened_example_gen.py) in FileBasedExampleGen: the same component as
  TFX's CsvExampleGen, in the form that also takes a custom_config (the
  screening's settings)."""
  return FileBasedExampleGen(
      custom_executor_spec=executor_spec.BeamExecutorSpec(
          screened_example_gen.Executor), **kwargs).with_id(EXAMPLE_GEN)


# What both implementations run beyond TFX's own code.
_SCREENING_CODE = (screened_example_gen.__name__, input_check.__name__,
                   input_check.csv_rules.__name__)
STOCK = Implementation(_stock_csv_example_gen, StatisticsGen, Transform,
                       served_baseline.Evaluator,
                       extractors=None, example_gen_code=_SCREENING_CODE,
                       examples_code=())


def implementation(config: PipelineConfig) -> Implementation:
  """The fast executors if `beam.fast_paths` is on and they fit the
  installed libraries (see components/executors/), else TFX's stock ones."""
  if not (config.beam.fast_paths and executors.usable()):
    return STOCK
  # pylint: disable=import-outside-toplevel
  from tfx_e2e.components.executors import csv_example_gen
  from tfx_e2e.components.executors import examples_io
  from tfx_e2e.components.executors import extractors
  return Implementation(
      csv_example_gen.CsvExampleGen, examples_io.StatisticsGen,
      examples_io.Transform, examples_io.Evaluator,
      extractors=extractors.__name__,
      example_gen_code=(csv_example_gen.__name__, examples_io.__name__,
                        *_SCREENING_CODE),
      examples_code=(examples_io.__name__,))


class Placement(NamedTuple):
  """Where a pipeline reads, writes and runs: on this machine or a cluster."""
  data_path: str
  pipeline_root: str
  serving_model_dir: str
  beam_args: List[str]
  metadata: Optional[Any]  # MLMD connection; Kubeflow brings its own


def placement(config: PipelineConfig, target: str = 'local') -> Placement:
  """Where the pipeline of `config` reads, writes and runs: on this machine
  ('local') or on a cluster ('kubeflow', from the `kubeflow` section)."""
  if target == 'kubeflow':
    kubeflow = config.kubeflow
    # Beam options go to the Beam-based components only, each sized by its
    # pod (`pod_beam_args`).
    return Placement(
        data_path=kubeflow.data_path, pipeline_root=kubeflow.pipeline_root,
        serving_model_dir=f'{kubeflow.serving_base.rstrip("/")}/'
        f'{config.model_name}',
        beam_args=[], metadata=None)
  return Placement(
      data_path=config.data.path, pipeline_root=config.pipeline_root,
      serving_model_dir=config.serving_model_dir,
      beam_args=config.beam_args(),
      metadata=sqlite_metadata_connection_config(config.metadata_path))


def pod_beam_args(config: PipelineConfig, component_id: str) -> List[str]:
  """The Beam options of a component on Kubeflow: the profile's, with the
  multi-process DirectRunner's workers as many as its pod's cores (its
  default, 0, means the node's cores, which the pod's limit does not have)."""
  size = getattr(config.kubeflow.pods, POD_SIZES[component_id])
  workers = max(1, int(size.cpu))
  return [f'--direct_num_workers={workers}'
          if arg.startswith('--direct_num_workers=') else arg
          for arg in config.beam_args(config.kubeflow.beam_profile)]


def csv_input(data_path: str, on_this_machine: bool = True):
  """CsvExampleGen's input_base and split pattern for a file or directory.

  A remote path (gs://), or one on a cluster (`on_this_machine` False), is
  a directory unless it ends in .csv.
  """
  elsewhere = '://' in data_path or not on_this_machine
  is_dir = (not data_path.endswith('.csv')) if elsewhere else Path(
      data_path).is_dir()
  if is_dir:
    return data_path.rstrip('/'), '*.csv'
  parent, _, name = data_path.rpartition('/')
  return parent or '.', name


class Gate(NamedTuple):
  """A blessing gate: a threshold on one metric, overall, from one setting."""
  setting: str  # the field of EvaluationConfig that holds the threshold
  metric: type  # its metric class, in components/metrics.py
  # The threshold's field: GenericValueThreshold's upper_bound or
  # lower_bound, or GenericChangeThreshold's absolute or relative (RMSE's
  # change to the served model's, lower is better; relative is that
  # change over the baseline's RMSE).
  bound: str


BLESSING_GATES = (
    Gate('rmse_upper_bound', metrics.RegressionRootMeanSquaredError,
         'upper_bound'),
    Gate('min_r_squared', metrics.RegressionRSquared, 'lower_bound'),
    Gate('max_rmse_increase', metrics.RegressionRootMeanSquaredError,
         'absolute'),
    Gate('max_relative_rmse_increase',
         metrics.RegressionRootMeanSquaredError, 'relative'),
)
CHANGE_BOUNDS = ('absolute', 'relative')


def gate_threshold(gate: Gate, value: float) -> tfma.MetricThreshold:
  """The TFMA threshold of `gate` at `value`.

  Args:
    gate: One of BLESSING_GATES.
    value: Its setting's value.

  Returns:
    A MetricThreshold with one value or change threshold.
  """
  bound = {gate.bound: {'value': value}}
  if gate.bound in CHANGE_BOUNDS:
    return tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.LOWER_IS_BETTER, **bound))
  return tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(**bound))


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
  """TFMA metrics, slices and the blessing gates (BLESSING_GATES) that
  config.evaluation turns on, each its own threshold so that the validation
  result names the one that failed."""
  # By class name: TFX's module loading may have imported
  # tfx_e2e.components.metrics again since, with new classes.
  gates = {}
  for gate in BLESSING_GATES:
    value = getattr(config.evaluation, gate.setting)
    if value is not None:
      gates.setdefault(gate.metric.__name__, []).append(
          tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()],
                                       threshold=gate_threshold(gate, value)))
  extractors = implementation(config).extractors
  metric_arguments = json.dumps({CODE_DIGEST: _code_digest(
      metrics.__name__, *([extractors] if extractors else []))})
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(
          # The signature that takes serialized tf.Examples (raw features).
          # The model type is given: else TFMA tries loading each model as
          # Keras to find out.
          signature_name='serving_default', model_type=tfma.TF_GENERIC,
          label_key=config.data.label)],
      slicing_specs=[tfma.SlicingSpec()] + [
          tfma.SlicingSpec(feature_keys=[name])
          for name in config.data.slice_features],
      # TFMA's metric names, from one set of sums (components/metrics.py)
      # rather than a TFMA combiner each. The gates apply to the overall
      # slice, not to each small slice.
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(
              class_name=metric.__name__, module=metrics.__name__,
              config=metric_arguments,
              per_slice_thresholds=gates.get(metric.__name__))
          for metric in metrics.ALL])],
      # Only the metrics above, not the model's compiled Keras metrics.
      options=tfma.Options(include_default_metrics={'value': False}))


def _model_components(config: PipelineConfig, where: Placement,
                      steps: Implementation, example_gen, schema_gen) -> List:
  """Transform, Trainer, ServedBaseline, Evaluator and Pusher."""
  custom_config = features.make_custom_config(
      label=config.data.label,
      exclude_features=config.data.exclude_features,
      categorical_features=config.data.categorical_features,
      oov_buckets=config.training.oov_buckets)
  transform = steps.transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=PREPROCESSING_FN,
      custom_config=dict(custom_config, **{
          CODE_DIGEST: _code_digest(_module(PREPROCESSING_FN),
                                    features.__name__,
                                    *steps.examples_code)}),
      # StatisticsGen and ExampleValidator have covered the raw data; the
      # pre- and post-transform statistics would be two more TFDV passes
      # that nothing reads.
      disable_statistics=True,
      force_tf_compat_v1=preprocessing.FORCE_TF_COMPAT_V1,
      # The Trainer transforms the raw examples as it reads them (see
      # components/model.py): no transformed copy of the data is written.
      materialize=False)
  trainer = Trainer(
      run_fn=RUN_FN,
      examples=example_gen.outputs['examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      train_args=trainer_pb2.TrainArgs(num_steps=config.training.train_steps),
      eval_args=trainer_pb2.EvalArgs(num_steps=config.training.eval_steps),
      custom_config=dict(custom_config,
                         solver=config.training.solver,
                         l2=config.training.l2,
                         batch_size=config.training.batch_size,
                         learning_rate=config.training.learning_rate,
                         **{CODE_DIGEST: _code_digest(_module(RUN_FN),
                                                      features.__name__)}))
  # The baseline is the model the push destination serves now (see
  # components/served_baseline.py), here and on every orchestrator.
  baseline = served_baseline.ServedBaseline(
      model=trainer.outputs['model'],
      serving_model_dir=where.serving_model_dir).with_id(BASELINE)
  evaluator = steps.evaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=baseline.outputs[served_baseline.BASELINE],
      eval_config=eval_config(config),
      module_path=steps.extractors)  # its custom_extractors
  pusher = Pusher(
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      push_destination=pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(
              base_directory=where.serving_model_dir)),
      custom_executor_spec=executor_spec.ExecutorClassSpec(
          atomic_pusher.Executor))
  return [transform, trainer, baseline, evaluator, pusher]


def create_pipeline(config: PipelineConfig, target: str = 'local',
                    input_digest: str = '') -> Pipeline:
  """The pipeline of `config`, placed on this machine or on Kubeflow.

  Args:
    config: the configuration, its columns named as the model names them.
    target: 'local' or 'kubeflow' (where it reads, writes and runs).
    input_digest: a digest of the input's content (the data gate's), in
      CsvExampleGen's cache key: TFX fingerprints input files by size and
      modification time in seconds, which an edit can leave as they were.

  Returns:
    The TFX pipeline.
  """
  where = placement(config, target)
  steps = implementation(config)
  input_base, pattern = csv_input(where.data_path,
                                  on_this_machine=target == 'local')
  # In the only free-form property: what its executor screens the input by
  # (input_check.screen), the digest of its code, and of an input that the
  # data gate has checked already.
  example_gen_settings = example_gen_pb2.CustomConfig()
  example_gen_settings.custom_config.Pack(wrappers_pb2.StringValue(
      value=input_check.example_gen_settings(
          config, _code_digest(*steps.example_gen_code), input_digest)))
  example_gen = steps.example_gen(
      input_base=input_base,
      custom_config=example_gen_settings,
      input_config=example_gen_pb2.Input(splits=[
          example_gen_pb2.Input.Split(name='data', pattern=pattern)]),
      output_config=example_gen_pb2.Output(
          split_config=example_gen_pb2.SplitConfig(splits=[
              example_gen_pb2.SplitConfig.Split(
                  name='train', hash_buckets=config.split.train_buckets),
              example_gen_pb2.SplitConfig.Split(
                  name='eval', hash_buckets=config.split.eval_buckets),
          ])))
  statistics_gen = steps.statistics_gen(
      examples=example_gen.outputs['examples'])
  if config.data.schema:
    # Its text, not its path: the pipeline brings it to any orchestrator.
    schema_gen = curated_schema.CuratedSchema(
        curated_schema.read_schema_text(config.data.schema)).with_id(
            SCHEMA_GEN)
  else:
    # Shapes are not inferred: every column may be missing at serving time,
    # so all are parsed as variable-length and imputed by the transform.
    schema_gen = SchemaGen(
        statistics=statistics_gen.outputs['statistics'],
        infer_feature_shape=False)
  example_validator = data_gate.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema'])

  components = [example_gen, statistics_gen, schema_gen, example_validator]
  if config.allow_anomalies:
    components += _model_components(config, where, steps, example_gen,
                                      schema_gen)
  else:
    # The data gate: nothing downstream runs unless every split validates,
    # a condition on one integer (components/data_gate.py). Components join
    # a Cond by being created inside it.
    with Cond(example_validator.outputs['anomalies'].future()[0]
              .custom_property(data_gate.DATA_OK) == 1):
      components += _model_components(config, where, steps, example_gen,
                                      schema_gen)
  if target == 'kubeflow':
    for component in components:
      if isinstance(component, BaseBeamComponent):
        component.with_beam_pipeline_args(pod_beam_args(config, component.id))

  return Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=where.pipeline_root,
      metadata_connection_config=where.metadata,
      components=components,
      enable_cache=config.enable_cache,
      beam_pipeline_args=where.beam_args)


def compile_ir(tfx_pipeline: Pipeline):
  """The pipeline's IR for TFX's local and Beam runners (`run_with_ir`),
  with the cache off for the UNCACHED components: TFX's compiler sets one
  cache setting for every node."""
  ir = compiler.Compiler().compile(tfx_pipeline)
  for node in ir.nodes:
    if node.pipeline_node.node_info.id in UNCACHED:
      node.pipeline_node.execution_options.caching_options.enable_cache = False
  return ir
