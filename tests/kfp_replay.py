"""Replays a compiled KFP PipelineSpec the way open-source KFP 2.x runs it.

No Kubeflow cluster is available here, so this harness does, in Python and
in one process, what KFP's backend does on a cluster. The source of truth is
KFP's Go backend (kubeflow/pipelines, backend/src/v2); each step names the
Go function it follows:

* Run creation (apiserver template + `compiler.Accept`/argocompiler): the
  YAML is one PipelineSpec document, optionally followed by a PlatformSpec
  document (`platforms: kubernetes: deploymentSpec: executors: ...`, what
  kfp-kubernetes writes). A component whose executor is neither a container
  nor an importer (a Resolver) is refused, with KFP's message, before any
  task runs: `RunCreationError`.
* Root DAG driver (`driver.RootDAG`): the pipeline root must parse as an
  object store KFP supports (`objectstore.ParseBucketPathToConfig`: gs, s3,
  minio, mem); a local directory is refused (`RootDagError`). The root is
  the `pipeline_root` argument, else the spec's `defaultPipelineRoot` (what
  KFP's UI fills in when a run is created; the API server itself ignores
  it), else KFP's default `minio://mlpipeline/v2/artifacts`. Pipeline
  parameters are the `parameters` argument, else the root's defaults.
* Container driver (`driver.Container`, `resolveInputs`): tasks in
  dependency order (`dependentTasks`, as Argo's `depends`). Parameters are
  read the way the current driver reads them: `runtimeValue.constant`
  (schema 2.1.0) is passed; the deprecated `runtimeValue.constantValue`
  (schema 2.0.0) fails the driver ("not implemented", removed from the
  driver in 2022), and values are checked against `parameterType` (a 2.0.0
  spec's deprecated `type` is no parameter type). Upstream artifacts come
  back from the fake MLMD as `toRuntimeArtifact` builds them: `name` is the
  MLMD id, metadata comes from custom properties (numbers and bools become
  doubles, a struct value `v` becomes `{"struct": v}`, a list
  `{"list": v}`, plus `display_name` and `store_session_info`) and the type
  is an empty `instanceSchema` (KFP's `GetOutputArtifactsByExecutionId`
  leaves the schema empty). Outputs are provisioned as `provisionOutputs`
  does: `<root>/<pipeline>/<run id>/<task>/<uuid>/<output>`, the executor
  output file at `LocalPathForURI(<task root>)/output_metadata.json`,
  output parameters at `/tmp/kfp/outputs/<name>`.
* Trigger conditions (`expression.Condition`): evaluated with cel-python on
  the same variables the driver declares: `inputs` (ExecutorInput.Inputs,
  proto field names, every field present) and `outputs` (empty). Numbers
  compare across int and double as cel-go 0.30 does. A false condition
  skips the task, and Argo then skips everything that depends on it; an
  evaluation error fails the task.
* Launcher (`LauncherV2.Execute`, `executeV2`): inputs are downloaded to
  `LocalPathForURI(uri)` (`/minio/<bucket>/<key>`, `/s3/...`), output
  folders created (`prepareOutputFolders`), the task's own `command` and
  `args` run with the placeholders substituted (`compileCmdAndArgs`: `{{$}}`
  everywhere, `{{$.inputs.parameters['x']}}`, artifact `.uri`/`.path` and
  output parameter `.output_file` in the args only, as KFP does), the
  executor output file read back (protojson), output artifacts merged
  (`mergeRuntimeArtifacts`), uploaded from their local paths (a missing
  local path is allowed) and recorded in the fake MLMD (`RecordArtifact`).
  A failed command records no outputs.
* Volumes (kfp-kubernetes `pvcMount`, applied by `makeVolumeMountPatch`):
  a task whose string parameters name a path under a mount path declared
  anywhere in the platform config must mount that path itself; otherwise
  its pod would not see the file, and the task fails before it runs.

Storage: for `minio://` and `s3://` roots the artifacts live on a real S3
server on loopback (moto's ThreadedMotoServer, started by `replay` unless an
endpoint is given), reached with boto3. Every task gets a fresh local
directory standing for its pod's file system: a path P that KFP gives the
container (`/minio/b/k`, the output file, `/tmp/kfp/outputs/x`) is
`$TFX_E2E_KFP_LOCAL_ROOT/P`, and the task's process gets that directory in
`TFX_E2E_KFP_LOCAL_ROOT` (on a cluster it is `/`). Nothing reaches a
downstream task except through the S3 server, as on a cluster.

Not KFP: `local_root_mode=True` (`--local`) accepts a local directory as the
pipeline root, for quick tests. Artifact URIs are then local paths, nothing
is downloaded or uploaded, the output file sits in the task root and
`TFX_E2E_KFP_LOCAL_ROOT` is `/`. KFP's objectstore refuses such a root.

Not emulated: KFP's cache (every task runs), Argo's parallelism (tasks run
one at a time, and after a failure nothing else starts, as Argo's failFast
does), retries, importers, iterators, nested DAGs and the executor-logs
artifact. gs:// roots are accepted by KFP but this harness has no GCS.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import celpy
from celpy import celtypes
from google.protobuf import json_format
from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
from kfp.pipeline_spec import pipeline_spec_pb2 as pb
from ml_metadata.proto import metadata_store_pb2 as mlmd_pb2
import yaml

KFP_DEFAULT_PIPELINE_ROOT = 'minio://mlpipeline/v2/artifacts'
LOCAL_ROOT_ENV = 'TFX_E2E_KFP_LOCAL_ROOT'
# component.OutputMetadataFilepath: the executor output file when the task
# root has no local path.
_FALLBACK_OUTPUT_FILE = '/tmp/kfp_outputs/output_metadata.json'

SUCCEEDED = 'SUCCEEDED'
FAILED = 'FAILED'
SKIPPED = 'SKIPPED'
NOT_RUN = 'NOT_RUN'

# objectstore/config.go bucketPattern and the schemes it accepts.
_BUCKET_PATTERN = re.compile(r'(^[a-z][a-z0-9]+:///?)([^/?]+)(/[^?]*)?(\?.+)?$')
_KFP_SCHEMES = ('gs://', 's3://', 'minio://', 'mem://')
# The schemes whose artifacts this harness stores on its S3 server.
_S3_SCHEMES = ('s3://', 'minio://')


class RunCreationError(Exception):
  """The backend refuses the spec when the run is created: nothing runs."""


class RootDagError(Exception):
  """The root DAG driver fails (e.g. an unsupported pipeline root)."""


class _TaskError(Exception):
  """A task fails in its driver or launcher (not in its own command)."""


@dataclasses.dataclass
class ArtifactResult:
  uri: str
  # What a downstream task receives after the MLMD round trip.
  metadata: Dict[str, Any]


@dataclasses.dataclass
class TaskResult:
  name: str
  state: str = NOT_RUN
  seconds: float = 0.0
  returncode: Optional[int] = None
  stderr_tail: str = ''
  stdout_tail: str = ''
  error: str = ''
  outputs: Dict[str, ArtifactResult] = dataclasses.field(default_factory=dict)
  output_parameters: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # The ExecutorInput as the container got it (JSON), when it ran.
  executor_input: Optional[Dict[str, Any]] = None


@dataclasses.dataclass
class ReplayResult:
  pipeline_name: str
  run_id: str
  pipeline_root: str
  tasks: Dict[str, TaskResult]
  # Keys on the S3 server at the end (bucket/key), for object store roots.
  s3_objects: List[str] = dataclasses.field(default_factory=list)

  @property
  def succeeded(self) -> bool:
    return all(t.state in (SUCCEEDED, SKIPPED) for t in self.tasks.values())

  def __getitem__(self, task: str) -> TaskResult:
    return self.tasks[task]

  def states(self) -> Dict[str, str]:
    return {name: t.state for name, t in self.tasks.items()}

  def table(self) -> str:
    width = max([len(n) for n in self.tasks] + [4])
    lines = [f'{"task":<{width}}  {"state":<9}  {"sec":>7}  {"rc":>4}  note']
    for name, t in self.tasks.items():
      last = (t.stderr_tail.strip().splitlines() or [''])[-1]
      note = '; '.join(n for n in (t.error, last) if n)
      rc = '' if t.returncode is None else str(t.returncode)
      lines.append(f'{name:<{width}}  {t.state:<9}  {t.seconds:>7.2f}  '
                   f'{rc:>4}  {note[:160]}')
    return '\n'.join(lines)


# ---------------------------------------------------------------- loading


def load_spec(
    spec: Union[str, os.PathLike, Mapping[str, Any], List[Mapping[str, Any]]]
) -> Tuple[pb.PipelineSpec, Optional[pb.PlatformSpec]]:
  """The PipelineSpec and the optional PlatformSpec of a compiled YAML.

  `spec` is a path, a YAML text, a dict (the PipelineSpec document) or a
  list of documents. Like the API server, a document with `platforms` is
  the platform spec, and unknown fields are refused (protojson).
  """
  if isinstance(spec, Mapping):
    docs = [spec]
  elif isinstance(spec, list):
    docs = list(spec)
  else:
    text = str(spec)
    if '\n' not in text and Path(text).exists():
      text = Path(text).read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
  pipeline_spec = platform_spec = None
  for doc in docs:
    try:
      if 'platforms' in doc:
        if platform_spec is not None:
          raise RunCreationError('multiple platform specs provided')
        platform_spec = json_format.ParseDict(doc, pb.PlatformSpec())
      else:
        if pipeline_spec is not None:
          raise RunCreationError('multiple pipeline specs provided')
        pipeline_spec = json_format.ParseDict(doc, pb.PipelineSpec())
    except json_format.ParseError as e:
      raise RunCreationError(f'invalid pipeline spec: {e}') from e
  if pipeline_spec is None:
    raise RunCreationError('no pipeline spec in the file')
  return pipeline_spec, platform_spec


def _deployment_config(spec: pb.PipelineSpec) -> pb.PipelineDeploymentConfig:
  # compiler.GetDeploymentConfig: unknown fields (e.g. '@type') discarded.
  return json_format.ParseDict(
      json_format.MessageToDict(spec.deployment_spec),
      pb.PipelineDeploymentConfig(), ignore_unknown_fields=True)


def _kubernetes_configs(
    platform_spec: Optional[pb.PlatformSpec]
) -> Dict[str, k8s_pb2.KubernetesExecutorConfig]:
  if platform_spec is None or 'kubernetes' not in platform_spec.platforms:
    return {}
  executors = platform_spec.platforms['kubernetes'].deployment_spec.executors
  return {
      label: json_format.ParseDict(json_format.MessageToDict(config),
                                   k8s_pb2.KubernetesExecutorConfig())
      for label, config in executors.items()
  }


def check_run_creation(spec: pb.PipelineSpec,
                       deploy: Optional[pb.PipelineDeploymentConfig] = None
                       ) -> List[str]:
  """What the API server checks before a run starts; the task order.

  Follows `compiler.Accept`: components are visited depth first (tasks in
  name order); a component whose executor is neither a container nor an
  importer is refused with KFP's message. Returns the root tasks in the
  order this harness runs them.
  """
  deploy = deploy or _deployment_config(spec)
  executors = deploy.executors

  def refuse(name, message):
    raise RunCreationError(
        'Failed to compile job: error processing component '
        f'name="{name}": {message}')

  visited = set()

  def dfs(name: str, component: pb.ComponentSpec) -> None:
    if name in visited:
      return
    visited.add(name)
    label = component.executor_label
    if label:
      if label not in executors:
        refuse(name, f'executor(label="{label}") not found in deployment '
               'config')
      kind = executors[label].WhichOneof('spec')
      if kind == 'importer':
        raise RunCreationError(
            f'component "{name}" is an importer: accepted by KFP, not '
            'replayed by this harness')
      if kind != 'container':
        # visitor.go; argocompiler's own DAG step says "resolver executors
        # not implemented", but the depth-first visit reaches this first.
        refuse(name, f'executor(label="{label}"): non-container and '
               'non-importer executor not implemented')
      return
    if not component.HasField('dag'):
      refuse(name, 'unknown component implementation')
    for task_name in sorted(component.dag.tasks):
      task = component.dag.tasks[task_name]
      ref = task.component_ref.name
      if ref not in spec.components:
        refuse(name, f'cannot find component ref name="{ref}"')
      if spec.components[ref].HasField('dag'):
        raise RunCreationError(
            f'task "{task_name}" runs a nested DAG: accepted by KFP, not '
            'replayed by this harness')
      if task.HasField('parameter_iterator') or task.HasField(
          'artifact_iterator'):
        raise RunCreationError(
            f'task "{task_name}" iterates: not replayed by this harness')
      dfs(ref, spec.components[ref])

  dfs('root', spec.root)
  return _topological_order(spec.root.dag.tasks)


def _topological_order(tasks: Mapping[str, pb.PipelineTaskSpec]) -> List[str]:
  for name, task in tasks.items():
    for dep in task.dependent_tasks:
      if dep not in tasks:
        raise RunCreationError(
            f'task "{name}" depends on "{dep}", which is not in the DAG')
  order, done = [], set()
  pending = sorted(tasks)
  while pending:
    ready = [n for n in pending if set(tasks[n].dependent_tasks) <= done]
    if not ready:
      raise RunCreationError(f'the DAG has a cycle among {pending}')
    order.append(ready[0])
    done.add(ready[0])
    pending.remove(ready[0])
  return order


# ------------------------------------------------------------- object store


def parse_bucket(root: str) -> Tuple[str, str, str]:
  """(scheme, bucket, prefix) of a pipeline root, or RootDagError with the
  message of KFP's `ParseBucketPathToConfig`."""
  match = _BUCKET_PATTERN.match(root)
  if not match:
    raise RootDagError('parse bucket config failed: unrecognized pipeline '
                       f'root format: "{root}"')
  scheme, bucket, prefix = match.group(1), match.group(2), match.group(3) or ''
  if scheme not in _KFP_SCHEMES:
    raise RootDagError('parse bucket config failed: unsupported Cloud '
                       f'bucket: "{root}"')
  prefix = prefix.lstrip('/')
  if prefix and not prefix.endswith('/'):
    prefix += '/'
  return scheme, bucket, prefix


