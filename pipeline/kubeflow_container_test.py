"""The container entrypoint: artifact URIs of stores TensorFlow cannot open
(minio://, s3://) handed to the executor as the local paths KFP's launcher
uses, and back in the executor output; gs:// and local paths as they are;
a refused input as exit code 2 with the message and no traceback.

The entrypoint runs as the pod runs it: a subprocess with the flags KFP's
launcher passes, an executor from a module of this test on PYTHONPATH."""

import json
import os
import subprocess
import sys
import textwrap

from google.protobuf import json_format
from hypothesis import given, settings, strategies as st
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest

from tfx_e2e.pipeline import kubeflow_container
from tfx_e2e.pipeline.kubeflow_container import local_path


def test_local_paths_as_kfp_s_launcher_names_them():
  assert local_path('minio://mlpipeline/v2/artifacts/p/r/t/examples'
                    ) == '/minio/mlpipeline/v2/artifacts/p/r/t/examples'
  assert local_path('s3://bucket/k/x', '/pod') == '/pod/s3/bucket/k/x'
  assert local_path('minio://b/k', '/pod/') == '/pod/minio/b/k'
  # Stores TensorFlow opens, and paths, as they are.
  for uri in ('gs://bucket/k', '/data/x', 'relative/x', 'ram://b/k',
              'S3://b/k', 'MINIO://b/k', 'xs3://b/k', 'file:///x', ''):
    assert local_path(uri, '/pod') == uri


# Bucket names are never empty and hold no '/'; keys are anything.
_BUCKETS = st.text(min_size=1).filter(lambda b: '/' not in b and
                                      '\x00' not in b)
_KEYS = st.text().filter(lambda k: '\x00' not in k)
_ROOTS = st.sampled_from(['/', '/pod', '/tmp/pod/', '/a b/ü'])


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(['minio://', 's3://']), bucket=_BUCKETS,
       key=_KEYS, root=_ROOTS)
def test_a_store_uri_is_its_launcher_path(scheme, bucket, key, root):
  uri = f'{scheme}{bucket}/{key}'
  folder = kubeflow_container.LOCAL_FOLDERS[scheme]
  # component.LocalPathForURI: the folder and the URI's rest, as written.
  assert local_path(uri, root) == (
      root.rstrip('/') + f'/{folder}/' + uri[len(scheme):])


@settings(max_examples=300, deadline=None)
@given(uris=st.lists(st.one_of(
    st.builds(lambda s, b, k: f'{s}{b}/{k}',
              st.sampled_from(['minio://', 's3://']), _BUCKETS, _KEYS),
    st.builds(lambda b, k: f'gs://{b}/{k}', _BUCKETS, _KEYS),
    _KEYS.map(lambda k: '/' + k)), min_size=1, max_size=6, unique=True),
       root=_ROOTS)
def test_localize_is_one_to_one_and_undone_by_its_map(uris, root):
  executor_input = pipeline_spec_pb2.ExecutorInput()
  # Store URIs only: a local path that happens to be a store's local
  # path is that very file in the pod (the inverse maps it to the store).
  stores = [u for u in uris if u.startswith(('minio://', 's3://'))]
  others = [u for u in uris if u not in stores]
  half = len(uris) // 2
  for i, uri in enumerate(stores + others):
    side = executor_input.inputs if i < half else executor_input.outputs
    side.artifacts[f'key{i % 3}'].artifacts.add(uri=uri)
  remote = kubeflow_container._localize(executor_input, root)  # pylint: disable=protected-access
  after = [a.uri for side in (executor_input.inputs, executor_input.outputs)
           for key in sorted(side.artifacts)
           for a in side.artifacts[key].artifacts]
  assert sorted(remote) == sorted(local_path(u, root) for u in stores)
  assert len(remote) == len(stores)  # one-to-one
  assert sorted(remote.values()) == sorted(stores)
  # Fixed points: gs:// and paths; every store URI mapped and undone.
  assert sorted(remote.get(u, u) for u in after) == sorted(uris)
  for uri in others:
    assert uri in after


