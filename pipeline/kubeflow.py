"""The same pipeline on Kubeflow Pipelines v2: compile and submit.

`compile_pipeline` places the one pipeline definition on the cluster (paths,
image and Beam profile from the configuration's `kubeflow` section) and
writes it with TFX's KubeflowV2DagRunner: a KFP v2 PipelineSpec (YAML) for
Kubeflow Pipelines, or a Vertex AI PipelineJob (JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
import posixpath
import re
from typing import Any, Dict, Optional

import yaml

from tfx_e2e.pipeline.config import ConfigError, PipelineConfig

TARGET_SUFFIXES = {'kubeflow': ('.yaml', '.yml'), 'vertex': ('.json',)}
# The pipeline roots each backend takes. Open-source KFP's launcher moves
# minio:// and s3:// artifacts to and from local paths in the pod (see
# pipeline/kubeflow_container.py); its object-store layer parses no other
# root, a local directory included. Vertex AI writes to GCS only.
PIPELINE_ROOTS = {'kubeflow': ('gs://', 'minio://', 's3://'),
                  'vertex': ('gs://',)}
# The container command of every component: TFX's entrypoint, wrapped.
COMMAND = ['python', '-m', 'tfx_e2e.pipeline.kubeflow_container']
HEADER = '# PIPELINE DEFINITION\n'


def check_storage(config: PipelineConfig, target: str) -> None:
  """Refuses paths the target's pods could not use, naming what works.

  Raises:
    ConfigError: a pipeline root the backend does not take, or a data or
      serving path that is neither gs:// nor on the mounted claim.
  """
  kubeflow = config.kubeflow
  roots = PIPELINE_ROOTS[target]
  if not (kubeflow.pipeline_root.startswith(roots) and
          _BUCKET.fullmatch(kubeflow.pipeline_root)):
    raise ConfigError(
        f'kubeflow.pipeline_root {kubeflow.pipeline_root!r}: {target} takes '
        f'a root under {", ".join(roots)}' + (
            " (KFP's object store parses no local directory; the data and "
            'the served models may be on a volume)' if target == 'kubeflow'
            else ''))
  on_volume = bool(target == 'kubeflow' and kubeflow.volume_claim)
  if on_volume:
    _check_volume(kubeflow.volume_claim, kubeflow.volume_mount_path)
  mount = posixpath.normpath(kubeflow.volume_mount_path)
  for setting in ('data_path', 'serving_base'):
    path = getattr(kubeflow, setting)
    if path.startswith('gs://') and _BUCKET.fullmatch(path):
      continue
    if on_volume and _under(path, mount):
      continue
    where = (f'or a path under kubeflow.volume_mount_path ({mount}/...), '
             f'the claim {kubeflow.volume_claim!r}' if on_volume else
             '(Vertex AI mounts no volume)' if target == 'vertex' else
             'or a path on a volume (set kubeflow.volume_claim)')
    raise ConfigError(
        f'kubeflow.{setting} {path!r}: use a gs://BUCKET/... path {where}. '
        'TensorFlow and TF Serving read GCS and local files, not S3 or '
        'MinIO.')


# A store URI with a bucket: scheme://bucket[/key].
_BUCKET = re.compile(r'[a-z][a-z0-9]*://[^/]+(/.*)?')
# Kubernetes' names of objects such as claims (a DNS-1123 subdomain).
_K8S_NAME = re.compile(r'[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?')
# Where KFP's launcher keeps a pod's artifacts and outputs: a claim mounted
# on one of them, or above one, would hide them.
_LAUNCHER_PATHS = ('/minio', '/s3', '/gcs', '/tmp/kfp', '/tmp/kfp_outputs',
                   '/kfp-workspace')


def _under(path: str, folder: str) -> bool:
  """Whether `path` is inside `folder`, once `..` and `.` are resolved."""
  path = posixpath.normpath(path)
  return path.startswith('/') and path.startswith(folder.rstrip('/') + '/')


def _check_volume(claim: str, mount_path: str) -> None:
  if not _K8S_NAME.fullmatch(claim):
    raise ConfigError(
        f'kubeflow.volume_claim {claim!r} is not a Kubernetes name '
        '(lower-case letters, digits, - and .)')
  mount = posixpath.normpath(mount_path)
  if (not mount_path.startswith('/') or
      any(mount == p or _under(p, mount) or _under(mount, p)
          for p in _LAUNCHER_PATHS)):
    raise ConfigError(
        f'kubeflow.volume_mount_path {mount_path!r} must be an absolute '
        f'folder neither in nor above {", ".join(_LAUNCHER_PATHS)} '
        "(KFP's launcher keeps a pod's artifacts there)")


def _executors(spec):
  """The executors of a PipelineSpec's deployment config (a Struct)."""
  return spec.deployment_spec.fields['executors'].struct_value.fields