def local_path_for_uri(uri: str) -> str:
  """component.LocalPathForURI."""
  for scheme, local in (('gs://', '/gcs/'), ('minio://', '/minio/'),
                        ('s3://', '/s3/')):
    if uri.startswith(scheme):
      return local + uri[len(scheme):]
  raise _TaskError(f'failed to generate local path for URI {uri}: '
                   'unsupported storage scheme')


def _split_uri(uri: str) -> Tuple[str, str]:
  scheme = next(s for s in _S3_SCHEMES if uri.startswith(s))
  bucket, _, key = uri[len(scheme):].partition('/')
  return bucket, key


class _S3:
  """The artifact store: boto3 against an S3 endpoint."""

  def __init__(self, endpoint: str):
    import boto3  # pylint: disable=import-outside-toplevel
    self.client = boto3.client(
        's3', endpoint_url=endpoint, region_name='us-east-1',
        aws_access_key_id='replay', aws_secret_access_key='replay')

  def ensure_bucket(self, bucket: str) -> None:
    existing = {b['Name'] for b in self.client.list_buckets()['Buckets']}
    if bucket not in existing:
      self.client.create_bucket(Bucket=bucket)

  def keys(self, bucket: str, prefix: str = '') -> List[str]:
    keys = []
    for page in self.client.get_paginator('list_objects_v2').paginate(
        Bucket=bucket, Prefix=prefix):
      keys.extend(o['Key'] for o in page.get('Contents', []))
    return keys

  def download(self, uri: str, local: Path) -> None:
    """objectstore.DownloadBlob: every key at or under the URI's key."""
    bucket, key = _split_uri(uri)
    key = key.rstrip('/')
    for obj in self.keys(bucket, key):
      if obj != key and not obj.startswith(key + '/'):
        continue
      rel = os.path.relpath(obj, key)
      if '..' in obj.split('/'):
        raise _TaskError(f'path traversal detected: blob key "{obj}"')
      target = local if rel == '.' else local / rel
      target.parent.mkdir(parents=True, exist_ok=True)
      self.client.download_file(bucket, obj, str(target))

  def upload(self, local: Path, uri: str) -> None:
    """objectstore.UploadBlob: a file, or a directory recursively."""
    bucket, key = _split_uri(uri)
    if local.is_dir():
      for child in sorted(local.iterdir()):
        self.upload(child, f'{uri.rstrip("/")}/{child.name}')
    else:
      self.client.upload_file(str(local), bucket, key)