def test_an_empty_bucket_stays_under_the_root():
  assert local_path('minio:///etc/x', '/pod') == '/pod/minio//etc/x'


def test_localize_maps_every_artifact_of_a_list():
  executor_input = pipeline_spec_pb2.ExecutorInput()
  inputs = executor_input.inputs.artifacts['examples'].artifacts
  for uri in ('minio://b/one', 's3://b/two', 'gs://b/three', '/local/four',
              'minio://b/one/nested'):
    inputs.add(uri=uri)
  executor_input.outputs.artifacts['model'].artifacts.add(uri='s3://o/m')
  executor_input.outputs.artifacts['blessing'].artifacts.add(uri='gs://o/b')
  remote = kubeflow_container._localize(executor_input, '/pod')  # pylint: disable=protected-access
  assert [a.uri for a in inputs] == [
      '/pod/minio/b/one', '/pod/s3/b/two', 'gs://b/three', '/local/four',
      '/pod/minio/b/one/nested']
  assert executor_input.outputs.artifacts['model'].artifacts[0].uri == (
      '/pod/s3/o/m')
  assert executor_input.outputs.artifacts['blessing'].artifacts[0].uri == (
      'gs://o/b')
  assert remote == {'/pod/minio/b/one': 'minio://b/one',
                    '/pod/s3/b/two': 's3://b/two',
                    '/pod/minio/b/one/nested': 'minio://b/one/nested',
                    '/pod/s3/o/m': 's3://o/m'}


def test_pod_paths_are_rebased_under_the_root():
  rebase = kubeflow_container._rebase  # pylint: disable=protected-access
  assert rebase('/tmp/kfp/outputs/output_metadata.json', '/pod') == (
      '/pod/tmp/kfp/outputs/output_metadata.json')
  assert rebase('/tmp/x', '/') == '/tmp/x'
  assert rebase('relative/x', '/pod') == 'relative/x'


def test_untyped_inputs_get_the_declared_type():
  executor_input = pipeline_spec_pb2.ExecutorInput()
  artifacts = executor_input.inputs.artifacts
  artifacts['examples'].artifacts.add(uri='a')  # no type: KFP's upstream
  artifacts['examples'].artifacts.add(uri='b').type.schema_title = 'tfx.Mine'
  artifacts['undeclared'].artifacts.add(uri='c')
  spec = pipeline_spec_pb2.ComponentInputsSpec()
  spec.artifacts['examples'].artifact_type.schema_title = 'tfx.Examples'
  kubeflow_container._typed_inputs(executor_input, spec)  # pylint: disable=protected-access
  titles = [a.type.schema_title for a in artifacts['examples'].artifacts]
  assert titles == ['tfx.Examples', 'tfx.Mine']
  assert not artifacts['undeclared'].artifacts[0].type.schema_title


# The executors the subprocess runs: importable from the test's folder.
PROBE = textwrap.dedent('''
    import json
    import os

    from tfx.dsl.components.base import base_executor

    from tfx_e2e.formats.csv_rules import InputError


    class Probe(base_executor.BaseExecutor):
      """Reads each local input's payload, writes what it saw to each
      local output."""

      def Do(self, input_dict, output_dict, exec_properties):
        seen = {
            'inputs': {k: [[a.uri, type(a).__name__] for a in v]
                       for k, v in input_dict.items()},
            'outputs': {k: [a.uri for a in v]
                        for k, v in output_dict.items()},
            'payloads': {k: [open(os.path.join(a.uri, 'payload')).read()
                             for a in v if '://' not in a.uri]
                         for k, v in input_dict.items()},
            'exec_properties': exec_properties,
        }
        for artifacts in output_dict.values():
          for artifact in artifacts:
            if '://' not in artifact.uri:
              os.makedirs(artifact.uri, exist_ok=True)
              with open(os.path.join(artifact.uri, 'seen.json'), 'w') as f:
                json.dump(seen, f)


    class Refuse(base_executor.BaseExecutor):

      def Do(self, input_dict, output_dict, exec_properties):
        raise InputError('d.csv:3: the label fare is text (2 rows)')


    class Crash(base_executor.BaseExecutor):

      def Do(self, input_dict, output_dict, exec_properties):
        raise ValueError('not an input problem')
''')