def _size_pods(spec, config: PipelineConfig) -> None:
  """Requests and limits of each component's pod (kubeflow.pods): KFP's
  ResourceSpec, CPU in cores and memory in GB, as both backends read it."""
  # Imported here: the pipeline definition loads TensorFlow.
  from tfx_e2e.pipeline import pipeline as pipeline_def  # pylint: disable=import-outside-toplevel
  executors = _executors(spec)
  for component_id, field in pipeline_def.POD_SIZES.items():
    executor = executors.get(f'{component_id}_executor')
    if executor is None:
      continue
    size = getattr(config.kubeflow.pods, field)
    gigabytes = round(size.memory_gib * 2**30 / 1e9, 3)
    executor.struct_value.fields['container'].struct_value.fields[
        'resources'].struct_value.update({
            'cpuRequest': size.cpu, 'cpuLimit': size.cpu,
            'memoryRequest': gigabytes, 'memoryLimit': gigabytes})


def _uncached(spec) -> None:
  """No cache for the tasks whose result depends on more than their inputs:
  those of pipeline.UNCACHED, as in the local runs, and CsvExampleGen.
  Locally the data gate puts a digest of the input in CsvExampleGen's
  cache key; on a cluster it reads a file its parameters only name, and
  open-source KFP's cache key is those parameters (it never runs TFX's
  fingerprinting driver, `lifecycle.preCacheCheck`, which only Vertex AI
  runs): a new file at the same path would be a cache hit, trained and
  pushed again as if it were the old one. Its outputs are new artifacts on
  every run, so every task after it runs too."""
  from tfx_e2e.pipeline import pipeline as pipeline_def  # pylint: disable=import-outside-toplevel
  for component_id in (*pipeline_def.UNCACHED, pipeline_def.EXAMPLE_GEN):
    task = spec.root.dag.tasks.get(component_id)
    if task is not None:
      task.caching_options.enable_cache = False


def volume_mounted(config: PipelineConfig, target: str) -> bool:
  """Whether the compiled pipeline mounts the claim: on open-source KFP,
  with a claim, when the data or the served models are under its mount."""
  kubeflow = config.kubeflow
  return bool(target == 'kubeflow' and kubeflow.volume_claim and any(
      _under(path, posixpath.normpath(kubeflow.volume_mount_path))
      for path in (kubeflow.data_path, kubeflow.serving_base)))


def _volume_mounts(spec, config: PipelineConfig):
  """The Kubernetes platform config (as kfp-kubernetes writes it) that
  mounts the claim in the pods opening the data or the served models, or
  None when none needs it."""
  # pylint: disable=import-outside-toplevel
  from google.protobuf import json_format
  from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s
  from kfp.pipeline_spec import pipeline_spec_pb2
  from tfx_e2e.pipeline import pipeline as pipeline_def
  # pylint: enable=import-outside-toplevel
  if not volume_mounted(config, 'kubeflow'):
    return None
  kubeflow = config.kubeflow
  mount = posixpath.normpath(kubeflow.volume_mount_path)
  platform = pipeline_spec_pb2.PlatformSpec()
  executors = platform.platforms['kubernetes'].deployment_spec.executors
  mounted = json_format.MessageToDict(k8s.KubernetesExecutorConfig(
      pvc_mount=[k8s.PvcMount(constant=kubeflow.volume_claim,
                              mount_path=mount)]))
  labels = set(_executors(spec))
  # CsvExampleGen reads the data; ServedBaseline and the Pusher the base.
  for component_id in (pipeline_def.EXAMPLE_GEN, pipeline_def.BASELINE,
                       pipeline_def.PUSHER):
    label = f'{component_id}_executor'
    if label in labels:
      executors[label].update(mounted)
  return platform