def start_s3_server():
  """A moto S3 server on loopback; returns (server, endpoint URL)."""
  import logging  # pylint: disable=import-outside-toplevel
  from moto.server import ThreadedMotoServer  # pylint: disable=import-outside-toplevel
  # The server's request log would interleave with the replay's table.
  logging.getLogger('werkzeug').setLevel(logging.ERROR)
  server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
  server.start()
  host, port = server.get_host_and_port()
  return server, f'http://{host}:{port}'


# ------------------------------------------------------------------ MLMD


def _to_mlmd_value(value: struct_pb2.Value) -> mlmd_pb2.Value:
  """metadata.StructValueToMLMDValue."""
  kind = value.WhichOneof('kind')
  out = mlmd_pb2.Value()
  if kind == 'string_value':
    out.string_value = value.string_value
  elif kind == 'number_value':
    out.double_value = value.number_value
  elif kind == 'bool_value':
    out.int_value = 1 if value.bool_value else 0
  elif kind == 'list_value':
    out.struct_value.fields['list'].list_value.CopyFrom(value.list_value)
  elif kind == 'struct_value':
    out.struct_value.fields['struct'].struct_value.CopyFrom(
        value.struct_value)
  else:
    raise _TaskError(f'unknown/unsupported value type {kind}')
  return out


def _from_mlmd_value(value: mlmd_pb2.Value) -> struct_pb2.Value:
  """The property branch of metadata.toRuntimeArtifact."""
  kind = value.WhichOneof('value')
  out = struct_pb2.Value()
  if kind == 'string_value':
    out.string_value = value.string_value
  elif kind == 'double_value':
    out.number_value = value.double_value
  elif kind == 'int_value':
    out.number_value = float(value.int_value)
  elif kind == 'struct_value':
    out.struct_value.CopyFrom(value.struct_value)
  else:
    raise _TaskError(f'unknown property type in MLMD artifact: {kind}')
  return out