def _start(tmp_path, executor, executor_input, inputs_spec=None):
  """The entrypoint as a pod starts it, running (the runs of this module
  start together: each spends most of its time importing TensorFlow)."""
  (tmp_path / 'probe_executors.py').write_text(PROBE)
  pod = tmp_path / 'pod'
  pod.mkdir(exist_ok=True)
  env = dict(os.environ,
             PYTHONPATH=os.pathsep.join(
                 [str(tmp_path)] + [p for p in [os.environ.get('PYTHONPATH')]
                                    if p]),
             **{kubeflow_container.LOCAL_ROOT_ENV: str(pod)})
  argv = [sys.executable, '-m', 'tfx_e2e.pipeline.kubeflow_container',
          '--executor_class_path', f'probe_executors.{executor}',
          '--json_serialized_invocation_args',
          json_format.MessageToJson(executor_input)]
  if inputs_spec is not None:
    argv += ['--json_serialized_inputs_spec_args',
             json_format.MessageToJson(inputs_spec)]
  # Files, not pipes: a process blocked on a full pipe while another is
  # waited for would never finish.
  with open(tmp_path / 'stdout', 'w') as stdout, open(
      tmp_path / 'stderr', 'w') as stderr:
    return subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=stdout,
                            stderr=stderr)


def _artifact(artifact_list, uri, title, name):
  artifact = artifact_list.artifacts.add(uri=uri, name=name)
  if title:
    artifact.type.schema_title = title
  return artifact


OUTPUT_FILE = '/kfp/outputs/output_metadata.json'


def _probe_input(tmp_path):
  """An invocation with inputs and outputs in every kind of store, and an
  untyped upstream input; the launcher's downloads in the pod."""
  pod = tmp_path / 'pod'
  local_in = tmp_path / 'local-in'
  executor_input = pipeline_spec_pb2.ExecutorInput()
  inputs = executor_input.inputs.artifacts['examples']
  # What the launcher downloaded before the task: the store's local paths.
  for uri, local in (('minio://mlpipeline/v2/artifacts/a/examples',
                      pod / 'minio/mlpipeline/v2/artifacts/a/examples'),
                     ('s3://bkt/b/examples', pod / 's3/bkt/b/examples'),
                     (str(local_in), local_in)):
    local.mkdir(parents=True)
    (local / 'payload').write_text(f'from {uri}')
    _artifact(inputs, uri, 'tfx.Examples', f'runs/1/{local.name}/{uri}')
  _artifact(inputs, 'gs://bkt/c/examples', 'tfx.Examples', 'gs')
  # An upstream artifact as open-source KFP hands it over: no type.
  untyped = tmp_path / 'untyped'
  untyped.mkdir()
  (untyped / 'payload').write_text('untyped')
  _artifact(executor_input.inputs.artifacts['schema'], str(untyped), None,
            'untyped')
  outputs = {
      'minio_out': 'minio://mlpipeline/v2/artifacts/t/minio_out',
      's3_out': 's3://bkt/t/s3_out',
      'gs_out': 'gs://bkt/t/gs_out',
      'local_out': str(tmp_path / 'local_out'),
  }
  for key, uri in outputs.items():
    _artifact(executor_input.outputs.artifacts[key], uri, 'tfx.Model', key)
  executor_input.outputs.output_file = OUTPUT_FILE
  executor_input.inputs.parameter_values['setting'].string_value = 'x'
  inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
  inputs_spec.artifacts['schema'].artifact_type.schema_title = 'tfx.Schema'
  inputs_spec.artifacts['examples'].artifact_type.schema_title = (
      'tfx.Examples')
  inputs_spec.parameters['setting'].parameter_type = (
      pipeline_spec_pb2.ParameterType.STRING)
  return executor_input, inputs_spec, outputs


