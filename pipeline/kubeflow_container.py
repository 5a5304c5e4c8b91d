"""The container entrypoint of the compiled pipeline's components.

TFX's own entrypoint (`tfx.orchestration.kubeflow.v2.container.
kubeflow_v2_run_executor`), with two things around it:

- **Object stores TensorFlow cannot open.** On open-source Kubeflow
  Pipelines artifacts live in MinIO (`minio://`, its default root) or S3
  (`s3://`); TensorFlow's file systems here are gs:// and local files.
  KFP's launcher downloads a task's input artifacts to local paths before
  the task runs and uploads its output artifacts from them afterwards
  (`/minio/<bucket>/<key>`, `/s3/<bucket>/<key>`: LocalPathForURI in KFP's
  launcher_v2.go), as KFP's own Python components use them. This
  entrypoint hands TFX's executor those local paths and puts the store's
  URIs back into the executor output. gs:// URIs pass through (TensorFlow
  reads GCS itself).
- **Refused input.** A CSV that the data gate refuses inside CsvExampleGen
  (components/screened_example_gen.py) ends the task with the gate's
  message and exit code 2, as `tfx-e2e run` does, not with a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Tuple

# Where KFP's launcher mounts the store's local paths: `/` in a pod. The
# replay harness (tests/kfp_replay.py) points it at a folder of its own.
LOCAL_ROOT_ENV = 'TFX_E2E_KFP_LOCAL_ROOT'
# The schemes whose artifacts KFP's launcher moves to and from local paths
# and TensorFlow cannot open: as KFP's launcher names their local folders.
LOCAL_FOLDERS = {'minio://': 'minio', 's3://': 's3'}
INPUT_REFUSED = 2


def local_path(uri: str, root: str = '/') -> str:
  """Where KFP's launcher keeps the artifact at `uri` in the pod, or `uri`
  itself for a store TensorFlow opens (gs://, local paths)."""
  for scheme, folder in LOCAL_FOLDERS.items():
    if uri.startswith(scheme):
      # As KFP's launcher joins them: strings, so a key that starts with
      # '/' stays under the root.
      return os.path.join(root, f'{folder}/{uri[len(scheme):]}')
  return uri


def _localize(executor_input, root: str) -> Dict[str, str]:
  """Rewrites the artifact URIs of `executor_input` to local paths in
  place; returns local path -> URI for the ones it changed."""
  remote = {}
  for artifacts in (executor_input.inputs.artifacts,
                    executor_input.outputs.artifacts):
    for artifact_list in artifacts.values():
      for artifact in artifact_list.artifacts:
        path = local_path(artifact.uri, root)
        if path != artifact.uri:
          remote[path] = artifact.uri
          artifact.uri = path
  return remote


def _rebase(path: str, root: str) -> str:
  """A local path of the pod (the executor output file, an output
  parameter's file) under `root`."""
  return os.path.join(root, path.lstrip('/')) if path.startswith('/') else path


def _typed_inputs(executor_input, inputs_spec) -> None:
  """Gives input artifacts without a type the one of the component's input
  definitions. Open-source KFP hands upstream artifacts over with an empty
  `instanceSchema` (its backend has yet to fill it in), from which TFX's
  entrypoint cannot tell the artifact's class."""
  for name, artifact_list in executor_input.inputs.artifacts.items():
    declared = inputs_spec.artifacts.get(name) if inputs_spec else None
    if declared is None:
      continue
    for artifact in artifact_list.artifacts:
      if not (artifact.type.instance_schema or artifact.type.schema_title):
        artifact.type.CopyFrom(declared.artifact_type)


def _parse(argv: List[str]) -> Tuple[argparse.Namespace, List[str]]:
  """TFX's entrypoint flags; the rest are Beam's (as TFX parses them)."""
  parser = argparse.ArgumentParser()
  parser.add_argument('--executor_class_path', required=True)
  parser.add_argument('--json_serialized_invocation_args', required=True)
  parser.add_argument('--json_serialized_inputs_spec_args')
  return parser.parse_known_args(argv[1:])


def run(argv: List[str]) -> int:
  """Runs one component as TFX's Kubeflow v2 entrypoint does; returns the
  exit code."""
  # Imported here: TensorFlow loads slowly, and `--help` needs none of it.
  # pylint: disable=import-outside-toplevel
  from absl import flags
  from google.protobuf import json_format
  from kfp.pipeline_spec import pipeline_spec_pb2
  from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor
  from tfx_e2e.formats.csv_rules import InputError
  from tfx_e2e.pipeline import environment
  # pylint: enable=import-outside-toplevel

  environment.configure()
  args, beam_args = _parse(argv)
  flags.FLAGS(argv[:1])  # absl's flags parsed: TFX logs through absl
  executor_input = pipeline_spec_pb2.ExecutorInput()
  json_format.Parse(args.json_serialized_invocation_args, executor_input,
                    ignore_unknown_fields=True)
  root = os.environ.get(LOCAL_ROOT_ENV, '/') or '/'
  remote = _localize(executor_input, root)
  if args.json_serialized_inputs_spec_args:
    inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
    json_format.Parse(args.json_serialized_inputs_spec_args, inputs_spec,
                      ignore_unknown_fields=True)
    _typed_inputs(executor_input, inputs_spec)
  outputs = executor_input.outputs
  outputs.output_file = _rebase(outputs.output_file, root)
  for parameter in outputs.parameters.values():
    parameter.output_file = _rebase(parameter.output_file, root)
  args.json_serialized_invocation_args = json_format.MessageToJson(
      executor_input)
  try:
    kubeflow_v2_run_executor.main((args, beam_args))
  except InputError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return INPUT_REFUSED
  if remote:
    output_file = outputs.output_file
    executor_output = pipeline_spec_pb2.ExecutorOutput()
    with open(output_file, encoding='utf-8') as f:
      json_format.Parse(f.read(), executor_output, ignore_unknown_fields=True)
    for artifact_list in executor_output.artifacts.values():
      for artifact in artifact_list.artifacts:
        artifact.uri = remote.get(artifact.uri, artifact.uri)
    with open(output_file, 'w', encoding='utf-8') as f:
      f.write(json_format.MessageToJson(executor_output))
  return 0


if __name__ == '__main__':
  sys.exit(run(sys.argv))