class FakeMLMD:
  """The artifacts a run records, as MLMD protos (RecordArtifact and
  GetOutputArtifactsByExecutionId)."""

  def __init__(self):
    self.artifacts: Dict[int, mlmd_pb2.Artifact] = {}
    self.outputs: Dict[str, Dict[str, int]] = {}
    self.output_parameters: Dict[str, Dict[str, struct_pb2.Value]] = {}

  def record_artifact(self, task: str, output: str,
                      artifact: pb.RuntimeArtifact, session_info: str) -> int:
    stored = mlmd_pb2.Artifact(id=len(self.artifacts) + 1, uri=artifact.uri,
                               state=mlmd_pb2.Artifact.LIVE)
    for key, value in artifact.metadata.fields.items():
      if key == '_kfp_workspace':
        continue
      stored.custom_properties[key].CopyFrom(_to_mlmd_value(value))
    if 'display_name' not in stored.custom_properties:
      stored.custom_properties['display_name'].string_value = output
    if 'store_session_info' not in stored.custom_properties:
      stored.custom_properties['store_session_info'].string_value = (
          session_info)
    self.artifacts[stored.id] = stored
    self.outputs.setdefault(task, {})[output] = stored.id
    return stored.id

  def runtime_artifact(self, task: str, output: str) -> pb.RuntimeArtifact:
    ids = self.outputs.get(task, {})
    if output not in ids:
      raise _TaskError(f'cannot find output artifact key "{output}" in '
                       f'producer task "{task}"')
    stored = self.artifacts[ids[output]]
    artifact = pb.RuntimeArtifact(name=str(stored.id), uri=stored.uri)
    artifact.metadata.SetInParent()
    for key, value in stored.custom_properties.items():
      artifact.metadata.fields[key].CopyFrom(_from_mlmd_value(value))
    # OutputArtifact.ToRuntimeArtifact with the empty Schema that
    # GetOutputArtifactsByExecutionId gives it.
    artifact.type.instance_schema = ''
    return artifact


# ------------------------------------------------------------------- CEL


def _is_number(v) -> bool:
  return isinstance(v, (celtypes.IntType, celtypes.UintType,
                        celtypes.DoubleType)) and not isinstance(
                            v, celtypes.BoolType)


def _heterogeneous(op, base):
  """cel-go (0.30, KFP's) compares numbers across int, uint and double, and
  `==` between other different types is false; cel-python refuses both."""

  def compare(a, b):
    for operand in (a, b):
      if isinstance(operand, celpy.CELEvalError):
        return operand  # An error stays an error (e.g. no such key).
    if _is_number(a) and _is_number(b) and type(a) is not type(b):
      return celtypes.BoolType(op(float(a), float(b)))
    if op in (_eq, _ne) and type(a) is not type(b) and not (
        _is_number(a) and _is_number(b)):
      if isinstance(a, celtypes.MapType) and isinstance(b, celtypes.MapType):
        return base(a, b)
      return celtypes.BoolType(op is _ne)
    return base(a, b)

  return compare


def _eq(a, b):
  return a == b


def _ne(a, b):
  return a != b


def _cel_functions():
  from celpy import evaluation  # pylint: disable=import-outside-toplevel
  import operator  # pylint: disable=import-outside-toplevel
  base = evaluation.base_functions
  return {
      '_==_': _heterogeneous(_eq, base['_==_']),
      '_!=_': _heterogeneous(_ne, base['_!=_']),
      '_<_': _heterogeneous(operator.lt, base['_<_']),
      '_<=_': _heterogeneous(operator.le, base['_<=_']),
      '_>_': _heterogeneous(operator.gt, base['_>_']),
      '_>=_': _heterogeneous(operator.ge, base['_>=_']),
      '_&&_': _first_error(base['_&&_']),
      '_||_': _first_error(base['_||_']),
      'parseJson': lambda s: celpy.json_to_cel(json.loads(s)),
  }


def _first_error(base):
  """cel-go answers the left error when both sides of && or || fail;
  cel-python says it has no overload for two errors."""

  def logical(a, b):
    if isinstance(a, celpy.CELEvalError) and isinstance(
        b, celpy.CELEvalError):
      return a
    return base(a, b)

  return logical


def _cel_value(value: struct_pb2.Value):
  kind = value.WhichOneof('kind')
  if kind == 'number_value':
    return celtypes.DoubleType(value.number_value)
  if kind == 'string_value':
    return celtypes.StringType(value.string_value)
  if kind == 'bool_value':
    return celtypes.BoolType(value.bool_value)
  if kind == 'struct_value':
    return _cel_struct(value.struct_value)
  if kind == 'list_value':
    return celtypes.ListType([_cel_value(v) for v in value.list_value.values])
  return None


def _cel_struct(struct: struct_pb2.Struct):
  return celtypes.MapType({celtypes.StringType(k): _cel_value(v)
                           for k, v in struct.fields.items()})


def _cel_scalar(field: FieldDescriptor, value):
  if field.type == FieldDescriptor.TYPE_MESSAGE:
    return _cel_message(value)
  if field.type == FieldDescriptor.TYPE_STRING:
    return celtypes.StringType(value)
  if field.type == FieldDescriptor.TYPE_BOOL:
    return celtypes.BoolType(value)
  if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
    return celtypes.DoubleType(value)
  if field.type == FieldDescriptor.TYPE_BYTES:
    return celtypes.BytesType(value)
  return celtypes.IntType(value)


def _cel_message(message):
  """A proto message as CEL sees it through cel-go's proto support: every
  field by its proto name (unset ones with their defaults), Struct and Value
  as JSON-like maps, numbers in a Struct as doubles."""
  if isinstance(message, struct_pb2.Struct):
    return _cel_struct(message)
  if isinstance(message, struct_pb2.Value):
    return _cel_value(message)
  fields = {}
  for field in message.DESCRIPTOR.fields:
    value = getattr(message, field.name)
    if field.message_type and field.message_type.GetOptions().map_entry:
      value_field = field.message_type.fields_by_name['value']
      fields[celtypes.StringType(field.name)] = celtypes.MapType({
          celtypes.StringType(k) if isinstance(k, str) else celtypes.IntType(
              k): _cel_scalar(value_field, v) for k, v in value.items()})
    elif field.label == FieldDescriptor.LABEL_REPEATED:
      fields[celtypes.StringType(field.name)] = celtypes.ListType(
          [_cel_scalar(field, v) for v in value])
    else:
      fields[celtypes.StringType(field.name)] = _cel_scalar(field, value)
  return celtypes.MapType(fields)


def _cel_error_text(error: celpy.CELEvalError) -> str:
  """cel-go's wording, e.g. "no such key: train"."""
  message = str(error.args[0]) if error.args else str(error)
  details = error.args[2] if len(error.args) > 2 else ()
  if isinstance(details, tuple) and details:
    message += ': ' + ', '.join(str(d) for d in details)
  return message


def evaluate_condition(inputs: pb.ExecutorInput.Inputs, condition: str) -> bool:
  """expression.Condition: the condition on `inputs` and `outputs`."""
  env = celpy.Environment()
  try:
    program = env.program(env.compile(condition), functions=_cel_functions())
    result = program.evaluate({
        'inputs': _cel_message(inputs),
        'outputs': _cel_message(pb.ExecutorInput.Outputs()),
    })
  except celpy.CELParseError as e:
    raise _TaskError(f'condition {condition!r} does not parse: {e}') from e
  except celpy.CELEvalError as e:
    raise _TaskError(f'evaluation error: {_cel_error_text(e)} '
                     f'(condition {condition!r})') from e
  if not isinstance(result, celtypes.BoolType):
    raise _TaskError(
        f'evaluation error: return type is not bool, got {result!r}')
  return bool(result)


