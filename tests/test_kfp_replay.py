"""The KFP replay harness (tests/kfp_replay.py) on small hand-written specs
whose tasks are `python -c` commands, and on the spec compiled before the
Kubeflow rework (tests/data/kfp/taxi-fare-before.yaml), which open-source
KFP refuses. No TFX run: the whole file takes a few seconds."""

import json
from pathlib import Path
import textwrap

import pytest
import yaml

from tests import kfp_replay
from tests.kfp_replay import FAILED, NOT_RUN, SKIPPED, SUCCEEDED

BEFORE = Path(__file__).parent / 'data' / 'kfp' / 'taxi-fare-before.yaml'

# Every stub task: the ExecutorInput as the launcher passes it, the local
# path of a KFP path, and a writer of the executor output file.
PRELUDE = textwrap.dedent("""\
    import json, os, sys
    ei = json.loads(sys.argv[1])
    ROOT = os.environ['TFX_E2E_KFP_LOCAL_ROOT']
    def local(uri):
        for scheme, base in (('minio://', '/minio/'), ('s3://', '/s3/')):
            if uri.startswith(scheme):
                uri = base + uri[len(scheme):]
        return os.path.join(ROOT, uri.lstrip('/'))
    def out_path(name):
        return local(ei['outputs']['artifacts'][name]['artifacts'][0]['uri'])
    def in_path(name):
        return local(ei['inputs']['artifacts'][name]['artifacts'][0]['uri'])
    def write_output(artifacts):
        out = {'artifacts': {k: {'artifacts': [{'metadata': v}]}
                             for k, v in artifacts.items()}}
        path = local(ei['outputs']['outputFile'])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(out, f)
    """)

ARTIFACT = {'artifactType': {'schemaTitle': 'system.Artifact',
                             'schemaVersion': '0.0.1'}}


def task(code, *, deps=(), params=None, artifacts=None, outputs=(),
         condition=None, param_types=None):
  """One task: (its component, its executor, its task spec)."""
  component = {'executorLabel': None}
  inputs = {}
  if params:
    inputs['parameters'] = params
    component['inputDefinitions'] = {'parameters': {
        n: {'parameterType': (param_types or {}).get(n, 'STRING')}
        for n in params}}
  if artifacts:
    inputs['artifacts'] = {
        n: {'taskOutputArtifact': {'producerTask': p,
                                   'outputArtifactKey': k}}
        for n, (p, k) in artifacts.items()}
    component.setdefault('inputDefinitions', {})['artifacts'] = {
        n: ARTIFACT for n in artifacts}
  if outputs:
    component['outputDefinitions'] = {'artifacts': {n: ARTIFACT
                                                    for n in outputs}}
  executor = {'container': {'image': 'stub', 'command': ['python', '-c'],
                            'args': [PRELUDE + textwrap.dedent(code), '{{$}}']}}
  spec = {'componentRef': {'name': None}, 'taskInfo': {'name': None}}
  if deps:
    spec['dependentTasks'] = list(deps)
  if inputs:
    spec['inputs'] = inputs
  if condition:
    spec['triggerPolicy'] = {'condition': condition}
  return component, executor, spec


def pipeline(tasks, *, schema='2.1.0', root=None, platform=None):
  """The YAML documents of a spec made of `tasks` (name -> task())."""
  doc = {'pipelineInfo': {'name': 'replay-test'}, 'schemaVersion': schema,
         'sdkVersion': 'test', 'components': {}, 'root': {'dag': {'tasks': {}}},
         'deploymentSpec': {'executors': {}}}
  if root:
    doc['defaultPipelineRoot'] = root
  for name, (component, executor, spec) in tasks.items():
    component = dict(component, executorLabel=f'exec-{name}')
    doc['components'][f'comp-{name}'] = component
    doc['deploymentSpec']['executors'][f'exec-{name}'] = executor
    doc['root']['dag']['tasks'][name] = dict(
        spec, componentRef={'name': f'comp-{name}'}, taskInfo={'name': name})
  docs = [doc]
  if platform:
    docs.append({'platforms': {'kubernetes': {'deploymentSpec': {
        'executors': {f'exec-{n}': c for n, c in platform.items()}}}}})
  return docs


@pytest.fixture(scope='module')
def s3_endpoint():
  server, endpoint = kfp_replay.start_s3_server()
  yield endpoint
  server.stop()


@pytest.fixture
def run(s3_endpoint, tmp_path):
  def _run(docs, **kwargs):
    kwargs.setdefault('s3_endpoint', s3_endpoint)
    kwargs.setdefault('workdir', tmp_path / 'work')
    return kfp_replay.replay(docs, **kwargs)
  return _run