def compile_pipeline(config: PipelineConfig, target: str,
                     output_file: str) -> Path:
  """Compiles the pipeline of `config` for Kubeflow Pipelines or Vertex AI.

  One definition for both: a PipelineSpec of schema 2.1.0 with no resolver
  (the baseline is the served model), the data gate on one integer, sized
  pods; for open-source KFP also the pipeline root as its default and the
  volume mounts as a Kubernetes platform config (a second YAML document).

  Args:
    config: the configuration; its `kubeflow` section places the pipeline.
    target: 'kubeflow' (a KFP v2 PipelineSpec, .yaml) or 'vertex' (a Vertex
      AI PipelineJob, .json).
    output_file: where the compiled file goes; its suffix must fit `target`.

  Returns:
    The compiled file's path.

  Raises:
    ConfigError: an unknown target, a suffix that does not fit it, or
      storage the target cannot use (`check_storage`).
  """
  path = Path(output_file)
  if target not in TARGET_SUFFIXES:
    raise ConfigError(f'--target must be one of {", ".join(TARGET_SUFFIXES)}')
  if path.suffix not in TARGET_SUFFIXES[target]:
    raise ConfigError(
        f'a {target} pipeline file must end in '
        f'{" or ".join(TARGET_SUFFIXES[target])}: {output_file}')
  check_storage(config, target)
  # Imported here: TensorFlow and the KFP SDK load slowly.
  # pylint: disable=import-outside-toplevel
  from google.protobuf import json_format
  from kfp.pipeline_spec import pipeline_spec_pb2
  from tfx import v1 as tfx
  from tfx_e2e.pipeline.pipeline import create_pipeline
  # pylint: enable=import-outside-toplevel
  path.parent.mkdir(parents=True, exist_ok=True)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=config.kubeflow.image, default_commands=COMMAND,
          use_pipeline_spec_2_1=True),
      output_dir=str(path.parent), output_filename=path.name)
  runner.run(create_pipeline(config, target='kubeflow'))

  if target == 'vertex':
    job = json.loads(path.read_text())
    spec = json_format.ParseDict(job['pipelineSpec'],
                                 pipeline_spec_pb2.PipelineSpec())
    _size_pods(spec, config)
    _uncached(spec)
    job['pipelineSpec'] = json_format.MessageToDict(spec)
    path.write_text(json.dumps(job, indent=2, sort_keys=True))
    return path
  spec = json_format.ParseDict(yaml.safe_load(path.read_text()),
                               pipeline_spec_pb2.PipelineSpec())
  spec.default_pipeline_root = config.kubeflow.pipeline_root
  _size_pods(spec, config)
  _uncached(spec)
  documents = [json_format.MessageToDict(spec)]
  platform = _volume_mounts(spec, config)
  if platform is not None:
    documents.append(json_format.MessageToDict(platform))
  path.write_text(HEADER + yaml.safe_dump_all(documents, sort_keys=True))
  return path


def submit(config: PipelineConfig, pipeline_file: str, host: str,
           experiment: str, run_name: Optional[str] = None,
           parameters: Optional[Dict[str, str]] = None):
  """Starts a run of a compiled pipeline on the KFP endpoint `host`.

  The run gets the pipeline root the file was compiled with (its
  `defaultPipelineRoot`, which KFP's API server would not apply by
  itself), and the tasks keep their compiled cache settings unless
  `enable_cache` is off: the KFP client's `enable_caching` would set every
  task's, the uncached ones' included.
  """
  import kfp  # pylint: disable=import-outside-toplevel
  client = kfp.Client(host=host)
  return client.create_run_from_pipeline_package(
      pipeline_file, arguments=parameters or {}, run_name=run_name,
      experiment_name=experiment, **run_settings(config, pipeline_file))


def run_settings(config: PipelineConfig, pipeline_file: str
                 ) -> Dict[str, Any]:
  """The pipeline root and cache setting of a run of `pipeline_file`, as
  the KFP client takes them (see `submit`)."""
  return {'pipeline_root': compiled_pipeline_root(pipeline_file) or
                           config.kubeflow.pipeline_root,
          'enable_caching': None if config.enable_cache else False}


def compiled_pipeline_root(pipeline_file: str) -> Optional[str]:
  """The `defaultPipelineRoot` of a compiled PipelineSpec (YAML), if any."""
  with open(pipeline_file, encoding='utf-8') as f:
    spec = next(yaml.safe_load_all(f), None)
  return spec.get('defaultPipelineRoot') if isinstance(spec, dict) else None