# ----------------------------------------------------------- the driver


def _value_text(value: struct_pb2.Value) -> str:
  """metadata.PbValueToText."""
  kind = value.WhichOneof('kind')
  if kind in (None, 'null_value'):
    return ''
  if kind == 'string_value':
    return value.string_value
  if kind == 'number_value':
    number = value.number_value
    return str(int(number)) if number.is_integer() else repr(number)
  if kind == 'bool_value':
    return 'true' if value.bool_value else 'false'
  return json.dumps(json_format.MessageToDict(value), separators=(',', ':'))


_TYPE_OF_KIND = {
    'string_value': 'string', 'number_value': 'number', 'bool_value': 'bool',
    'list_value': 'list', 'struct_value': 'struct', 'null_value': 'null'}
_TYPES_OF_KIND = {
    'number_value': (pb.ParameterType.NUMBER_DOUBLE,
                     pb.ParameterType.NUMBER_INTEGER),
    'bool_value': (pb.ParameterType.BOOLEAN,),
    'list_value': (pb.ParameterType.LIST,),
    'struct_value': (pb.ParameterType.STRUCT,
                     pb.ParameterType.TASK_FINAL_STATUS),
    'string_value': (pb.ParameterType.STRING,),
}


class _Run:
  """One replayed run: the state a KFP run keeps in MLMD and Argo."""

  def __init__(self, spec, platform_spec, pipeline_root, parameters,
               workdir: Path, s3: Optional[_S3], local_root_mode: bool,
               env: Mapping[str, str], timeout: Optional[float], volumes=()):
    self.spec = spec
    self.deploy = _deployment_config(spec)
    self.k8s = _kubernetes_configs(platform_spec)
    self.pipeline_name = spec.pipeline_info.name
    self.run_id = str(uuid.uuid4())
    self.pipeline_root = pipeline_root
    # metadata.GetPipeline: the run's root keeps the query string.
    base, _, query = pipeline_root.partition('?')
    self.run_root = (f'{base.rstrip("/")}/{self.pipeline_name}/{self.run_id}'
                     + (f'?{query}' if query else ''))
    self.parameters = parameters
    self.workdir = workdir
    self.s3 = s3
    self.local_root_mode = local_root_mode
    self.env = env
    self.timeout = timeout
    self.mlmd = FakeMLMD()
    if local_root_mode:
      self.session_info = ''
    else:
      scheme = parse_bucket(pipeline_root)[0].rstrip(':/')
      self.session_info = json.dumps({
          'Provider': scheme,
          'Params': {'fromEnv': 'false'} if scheme == 'minio' else {
              'fromEnv': 'true'}})
    # The folders standing for volumes: the mount paths the platform config
    # declares, and those the caller names (a spec that dropped its
    # platform config must not reach the test's volume folder either).
    self.mount_paths = sorted({
        m.mount_path for c in self.k8s.values() for m in c.pvc_mount} | {
            str(v) for v in volumes})

  # -- parameters

  def resolve_parameter(self, task_name: str,
                        spec: pb.TaskInputsSpec.InputParameterSpec
                        ) -> struct_pb2.Value:
    kind = spec.WhichOneof('kind')
    if kind == 'component_input_parameter':
      name = spec.component_input_parameter
      if name not in self.parameters:
        raise _TaskError(
            f'parent DAG does not have input parameter {name}')
      return self.parameters[name]
    if kind == 'task_output_parameter':
      producer = spec.task_output_parameter.producer_task
      key = spec.task_output_parameter.output_parameter_key
      values = self.mlmd.output_parameters.get(producer, {})
      if key not in values:
        raise _TaskError(f'cannot find output parameter key "{key}" in '
                         f'producer task "{producer}"')
      return values[key]
    if kind == 'runtime_value':
      value_kind = spec.runtime_value.WhichOneof('value')
      if value_kind != 'constant':
        go_type = {'constant_value': 'ValueOrRuntimeParameter_ConstantValue',
                   'runtime_parameter':
                       'ValueOrRuntimeParameter_RuntimeParameter'}.get(
                           value_kind, str(value_kind))
        raise _TaskError(
            f'failed to resolve inputs: resolving input parameter with spec '
            f'{json_format.MessageToJson(spec, indent=None)[:200]}: param '
            f'runtime value spec of type *pipelinespec.{go_type} not '
            'implemented')
      value = spec.runtime_value.constant
      text = value.string_value if value.WhichOneof(
          'kind') == 'string_value' else ''
      special = {
          '{{$.pipeline_job_name}}': self.run_id,
          '{{$.pipeline_job_resource_name}}': self.run_id,
          '{{$.pipeline_job_uuid}}': self.run_id,
          '{{$.pipeline_task_name}}': task_name,
      }
      if text in special:
        return struct_pb2.Value(string_value=special[text])
      return value
    raise _TaskError(f'parameter spec of type {kind} not implemented yet')

  def resolve_inputs(self, task_name: str, task: pb.PipelineTaskSpec,
                     component: pb.ComponentSpec) -> pb.ExecutorInput.Inputs:
    inputs = pb.ExecutorInput.Inputs()
    for name, spec in task.inputs.parameters.items():
      if spec.parameter_expression_selector:
        raise _TaskError(f'parameter {name}: expression selectors are not '
                         'replayed by this harness')
      inputs.parameter_values[name].CopyFrom(
          self.resolve_parameter(task_name, spec))
    for name, spec in task.inputs.artifacts.items():
      kind = spec.WhichOneof('kind')
      if kind != 'task_output_artifact':
        raise _TaskError(f'failed to resolve input artifact {name}: parent '
                         'DAG does not have input artifact '
                         f'{spec.component_input_artifact}')
      out = spec.task_output_artifact
      inputs.artifacts[name].artifacts.append(
          self.mlmd.runtime_artifact(out.producer_task,
                                     out.output_artifact_key))
    # handleParamTypeValidationAndConversion.
    for name, param in component.input_definitions.parameters.items():
      if name not in inputs.parameter_values:
        if not param.is_optional and not param.HasField('default_value'):
          raise _TaskError('failed to resolve inputs: neither value nor '
                           'default value provided for non-optional '
                           f'parameter "{name}"')
        continue
      value = inputs.parameter_values[name]
      kind = value.WhichOneof('kind')
      if param.parameter_type == pb.ParameterType.STRING:
        if kind != 'string_value':
          inputs.parameter_values[name].CopyFrom(
              struct_pb2.Value(string_value=_value_text(value)))
        continue
      if kind == 'null_value':
        raise _TaskError(f'failed to resolve inputs: got null for input '
                         f'parameter "{name}"')
      if param.parameter_type not in _TYPES_OF_KIND.get(kind, ()):
        expected = pb.ParameterType.ParameterTypeEnum.Name(
            param.parameter_type)
        raise _TaskError(
            f'failed to resolve inputs: input parameter "{name}" type '
            f'mismatch: expect {expected}, got {_TYPE_OF_KIND.get(kind)}')
    return inputs

  # -- outputs

  def provision_outputs(self, task_name: str,
                        component: pb.ComponentSpec) -> pb.ExecutorInput.Outputs:
    """driver.provisionOutputs (without the executor-logs artifact)."""
    outputs = pb.ExecutorInput.Outputs()
    base, _, _ = self.run_root.partition('?')
    task_root = f'{base.rstrip("/")}/{task_name}/{uuid.uuid4()}'
    for name, spec in component.output_definitions.artifacts.items():
      artifact = outputs.artifacts[name].artifacts.add(
          name=name, uri=f'{task_root}/{name}')
      artifact.type.CopyFrom(spec.artifact_type)
      if spec.HasField('metadata'):
        artifact.metadata.CopyFrom(spec.metadata)
    for name in component.output_definitions.parameters:
      outputs.parameters[name].output_file = f'/tmp/kfp/outputs/{name}'
    if self.local_root_mode:
      outputs.output_file = f'{task_root}/output_metadata.json'
    else:
      try:
        outputs.output_file = (
            f'{local_path_for_uri(task_root)}/output_metadata.json')
      except _TaskError:
        outputs.output_file = _FALLBACK_OUTPUT_FILE
    return outputs

  # -- volumes

  def check_volumes(self, task_name: str, label: str,
                    inputs: pb.ExecutorInput.Inputs) -> None:
    mounted = [m.mount_path for m in self.k8s[label].pvc_mount
               ] if label in self.k8s else []
    for name, value in inputs.parameter_values.items():
      text = _value_text(value)
      for mount in self.mount_paths:
        root = mount.rstrip('/')
        for match in re.finditer(re.escape(root) + r'(?=$|[/"\s,;:\'\\])',
                                 text):
          end = re.match(r'[^"\s,;\'\\]*', text[match.start():]).group(0)
          if not any(end == m.rstrip('/') or end.startswith(
              m.rstrip('/') + '/') for m in mounted):
            raise _TaskError(
                f'task {task_name}: parameter {name} names {end}, under the '
                f'volume mount path {mount}, but the task mounts no volume '
                'there: its pod would not see that path')

  # -- the launcher

  def pod_path(self, pod: Path, path: str) -> Path:
    """Where the harness finds a path of the task's pod."""
    if self.local_root_mode:
      return Path(path)
    return pod / path.lstrip('/')

  def artifact_local_path(self, pod: Path, uri: str) -> Optional[Path]:
    if self.local_root_mode:
      return Path(uri)
    try:
      return self.pod_path(pod, local_path_for_uri(uri))
    except _TaskError:
      return None

  def download_inputs(self, pod: Path, inputs: pb.ExecutorInput.Inputs):
    if self.local_root_mode:
      return
    for name, artifacts in inputs.artifacts.items():
      for artifact in artifacts.artifacts:
        local = self.artifact_local_path(pod, artifact.uri)
        if local is None:
          continue  # KFP warns and skips URIs without a local path.
        if not artifact.uri.startswith(_S3_SCHEMES):
          raise _TaskError(f'input {name}: {artifact.uri} is not on the '
                           "harness's S3 server")
        self.s3.download(artifact.uri, local)

  def prepare_output_folders(self, pod: Path,
                             outputs: pb.ExecutorInput.Outputs) -> None:
    for param in outputs.parameters.values():
      self.pod_path(pod, param.output_file).parent.mkdir(
          parents=True, exist_ok=True)
    for name, artifacts in outputs.artifacts.items():
      for artifact in artifacts.artifacts:
        local = self.artifact_local_path(pod, artifact.uri)
        if local is None:
          raise _TaskError('failed to generate local storage path for output '
                           f'artifact "{name}"')
        local.parent.mkdir(parents=True, exist_ok=True)

  def compile_command(self, executor_input: pb.ExecutorInput,
                      component: pb.ComponentSpec,
                      container) -> List[str]:
    """executeV2's addDefaultParams + compileCmdAndArgs."""
    with_defaults = copy.deepcopy(executor_input)
    for name, param in component.input_definitions.parameters.items():
      if (param.HasField('default_value')
          and name not in with_defaults.inputs.parameter_values):
        with_defaults.inputs.parameter_values[name].CopyFrom(
            param.default_value)
    executor_json = json.dumps(json_format.MessageToDict(with_defaults),
                               separators=(',', ':'))
    placeholders = {}
    for name, artifacts in with_defaults.inputs.artifacts.items():
      if not artifacts.artifacts:
        continue
      artifact = artifacts.artifacts[0]
      placeholders[f"{{{{$.inputs.artifacts['{name}'].uri}}}}"] = artifact.uri
      try:
        placeholders[f"{{{{$.inputs.artifacts['{name}'].path}}}}"] = (
            artifact.uri if self.local_root_mode else
            local_path_for_uri(artifact.uri))
      except _TaskError:
        pass
    for name, artifacts in with_defaults.outputs.artifacts.items():
      if not artifacts.artifacts:
        continue
      artifact = artifacts.artifacts[0]
      placeholders[f"{{{{$.outputs.artifacts['{name}'].uri}}}}"] = (
          artifact.uri)
      placeholders[f"{{{{$.outputs.artifacts['{name}'].path}}}}"] = (
          artifact.uri if self.local_root_mode else
          local_path_for_uri(artifact.uri))
    for name, value in with_defaults.inputs.parameter_values.items():
      placeholders[f"{{{{$.inputs.parameters['{name}']}}}}"] = _value_text(
          value)
    for name, param in with_defaults.outputs.parameters.items():
      placeholders[f"{{{{$.outputs.parameters['{name}'].output_file}}}}"] = (
          param.output_file)
    # KFP substitutes only `{{$}}` in the command (its loop over the other
    # placeholders writes to a variable it then drops).
    command = [c.replace('{{$}}', executor_json) for c in container.command]
    args = []
    for arg in container.args:
      arg = arg.replace('{{$}}', executor_json)
      for key, replacement in placeholders.items():
        arg = arg.replace(key, replacement)
      args.append(arg)
    return command + args

  def read_executor_output(self, pod: Path,
                           outputs: pb.ExecutorInput.Outputs
                           ) -> pb.ExecutorOutput:
    """getExecutorOutputFile: missing means empty."""
    path = self.pod_path(pod, outputs.output_file)
    executor_output = pb.ExecutorOutput()
    if path.exists():
      try:
        json_format.Parse(path.read_text(), executor_output)
      except json_format.ParseError as e:
        raise _TaskError('failed to unmarshall ExecutorOutput in file '
                         f'"{outputs.output_file}": {e}') from e
    return executor_output

  def collect_output_parameters(self, pod: Path, task_name: str,
                                executor_output: pb.ExecutorOutput,
                                outputs: pb.ExecutorInput.Outputs,
                                component: pb.ComponentSpec) -> None:
    values = self.mlmd.output_parameters.setdefault(task_name, {})
    for name, value in executor_output.parameter_values.items():
      values[name] = value
    for name, param in outputs.parameters.items():
      if name in values:
        continue
      spec = component.output_definitions.parameters[name]
      path = self.pod_path(pod, param.output_file)
      try:
        text = path.read_text()
      except OSError as e:
        raise _TaskError(f'failed to read output parameter name="{name}" '
                         f'path="{param.output_file}": {e}') from e
      values[name] = _text_to_value(text, spec.parameter_type, name)

  def upload_outputs(self, pod: Path, task_name: str,
                     executor_output: pb.ExecutorOutput,
                     outputs: pb.ExecutorInput.Outputs) -> None:
    """uploadOutputArtifacts: merge, upload, record."""
    for name, artifacts in outputs.artifacts.items():
      for artifact in artifacts.artifacts:
        produced = executor_output.artifacts.get(name)
        if produced is not None and produced.artifacts:
          _merge_runtime_artifacts(produced.artifacts[0], artifact)
        local = self.artifact_local_path(pod, artifact.uri)
        if local is not None and not self.local_root_mode:
          scheme, bucket, prefix = parse_bucket(self.pipeline_root)
          prefixed = scheme + f'{bucket}/{prefix}'.rstrip('/')
          if not artifact.uri.startswith(prefixed):
            raise _TaskError(
                f'failed to upload output artifact "{name}": URI '
                f'"{artifact.uri}" does not have expected bucket prefix '
                f'"{prefixed}"')
          if local.exists():  # KFP allows outputs that were not written.
            self.s3.upload(local, artifact.uri)
        self.mlmd.record_artifact(task_name, name, artifact,
                                  self.session_info)

  def run_task(self, task_name: str) -> TaskResult:
    result = TaskResult(task_name)
    task = self.spec.root.dag.tasks[task_name]
    component = self.spec.components[task.component_ref.name]
    label = component.executor_label
    container = self.deploy.executors[label].container
    started = time.monotonic()
    try:
      inputs = self.resolve_inputs(task_name, task, component)
      executor_input = pb.ExecutorInput(inputs=inputs)
      if task.trigger_policy.condition and not evaluate_condition(
          inputs, task.trigger_policy.condition):
        result.state = SKIPPED
        return result
      executor_input.outputs.CopyFrom(
          self.provision_outputs(task_name, component))
      self.check_volumes(task_name, label, inputs)
      pod = self.workdir / 'pods' / task_name
      pod.mkdir(parents=True, exist_ok=True)
      self.download_inputs(pod, inputs)
      self.prepare_output_folders(pod, executor_input.outputs)
      argv = self.compile_command(executor_input, component, container)
      result.executor_input = json_format.MessageToDict(executor_input)
      env = dict(self.env)
      env[LOCAL_ROOT_ENV] = '/' if self.local_root_mode else str(pod)
      try:
        proc = subprocess.run(argv, env=env, cwd=pod, capture_output=True,
                              text=True, timeout=self.timeout, check=False)
      except subprocess.TimeoutExpired as e:
        raise _TaskError(f'timed out after {self.timeout} s') from e
      except OSError as e:
        raise _TaskError(f'cannot start {argv[0]!r}: {e}') from e
      result.returncode = proc.returncode
      result.stdout_tail = _tail(proc.stdout)
      result.stderr_tail = _tail(proc.stderr)
      (pod / 'stdout.txt').write_text(proc.stdout)
      (pod / 'stderr.txt').write_text(proc.stderr)
      if proc.returncode != 0:
        result.state = FAILED
        result.error = f'exit code {proc.returncode}'
        return result
      executor_output = self.read_executor_output(pod, executor_input.outputs)
      self.collect_output_parameters(pod, task_name, executor_output,
                                     executor_input.outputs, component)
      self.upload_outputs(pod, task_name, executor_output,
                          executor_input.outputs)
      for name in executor_input.outputs.artifacts:
        artifact = self.mlmd.runtime_artifact(task_name, name)
        result.outputs[name] = ArtifactResult(
            artifact.uri, json_format.MessageToDict(artifact.metadata))
      result.output_parameters = {
          k: json_format.MessageToDict(v)
          for k, v in self.mlmd.output_parameters.get(task_name, {}).items()}
      result.state = SUCCEEDED
      return result
    except _TaskError as e:
      result.state = FAILED
      result.error = str(e)
      return result
    finally:
      result.seconds = time.monotonic() - started