def _constant(value, schema='2.1.0'):
  if schema == '2.1.0':
    return {'runtimeValue': {'constant': value}}
  key = 'intValue' if isinstance(value, int) else 'stringValue'
  return {'runtimeValue': {'constantValue': {key: value}}}


def test_tasks_run_in_dependency_order(run, tmp_path):
  log = tmp_path / 'order.log'
  code = f"""
      with open({str(log)!r}, 'a') as f:
          f.write(ei['inputs']['parameterValues']['me'] + '\\n')
      """
  # Name order is the reverse of the dependency order.
  result = run(pipeline({
      'a-third': task(code, deps=['m-second'], params={'me': _constant('a')}),
      'm-second': task(code, deps=['z-first'], params={'me': _constant('m')}),
      'z-first': task(code, params={'me': _constant('z')}),
  }))
  assert result.succeeded, result.table()
  assert log.read_text().split() == ['z', 'm', 'a']
  assert list(result.tasks) == ['z-first', 'm-second', 'a-third']


@pytest.mark.parametrize('schema', ['2.0.0', '2.1.0'])
def test_parameters_reach_the_container_as_the_driver_passes_them(
    run, schema):
  code = "print(json.dumps(ei['inputs']))"
  result = run(pipeline({'t': task(
      code, params={'text': _constant('hello', schema),
                    'count': _constant(5, schema),
                    'number_as_text': _constant(7, schema)},
      param_types={'count': 'NUMBER_INTEGER'})}, schema=schema))
  t = result['t']
  if schema == '2.0.0':
    # KFP's driver no longer reads the deprecated `constantValue`: the task
    # fails before its container starts.
    assert t.state == FAILED and t.returncode is None, result.table()
    assert ('param runtime value spec of type '
            '*pipelinespec.ValueOrRuntimeParameter_ConstantValue not '
            'implemented') in t.error
  else:
    assert t.state == SUCCEEDED, result.table()
    received = json.loads(t.stdout_tail)
    assert received == {'parameterValues': {
        'text': 'hello', 'count': 5,
        # A number for a STRING parameter arrives as its text.
        'number_as_text': '7'}}


def test_a_false_condition_skips_the_task_and_its_dependents(run):
  produce = "write_output({'gate': {'open': 0}})"
  gated = ("inputs.artifacts['gate'].artifacts[0].metadata['open'] == 1")
  result = run(pipeline({
      'producer': task(produce, outputs=['gate']),
      'gated': task('', deps=['producer'], artifacts={
          'gate': ('producer', 'gate')}, condition=gated),
      'after-gated': task('', deps=['gated']),
      # The same artifact and an int literal against the stored double:
      # cel-go compares numbers across types.
      'open-gate': task('', deps=['producer'], artifacts={
          'gate': ('producer', 'gate')}, condition=gated.replace(
              '== 1', '== 0')),
  }))
  assert result.states() == {
      'producer': SUCCEEDED, 'gated': SKIPPED, 'after-gated': SKIPPED,
      'open-gate': SUCCEEDED}, result.table()
  assert result.succeeded


def test_a_failing_task_stops_its_dependents(run):
  result = run(pipeline({
      'bad': task("sys.exit('broken on purpose')"),
      'child': task('', deps=['bad']),
      'grandchild': task('', deps=['child']),
  }))
  assert result.states() == {'bad': FAILED, 'child': NOT_RUN,
                             'grandchild': NOT_RUN}, result.table()
  assert result['bad'].returncode == 1
  assert 'broken on purpose' in result['bad'].stderr_tail
  assert not result.succeeded


def test_metadata_comes_back_from_mlmd_as_kfp_returns_it(run):
  produce = """write_output({'stats': {
      'count': 3, 'flag': True, 'label': 's', 'blessed': {'train': 1}}})"""
  consume = "print(json.dumps(ei['inputs']['artifacts']['stats']))"
  scalar = "inputs.artifacts['stats'].artifacts[0].metadata['flag'] == 1.0"
  struct = ("inputs.artifacts['stats'].artifacts[0]"
            ".metadata['blessed']['train'] == 1.0")
  stats = {'stats': ('producer', 'stats')}
  result = run(pipeline({
      'producer': task(produce, outputs=['stats']),
      'on-scalar': task(consume, deps=['producer'], artifacts=stats,
                        condition=scalar),
      'on-struct': task(consume, deps=['producer'], artifacts=stats,
                        condition=struct),
  }))
  assert result['on-scalar'].state == SUCCEEDED, result.table()
  received = json.loads(result['on-scalar'].stdout_tail)['artifacts'][0]
  metadata = received.pop('metadata')
  assert metadata.pop('store_session_info')
  assert metadata == {
      'count': 3.0, 'flag': 1.0, 'label': 's',
      'blessed': {'struct': {'train': 1.0}}, 'display_name': 'stats'}
  # The MLMD id as the name, and no schema (KFP leaves it empty).
  assert received['name'].isdigit()
  assert received['type'] == {'instanceSchema': ''}
  assert result['producer'].outputs['stats'].metadata['blessed'] == {
      'struct': {'train': 1.0}}
  assert result['on-struct'].state == FAILED
  assert result['on-struct'].returncode is None
  assert 'no such key: train' in result['on-struct'].error