def _minimal_input():
  executor_input = pipeline_spec_pb2.ExecutorInput()
  _artifact(executor_input.outputs.artifacts['examples'],
            'minio://b/t/examples', 'tfx.Examples', 'examples')
  executor_input.outputs.output_file = OUTPUT_FILE
  return executor_input


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Per executor: (its folder, exit code, stdout, stderr) of one
  entrypoint run."""
  probe = tmp_path_factory.mktemp('probe')
  executor_input, inputs_spec, outputs = _probe_input(probe)
  started = {'Probe': (probe, _start(probe, 'Probe', executor_input,
                                     inputs_spec))}
  for executor in ('Refuse', 'Crash'):
    folder = tmp_path_factory.mktemp(executor.lower())
    started[executor] = (folder, _start(folder, executor, _minimal_input()))
  done = {}
  for executor, (folder, process) in started.items():
    process.wait(timeout=180)
    done[executor] = (folder, process.returncode,
                      (folder / 'stdout').read_text(),
                      (folder / 'stderr').read_text())
  done['outputs'] = outputs
  return done


def test_the_executor_works_on_local_paths_and_the_output_names_the_store(
    runs):
  tmp_path, returncode, _, stderr = runs['Probe']
  outputs = runs['outputs']
  pod = tmp_path / 'pod'
  local_in = tmp_path / 'local-in'
  untyped = tmp_path / 'untyped'
  assert returncode == 0, stderr[-3000:]

  # The executor output, at the launcher's path under the pod's root, names
  # the store's URIs again; gs:// and local ones as they were.
  written = pipeline_spec_pb2.ExecutorOutput()
  json_format.Parse((pod / OUTPUT_FILE.lstrip('/')).read_text(), written,
                    ignore_unknown_fields=True)
  assert {key: [a.uri for a in artifacts.artifacts]
          for key, artifacts in written.artifacts.items()} == {
              key: [uri] for key, uri in outputs.items()}

  # What the executor saw: local paths, readable, and where the launcher
  # uploads outputs from.
  seen = json.loads(
      (pod / 'minio/mlpipeline/v2/artifacts/t/minio_out/seen.json'
       ).read_text())
  assert seen == json.loads(
      (pod / 's3/bkt/t/s3_out/seen.json').read_text())
  assert seen == json.loads((tmp_path / 'local_out/seen.json').read_text())
  assert seen['inputs'] == {
      'examples': [
          [str(pod / 'minio/mlpipeline/v2/artifacts/a/examples'), 'Examples'],
          [str(pod / 's3/bkt/b/examples'), 'Examples'],
          [str(local_in), 'Examples'],
          ['gs://bkt/c/examples', 'Examples']],
      'schema': [[str(untyped), 'Schema']]}
  assert seen['payloads'] == {
      'examples': ['from minio://mlpipeline/v2/artifacts/a/examples',
                   'from s3://bkt/b/examples', f'from {local_in}'],
      'schema': ['untyped']}
  assert seen['outputs'] == {
      'minio_out': [str(pod / 'minio/mlpipeline/v2/artifacts/t/minio_out')],
      's3_out': [str(pod / 's3/bkt/t/s3_out')],
      'gs_out': ['gs://bkt/t/gs_out'],
      'local_out': [str(tmp_path / 'local_out')]}
  assert seen['exec_properties'] == {'setting': 'x'}
  # Nothing written at a path named like the URI.
  assert not list(tmp_path.glob('**/minio:*'))
  assert not list(tmp_path.glob('**/s3:*'))


def test_a_refused_input_exits_2_with_the_message_only(runs):
  tmp_path, returncode, stdout, stderr = runs['Refuse']
  assert returncode == kubeflow_container.INPUT_REFUSED == 2
  assert 'error: d.csv:3: the label fare is text (2 rows)' in stderr
  assert 'Traceback' not in stderr + stdout
  assert not (tmp_path / 'pod' / OUTPUT_FILE.lstrip('/')).exists()


def test_any_other_failure_is_a_failure_with_its_traceback(runs):
  _, returncode, _, stderr = runs['Crash']
  assert returncode not in (0, kubeflow_container.INPUT_REFUSED)
  assert 'Traceback' in stderr
  assert 'ValueError: not an input problem' in stderr