def _merge_runtime_artifacts(src: pb.RuntimeArtifact,
                             dst: pb.RuntimeArtifact) -> None:
  if src.uri:
    dst.uri = src.uri
  if src.HasField('metadata'):
    if not dst.HasField('metadata'):
      dst.metadata.CopyFrom(src.metadata)
    else:
      for key, value in src.metadata.fields.items():
        dst.metadata.fields[key].CopyFrom(value)


def _text_to_value(text: str, parameter_type, name: str) -> struct_pb2.Value:
  """metadata.TextToPbValue."""
  try:
    if parameter_type == pb.ParameterType.STRING:
      return struct_pb2.Value(string_value=text)
    if parameter_type == pb.ParameterType.NUMBER_INTEGER:
      return struct_pb2.Value(number_value=float(int(text.strip())))
    if parameter_type == pb.ParameterType.NUMBER_DOUBLE:
      return struct_pb2.Value(number_value=float(text.strip()))
    if parameter_type == pb.ParameterType.BOOLEAN:
      return struct_pb2.Value(bool_value={
          'true': True, '1': True, 't': True, 'false': False, '0': False,
          'f': False}[text.strip().lower()])
    value = json_format.Parse(text, struct_pb2.Value())
    wanted = {pb.ParameterType.LIST: 'list_value',
              pb.ParameterType.STRUCT: 'struct_value'}.get(parameter_type)
    if value.WhichOneof('kind') != wanted:
      raise ValueError('unexpected type')
    return value
  except (ValueError, KeyError, json_format.ParseError) as e:
    raise _TaskError(f'failed to read output parameter name="{name}": '
                     f'TextToPbValue(text={text!r}) failed: {e}') from e