def test_a_resolver_executor_is_refused_at_run_creation(run, tmp_path):
  marker = tmp_path / 'ran'
  docs = pipeline({
      'first': task(f'open({str(marker)!r}, "w").close()'),
      'latest': task(''),
  })
  docs[0]['deploymentSpec']['executors']['exec-latest'] = {'resolver': {
      'outputArtifactQueries': {'model': {
          'filter': 'schema_title="tfx.Model" AND state=LIVE'}}}}
  with pytest.raises(kfp_replay.RunCreationError,
                     match='non-container and non-importer executor not '
                     'implemented'):
    run(docs)
  assert not marker.exists()


def test_artifacts_travel_through_the_s3_server(tmp_path):
  write = """
      os.makedirs(out_path('data'))
      with open(os.path.join(out_path('data'), 'rows.txt'), 'w') as f:
          f.write('1,2,3')
      with open(out_path('single'), 'w') as f:
          f.write('one file')
      write_output({'data': {'rows': 3}})
      """
  read = """
      with open(os.path.join(in_path('data'), 'rows.txt')) as f:
          rows = f.read()
      with open(in_path('single')) as f:
          single = f.read()
      print(json.dumps([rows, single, ROOT]))
      """
  result = kfp_replay.replay(pipeline({
      'writer': task(write, outputs=['data', 'single', 'unwritten']),
      'reader': task(read, deps=['writer'], artifacts={
          'data': ('writer', 'data'), 'single': ('writer', 'single')}),
  }, root='minio://mlpipeline/v2/artifacts'), workdir=tmp_path / 'work')
  assert result.succeeded, result.table()
  rows, single, reader_root = json.loads(result['reader'].stdout_tail)
  assert (rows, single) == ('1,2,3', 'one file')
  # Each task has its own pod directory: the reader got the files from S3.
  assert reader_root == str(tmp_path / 'work' / 'pods' / 'reader')
  uri = result['writer'].outputs['data'].uri
  run_root = f'minio://mlpipeline/v2/artifacts/replay-test/{result.run_id}/'
  assert uri.startswith(run_root + 'writer/') and uri.endswith('/data')
  key = uri[len('minio://'):]
  assert f'{key}/rows.txt' in result.s3_objects
  assert result['writer'].outputs['single'].uri[len('minio://'):] in (
      result.s3_objects)
  # An output the task never wrote is still recorded, as KFP allows.
  assert 'unwritten' in result['writer'].outputs


def test_a_local_directory_root_is_refused_unless_asked_for(run, tmp_path):
  docs = pipeline({'t': task("write_output({'out': {'n': 1}})",
                             outputs=['out'])})
  with pytest.raises(kfp_replay.RootDagError, match='unrecognized pipeline '
                     'root format'):
    run(docs, pipeline_root=str(tmp_path / 'root'))
  with pytest.raises(kfp_replay.RootDagError, match='unsupported Cloud '
                     'bucket'):
    run(docs, pipeline_root=f'file://{tmp_path}/root')
  result = run(docs, pipeline_root=str(tmp_path / 'root'),
               local_root_mode=True)
  assert result.succeeded, result.table()
  assert result['t'].outputs['out'].uri.startswith(str(tmp_path / 'root'))


def test_a_task_naming_a_path_on_a_volume_it_does_not_mount_fails(
    run, tmp_path):
  volume = tmp_path / 'serving'
  volume.mkdir()
  target = f'{volume}/model/1'
  code = "print('ran')"
  push_config = json.dumps({'filesystem': {'base_directory': target}})
  mount = {'pvcMount': [{'constant': 'serving-pvc',
                         'mountPath': str(volume)}]}
  docs = pipeline({
      'mounted': task(code, params={'config': _constant(push_config)}),
      'unmounted': task(code, deps=['mounted'],
                        params={'config': _constant(push_config)}),
  }, platform={'mounted': mount})
  result = run(docs)
  assert result['mounted'].state == SUCCEEDED, result.table()
  assert result['unmounted'].state == FAILED
  assert result['unmounted'].returncode is None
  assert 'unmounted' in result['unmounted'].error
  assert target in result['unmounted'].error


# ---------------------------------------------------- the spec before 21


def _before():
  return yaml.safe_load(BEFORE.read_text())