def _tail(text: str, lines: int = 20) -> str:
  return '\n'.join(text.splitlines()[-lines:])


def _dependents(tasks: Mapping[str, pb.PipelineTaskSpec],
                name: str) -> List[str]:
  found, frontier = set(), [name]
  while frontier:
    current = frontier.pop()
    for other, task in tasks.items():
      if current in task.dependent_tasks and other not in found:
        found.add(other)
        frontier.append(other)
  return sorted(found)


def project_env() -> Dict[str, str]:
  """The environment a task's process gets: this one, with the project's
  Python (the venv's) first on PATH so that `python` is the image's."""
  env = dict(os.environ)
  bin_dir = os.path.dirname(sys.executable)
  env['PATH'] = bin_dir + os.pathsep + env.get('PATH', '')
  return env


def replay(spec,
           pipeline_root: Optional[str] = None,
           *,
           parameters: Optional[Mapping[str, Any]] = None,
           local_root_mode: bool = False,
           workdir: Optional[Union[str, os.PathLike]] = None,
           s3_endpoint: Optional[str] = None,
           env: Optional[Mapping[str, str]] = None,
           timeout: Optional[float] = None,
           volumes: Iterable[Union[str, os.PathLike]] = ()) -> ReplayResult:
  """Runs a compiled spec as open-source KFP 2.x would (see the module doc).

  Args:
    spec: the compiled YAML (path or text), or its documents.
    pipeline_root: overrides the spec's `defaultPipelineRoot`.
    parameters: pipeline parameters (plain JSON values).
    local_root_mode: accept a local directory as the root (not KFP).
    workdir: where the tasks' pod directories go (a temp dir if None; kept).
    s3_endpoint: an S3 server to use; one is started on loopback if None.
    env: the tasks' environment (`project_env()` if None).
    timeout: seconds per task command.
    volumes: folders standing for volume claims: a task may name a path in
      one only if its platform config mounts a volume at that folder.

  Raises:
    RunCreationError: the backend would refuse the run when it is created.
    RootDagError: the run's root DAG driver would fail (no task runs).
  """
  pipeline_spec, platform_spec = load_spec(spec)
  order = check_run_creation(pipeline_spec)
  root = (pipeline_root or pipeline_spec.default_pipeline_root
          or KFP_DEFAULT_PIPELINE_ROOT)
  if local_root_mode:
    if '://' in root:
      raise RootDagError(f'local_root_mode takes a local directory, not {root}')
    root = os.path.abspath(root)
  else:
    parse_bucket(root)
    if not root.startswith(_S3_SCHEMES):
      raise RootDagError(f'{root}: KFP accepts it, but this harness stores '
                         'artifacts only for s3:// and minio:// roots')
  values = {}
  for name, param in pipeline_spec.root.input_definitions.parameters.items():
    if param.HasField('default_value'):
      values[name] = param.default_value
  for name, value in (parameters or {}).items():
    values[name] = json_format.ParseDict(value, struct_pb2.Value())
  work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix='kfp-replay-'))
  work.mkdir(parents=True, exist_ok=True)
  server = None
  s3 = None
  try:
    if not local_root_mode:
      if s3_endpoint is None:
        server, s3_endpoint = start_s3_server()
      s3 = _S3(s3_endpoint)
      s3.ensure_bucket(parse_bucket(root)[1])
    run = _Run(pipeline_spec, platform_spec, root, values, work, s3,
               local_root_mode, env if env is not None else project_env(),
               timeout, volumes=volumes)
    tasks = pipeline_spec.root.dag.tasks
    results = {name: TaskResult(name) for name in order}
    stopped = False
    for name in order:
      if results[name].state != NOT_RUN or stopped:
        continue
      results[name] = run.run_task(name)
      if results[name].state == SKIPPED:
        for dependent in _dependents(tasks, name):
          results[dependent].state = SKIPPED
          results[dependent].error = f'upstream {name} was skipped'
      elif results[name].state == FAILED:
        stopped = True  # Argo's failFast: nothing new starts.
    objects = []
    if s3 is not None:
      bucket = parse_bucket(root)[1]
      objects = [f'{bucket}/{k}' for k in s3.keys(bucket)]
    return ReplayResult(run.pipeline_name, run.run_id, root, results, objects)
  finally:
    if server is not None:
      server.stop()


def main(argv: Optional[Iterable[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m tests.kfp_replay',
      description='Replay a compiled KFP PipelineSpec as open-source KFP '
      '2.x would run it.')
  parser.add_argument('spec', help='the compiled pipeline YAML')
  parser.add_argument('--pipeline-root', help='overrides defaultPipelineRoot')
  parser.add_argument('--local', action='store_true',
                      help='a local directory as the root (not KFP)')
  parser.add_argument('--param', action='append', default=[],
                      metavar='NAME=JSON', help='a pipeline parameter')
  parser.add_argument('--workdir', help='where the pod directories go')
  parser.add_argument('--timeout', type=float, help='seconds per task')
  parser.add_argument('--volume', action='append', default=[],
                      metavar='FOLDER',
                      help='a folder standing for a volume claim')
  args = parser.parse_args(list(argv) if argv is not None else None)
  params = {}
  for item in args.param:
    name, _, value = item.partition('=')
    try:
      params[name] = json.loads(value)
    except json.JSONDecodeError:
      params[name] = value
  try:
    result = replay(args.spec, args.pipeline_root, parameters=params,
                    local_root_mode=args.local, workdir=args.workdir,
                    timeout=args.timeout, volumes=args.volume)
  except (RunCreationError, RootDagError) as e:
    print(f'{type(e).__name__}: {e}', file=sys.stderr)
    return 2
  print(result.table())
  return 0 if result.succeeded else 1


if __name__ == '__main__':
  sys.exit(main())