def _without_resolvers(doc):
  """The spec with the Resolver's two tasks (and what uses them) cut out."""
  resolver = 'latest_blessed_model_resolver'
  tasks = doc['root']['dag']['tasks']
  for name in [n for n in tasks if n.startswith(resolver)]:
    del tasks[name]
  for section in (doc['components'], doc['deploymentSpec']['executors']):
    for name in [n for n in section if n.startswith(resolver)]:
      del section[name]
  for spec in tasks.values():
    if 'dependentTasks' in spec:
      spec['dependentTasks'] = [d for d in spec['dependentTasks']
                                if not d.startswith(resolver)]
    artifacts = spec.get('inputs', {}).get('artifacts', {})
    for name in [n for n, a in artifacts.items() if a.get(
        'taskOutputArtifact', {}).get('producerTask', '').startswith(
            resolver)]:
      del artifacts[name]
      for component in doc['components'].values():
        component.get('inputDefinitions', {}).get('artifacts', {}).pop(
            name, None)
  return doc


def _as_schema_2_1(doc):
  """`constantValue` rewritten as `constant` and `type` as `parameterType`,
  so the driver gets past the parameters."""
  types = {'STRING': 'STRING', 'INT': 'NUMBER_INTEGER',
           'DOUBLE': 'NUMBER_DOUBLE'}
  for spec in doc['root']['dag']['tasks'].values():
    for param in spec.get('inputs', {}).get('parameters', {}).values():
      value = param.get('runtimeValue', {}).pop('constantValue', None)
      if value is not None:
        param['runtimeValue']['constant'] = (
            int(value['intValue']) if 'intValue' in value
            else value['stringValue'])
  for component in doc['components'].values():
    for param in component.get('inputDefinitions', {}).get(
        'parameters', {}).values():
      param['parameterType'] = types[param.pop('type')]
  doc['schemaVersion'] = '2.1.0'
  return doc


def _stub_containers(doc):
  """Every executor replaced by a stub that writes its outputs' metadata as
  TFX's entrypoint does; ExampleValidator's anomalies say both splits are
  blessed, in the struct the data gate of the spec reads."""
  code = """
      metadata = {'anomalies': {'blessed': {'train': 1, 'eval': 1}}}
      write_output({name: metadata.get(name, {})
                    for name in ei['outputs'].get('artifacts', {})})
      """
  for executor in doc['deploymentSpec']['executors'].values():
    executor['container'] = dict(executor['container'], command=['python', '-c'],
                                 args=[PRELUDE + textwrap.dedent(code), '{{$}}'])
  return doc


def test_the_spec_before_the_rework_is_refused_at_run_creation(run):
  with pytest.raises(kfp_replay.RunCreationError) as refused:
    run([_before()])
  assert 'latest_blessed_model_resolver' in str(refused.value)
  assert 'non-container and non-importer executor not implemented' in str(
      refused.value)


def test_the_spec_before_the_rework_fails_on_its_parameters_then_its_gate(
    run):
  # Without the resolvers, the first task's driver fails on schema 2.0.0's
  # parameters.
  result = run([_without_resolvers(_before())])
  assert result['CsvExampleGen'].state == FAILED, result.table()
  assert 'ValueOrRuntimeParameter_ConstantValue' in (
      result['CsvExampleGen'].error)
  assert all(t.state == NOT_RUN for n, t in result.tasks.items()
             if n != 'CsvExampleGen')
  # With its parameters as schema 2.1.0 writes them, everything up to the
  # gate runs, and the first gated task (Transform) fails on the struct
  # condition instead of being gated: nothing after it starts.
  result = run([_stub_containers(_as_schema_2_1(_without_resolvers(
      _before())))])
  assert result.states() == {
      'CsvExampleGen': SUCCEEDED, 'StatisticsGen': SUCCEEDED,
      'SchemaGen': SUCCEEDED, 'ExampleValidator': SUCCEEDED,
      'Transform': FAILED, 'Trainer': NOT_RUN, 'Evaluator': NOT_RUN,
      'Pusher': NOT_RUN}, result.table()
  assert result['Transform'].returncode is None
  assert "no such key: train" in result['Transform'].error


def test_replay_fails_a_task_reading_a_host_path_no_volume_mounts(tmp_path):
  data = tmp_path / 'volume' / 'data.csv'
  data.parent.mkdir()
  data.write_text('a,b\n1,2\n')
  docs = pipeline({'reader': task(
      "open(ei['inputs']['parameterValues']['input_base']).read()",
      params={'input_base': {'runtimeValue': {'constant': str(data)}}})})
  result = kfp_replay.replay(docs, workdir=tmp_path / 'work',
                             volumes=[tmp_path / 'volume'])
  assert result['reader'].state == kfp_replay.FAILED, result.table()
