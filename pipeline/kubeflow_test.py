"""The same pipeline compiled for Kubeflow Pipelines v2 and Vertex AI, and
submitted with the kfp client. No Kubeflow cluster is available here: the
submit test records what the client sends to an HTTP server on loopback."""

import dataclasses
import http.server
import json
import re
import threading

from google.protobuf import text_format
import pytest
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.dsl.compiler import compiler
import yaml

from tfx_e2e.pipeline import kubeflow
from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline.config import (ConfigError, PipelineConfig, load_config,
                                     parse_overrides)
from tests.conftest import run_cli

IMAGE = 'registry.example/tfx-e2e:test'
OVERRIDES = ['--set', f'kubeflow.image={IMAGE}',
             '--set', 'kubeflow.pipeline_root=gs://bucket/root',
             '--set', 'kubeflow.data_path=gs://bucket/data',
             '--set', 'kubeflow.serving_base=gs://bucket/serving']


def _local_edges():
  """(upstream, downstream) node ids of the pipeline as the local runner
  compiles it (the IR, with the data gate's dependencies)."""
  config = load_config()
  ir = compiler.Compiler().compile(pipeline_def.create_pipeline(config))
  edges = set()
  for node in ir.nodes:
    node = node.pipeline_node
    for upstream in node.upstream_nodes:
      edges.add((upstream, node.node_info.id))
  return edges


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  """The pipeline compiled on GCS for both targets, and with the defaults
  (open-source KFP: MinIO root, data and models on a claim)."""
  out = tmp_path_factory.mktemp('kfp')
  for target, name, overrides in (
      ('kubeflow', 'pipeline.yaml', OVERRIDES),
      ('vertex', 'pipeline.json', OVERRIDES),
      ('kubeflow', 'default.yaml', ['--set', 'kubeflow.pods.trainer.cpu=3',
                                    '--set', 'kubeflow.pods.trainer.memory_gib=6'])):
    result = run_cli(['compile', '--target', target, '--output',
                      str(out / name), *overrides])
    assert result.exit_code == 0, result.stderr
  return (yaml.safe_load((out / 'pipeline.yaml').read_text()),
          json.loads((out / 'pipeline.json').read_text()), out)


def _documents(path):
  text = path.read_text()
  assert text.startswith('# PIPELINE DEFINITION\n')
  return list(yaml.safe_load_all(text))


def test_kubeflow_spec_matches_the_local_pipeline(compiled):
  spec, _, _ = compiled
  assert spec['schemaVersion'] == '2.1.0'
  assert spec['pipelineInfo']['name'] == 'taxi-fare'
  tasks = spec['root']['dag']['tasks']
  local_nodes = {n for edge in _local_edges() for n in edge}
  assert set(tasks) == local_nodes
  compiled_edges = {(up, task) for task, body in tasks.items()
                    for up in body.get('dependentTasks', [])}
  assert compiled_edges == _local_edges()


def test_nothing_an_open_source_backend_refuses(compiled):
  """No resolver executor (open-source KFP: "not implemented"), no
  schema-2.0.0 `constantValue` (newer drivers read `constant`)."""
  spec, _, out = compiled
  for document in (spec, _documents(out / 'default.yaml')[0]):
    executors = document['deploymentSpec']['executors']
    assert all(set(e) == {'container'} for e in executors.values()), {
        label: set(e) for label, e in executors.items()}
    text = yaml.safe_dump(document)
    assert 'constantValue' not in text
    assert 'resolver' not in text.lower()


_TOKEN = re.compile(r"""\s*(?:
    (?P<number>\d+(?:\.\d*)?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<name>[A-Za-z_]\w*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\].])
)""", re.VERBOSE)


def _tokens(text):
  tokens, at = [], 0
  while text[at:].strip():
    match = _TOKEN.match(text, at)
    assert match, f'cannot read {text[at:]!r}'
    kind = match.lastgroup
    value = match.group(kind)
    tokens.append((kind, float(value) if kind == 'number' else
                   value[1:-1] if kind == 'string' else value))
    at = match.end()
  return tokens


def _parse(text):
  """A CEL condition (the subset KFP's compiler writes) as a tree of tuples:
  ('&&'|'||'|'=='|..., left, right), ('!', x), ('index', x, key),
  ('attr', x, name), ('name', n), ('number', 1.0), ('string', s).
  Parentheses and spacing leave no trace, numbers compare as numbers."""
  tokens = _tokens(text)
  at = 0

  def peek():
    return tokens[at][1] if at < len(tokens) else None

  def take(expected=None):
    nonlocal at
    kind, value = tokens[at]
    assert expected is None or value == expected, (expected, tokens[at:])
    at += 1
    return kind, value

  def binary(operators, operand):
    def parse():
      left = operand()
      while peek() in operators:
        _, op = take()
        left = (op, left, operand())
      return left
    return parse

  def unary():
    if peek() == '!':
      take()
      return ('!', unary())
    return postfix()

  def postfix():
    node = primary()
    while peek() in ('.', '['):
      if take()[1] == '.':
        node = ('attr', node, take()[1])
      else:
        node = ('index', node, expression())
        take(']')
    return node

  def primary():
    if peek() == '(':
      take('(')
      node = expression()
      take(')')
      return node
    kind, value = take()
    assert kind in ('name', 'number', 'string'), (kind, value)
    return (kind, value)

  comparison = binary(('==', '!=', '<', '<=', '>', '>='), unary)
  expression = binary(('||',), binary(('&&',), comparison))
  tree = expression()
  assert at == len(tokens), f'left over: {tokens[at:]}'
  return tree


def _input_artifacts(tree):
  """The keys KEY of every inputs.artifacts[KEY] in a parsed condition."""
  if not isinstance(tree, tuple):
    return []
  if tree[:2] == ('index', ('attr', ('name', 'inputs'), 'artifacts')):
    return [tree[2][1]]
  return [key for part in tree[1:] for key in _input_artifacts(part)]


def test_tasks_that_read_outside_their_inputs_are_never_cached(compiled):
  """ServedBaseline reads what is served, CsvExampleGen a file its
  parameters only name (open-source KFP's cache key): neither is cached;
  every other task keeps the pipeline's setting."""
  spec, job, _ = compiled
  uncached = {pipeline_def.BASELINE, pipeline_def.EXAMPLE_GEN}
  for tasks in (spec['root']['dag']['tasks'],
                job['pipelineSpec']['root']['dag']['tasks']):
    assert {task: body['cachingOptions'].get('enableCache', False)
            for task, body in tasks.items()} == {
                task: task not in uncached for task in tasks}


def test_data_gate_condition_is_one_integer(compiled):
  spec, _, _ = compiled
  tasks = spec['root']['dag']['tasks']
  gated = {task for task, body in tasks.items() if 'triggerPolicy' in body}
  assert gated == {pipeline_def.TRANSFORM, pipeline_def.TRAINER,
                   pipeline_def.BASELINE, pipeline_def.EVALUATOR,
                   pipeline_def.PUSHER}
  for node in sorted(gated):
    condition = _parse(tasks[node]['triggerPolicy']['condition'])
    # The input artifact the condition reads is the validator's anomalies.
    (key,) = set(_input_artifacts(condition))
    assert tasks[node]['inputs']['artifacts'][key] == {'taskOutputArtifact': {
        'producerTask': pipeline_def.EXAMPLE_VALIDATOR,
        'outputArtifactKey': 'anomalies'}}
    assert condition == _parse(
        f"inputs.artifacts['{key}'].artifacts[0].metadata['data_ok'] == 1"
    ), condition


def test_condition_parser_tells_expressions_apart():
  same = _parse("((a.b['x'] == 1.0) && (a.b['y'] == 1))")
  assert same == _parse("a . b [ 'x' ] == 1 && a.b[\"y\"] == 1.0")
  for different in ("a.b['x'] == 1 || a.b['y'] == 1",
                    "a.b['x'] == 1 && a.b['x'] == 1",
                    "a.b['y'] == 1 && a.b['x'] == 1",
                    "a.b['x'] != 1 && a.b['y'] == 1",
                    "a.b['x'] == 0 && a.b['y'] == 1",
                    "a.c['x'] == 1 && a.b['y'] == 1",
                    "a.b['x'] == 1"):
    assert _parse(different) != same, different


def test_image_beam_profile_paths_and_module_code(compiled):
  spec, _, _ = compiled
  executors = spec['deploymentSpec']['executors']
  assert {e['container']['image'] for e in executors.values()} == {IMAGE}
  assert {tuple(e['container']['command']) for e in executors.values()} == {
      ('python', '-m', 'tfx_e2e.pipeline.kubeflow_container')}
  beam = {'CsvExampleGen', 'StatisticsGen', 'Transform', 'Evaluator'}
  for label, executor in executors.items():
    args = executor['container']['args']
    node = label[:-len('_executor')]
    size = getattr(PipelineConfig().kubeflow.pods,
                   pipeline_def.POD_SIZES[node])
    assert executor['container']['resources'] == {
        'cpuRequest': size.cpu, 'cpuLimit': size.cpu,
        'memoryRequest': pytest.approx(size.memory_gib * 1.073741824,
                                       abs=1e-3),
        'memoryLimit': pytest.approx(size.memory_gib * 1.073741824,
                                     abs=1e-3)}, label
    beam_args = [a for a in args if a.startswith('--direct_')]
    if node in beam:
      # As many Beam workers as the pod has cores, not the node's.
      assert beam_args == ['--direct_running_mode=multi_processing',
                           f'--direct_num_workers={int(size.cpu)}'], label
    else:
      assert beam_args == [], label
  text = yaml.safe_dump(spec)
  assert 'tfx_e2e.components.preprocessing.preprocessing_fn' in text
  assert 'tfx_e2e.components.model.run_fn' in text
  assert 'gs://bucket/data' in text
  assert 'gs://bucket/serving/taxi_fare' in text  # the Pusher's destination


def test_vertex_job_wraps_the_same_spec(compiled):
  spec, job, _ = compiled
  assert set(job['pipelineSpec']['root']['dag']['tasks']) == set(
      spec['root']['dag']['tasks'])
  assert job['pipelineSpec']['deploymentSpec'] == spec['deploymentSpec']
  assert job['runtimeConfig']['gcsOutputDirectory'] == 'gs://bucket/root'


def test_default_root_and_volume_of_an_open_source_install(compiled):
  """The defaults: KFP's MinIO root in the spec, the claim mounted where
  the data and the served models are read or written, and only there."""
  spec, _, out = compiled
  assert spec['defaultPipelineRoot'] == 'gs://bucket/root'
  assert len(_documents(out / 'pipeline.yaml')) == 1  # GCS: no volume
  default, platform = _documents(out / 'default.yaml')
  assert default['defaultPipelineRoot'] == 'minio://mlpipeline/v2/artifacts'
  mounts = platform['platforms']['kubernetes']['deploymentSpec']['executors']
  assert mounts == {f'{node}_executor': {'pvcMount': [
      {'constant': 'tfx-e2e', 'mountPath': '/mnt/tfx-e2e'}]}
                    for node in ('CsvExampleGen', 'ServedBaseline', 'Pusher')}
  text = yaml.safe_dump(default)
  assert "'/mnt/tfx-e2e/data'" in text or '/mnt/tfx-e2e/data' in text
  assert '/mnt/tfx-e2e/serving/taxi_fare' in text
  trainer = default['deploymentSpec']['executors']['Trainer_executor']
  assert trainer['container']['resources']['cpuLimit'] == 3.0
  assert trainer['container']['resources']['memoryLimit'] == pytest.approx(
      6 * 1.073741824, abs=1e-3)


@pytest.mark.parametrize('target, settings, refused', [
    ('kubeflow', {'pipeline_root': '/data/root'}, 'pipeline_root'),
    ('kubeflow', {'pipeline_root': 'hdfs://x/root'}, 'pipeline_root'),
    ('vertex', {'pipeline_root': 'minio://mlpipeline/v2/artifacts'},
     'pipeline_root'),
    ('kubeflow', {'data_path': 's3://bucket/data'}, 'data_path'),
    ('kubeflow', {'serving_base': 'minio://mlpipeline/serving'},
     'serving_base'),
    ('kubeflow', {'data_path': '/elsewhere/data'}, 'data_path'),
    ('kubeflow', {'volume_claim': ''}, 'data_path'),
    ('vertex', {'pipeline_root': 'gs://b/r', 'data_path': 'gs://b/d'},
     'serving_base'),
    # A sibling of the mount path is not under it.
    ('kubeflow', {'serving_base': '/mnt/tfx-e2e-other/serving'},
     'serving_base'),
])
def test_storage_the_pods_cannot_use_is_refused(target, settings, refused):
  config = PipelineConfig()
  config = dataclasses.replace(config, kubeflow=dataclasses.replace(
      config.kubeflow, **settings))
  with pytest.raises(ConfigError, match=f'kubeflow.{refused} '):
    kubeflow.check_storage(config, target)


@pytest.mark.parametrize('target, settings', [
    ('kubeflow', {}),
    ('kubeflow', {'pipeline_root': 's3://bucket/root'}),
    ('kubeflow', {'pipeline_root': 'gs://b/r', 'data_path': 'gs://b/d',
                  'serving_base': 'gs://b/s', 'volume_claim': ''}),
    ('vertex', {'pipeline_root': 'gs://b/r', 'data_path': 'gs://b/d',
                'serving_base': 'gs://b/s'}),
])
def test_storage_the_pods_can_use_is_taken(target, settings):
  config = PipelineConfig()
  kubeflow.check_storage(dataclasses.replace(config, kubeflow=dataclasses
                                             .replace(config.kubeflow,
                                                      **settings)), target)


def test_a_curated_schema_travels_in_the_spec(tmp_path):
  """The schema's text, not the path on the compiling machine."""
  taxi_schema = tmp_path / 'curated' / 'schema.pbtxt'
  taxi_schema.parent.mkdir()
  taxi_schema.write_text('feature { name: "fare" type: FLOAT }\n'
                         'feature { name: "company" type: BYTES }\n')
  out = tmp_path / 'p.yaml'
  result = run_cli(['compile', '--target', 'kubeflow', '--output', str(out),
                    '--set', f'data.schema={taxi_schema}'])
  assert result.exit_code == 0, result.stderr
  spec = _documents(out)[0]
  assert str(taxi_schema) not in out.read_text()
  (text,) = [parameter['runtimeValue']['constant']
             for parameter in spec['root']['dag']['tasks']['SchemaGen'][
                 'inputs']['parameters'].values()]
  assert text_format.Parse(text, schema_pb2.Schema()) == text_format.Parse(
      taxi_schema.read_text(), schema_pb2.Schema())


def test_compile_refuses_storage_the_pods_cannot_use(tmp_path):
  out = tmp_path / 'p.yaml'
  result = run_cli(['compile', '--target', 'kubeflow', '--output', str(out),
                    '--set', 'kubeflow.pipeline_root=/data/root'])
  assert result.exit_code == 2
  assert 'kubeflow.pipeline_root' in result.stderr
  assert 'gs://, minio://, s3://' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not out.exists()


def test_wrong_file_suffix_is_refused(tmp_path):
  result = run_cli(['compile', '--target', 'kubeflow', '--output',
                    str(tmp_path / 'p.json')])
  assert result.exit_code == 2
  assert 'must end in .yaml or .yml' in result.stderr


class _RecordingKfp(http.server.BaseHTTPRequestHandler):
  """Answers the KFP v2beta1 API calls the client makes, and records them."""
  requests = []

  def _answer(self):
    length = int(self.headers.get('Content-Length') or 0)
    body = self.rfile.read(length) if length else b''
    self.requests.append((self.command, self.path, body))
    if self.path.startswith('/apis/v2beta1/experiments') and \
        self.command == 'GET':
      payload = {'experiments': []}
    elif self.path.startswith('/apis/v2beta1/experiments'):
      payload = {'experiment_id': 'exp-1', 'display_name': 'tfx-e2e-test'}
    elif self.path.startswith('/apis/v2beta1/runs'):
      payload = {'run_id': 'run-1', 'display_name': 'nightly',
                 'experiment_id': 'exp-1'}
    else:
      payload = {}
    data = json.dumps(payload).encode()
    self.send_response(200)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  do_GET = do_POST = _answer

  def log_message(self, *args):
    pass


def test_submit_uploads_and_starts_a_run(compiled):
  _, _, out = compiled
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _RecordingKfp)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    result = run_cli(['submit', '--host',
                      f'http://127.0.0.1:{server.server_port}',
                      '--experiment', 'tfx-e2e-test', '--run-name', 'nightly',
                      '--file', str(out / 'pipeline.yaml'), *OVERRIDES])
  finally:
    server.shutdown()
  assert result.exit_code == 0, result.stderr
  assert 'Started run run-1' in result.stdout
  posts = [(path, json.loads(body)) for method, path, body
           in _RecordingKfp.requests if method == 'POST']
  experiment = next(b for p, b in posts if p.startswith(
      '/apis/v2beta1/experiments'))
  assert experiment['display_name'] == 'tfx-e2e-test'
  run = next(b for p, b in posts if p.startswith('/apis/v2beta1/runs'))
  assert run['display_name'] == 'nightly'
  assert run['experiment_id'] == 'exp-1'
  assert run['runtime_config']['pipeline_root'] == 'gs://bucket/root'
  # The compiled pipeline travels in the run request.
  assert run['pipeline_spec']['pipelineInfo']['name'] == 'taxi-fare'
  assert run['pipeline_spec']['defaultPipelineRoot'] == 'gs://bucket/root'
  assert set(run['pipeline_spec']['root']['dag']['tasks']) >= {
      'CsvExampleGen', 'Trainer', 'Pusher'}


# Open-source KFP's cache key (backend/src/v2/driver/cache.go getFingerPrint,
# cacheutils.GenerateCacheKey) is a task's input parameters, the names of its
# input artifacts, its output specs, command, arguments, image and PVC names:
# nothing of the content of a file the task reads from a volume or a bucket.


def _config(*overrides):
  return load_config(overrides=parse_overrides(list(overrides)))


@pytest.fixture(scope='module')
def default_spec(tmp_path_factory):
  """The default configuration compiled for open-source KFP."""
  config = _config()
  path = kubeflow.compile_pipeline(
      config, 'kubeflow',
      str(tmp_path_factory.mktemp('review') / 'pipeline.yaml'))
  return config, path


def _task_caching(pipeline_spec: dict) -> dict:
  return {name: task.get('cachingOptions', {}).get('enableCache', False)
          for name, task in pipeline_spec['root']['dag']['tasks'].items()}


def test_submit_keeps_the_served_baseline_uncached(default_spec):
  config, path = default_spec
  import kfp  # pylint: disable=import-outside-toplevel
  assert not _task_caching(_load_spec(path))[pipeline_def.BASELINE]
  # What kfp.Client.create_run_from_pipeline_package sends, with the
  # arguments kubeflow.submit gives it (no server needed to build it).
  job = kfp.Client._create_job_config(  # pylint: disable=protected-access
      None, params={}, pipeline_package_path=str(path), pipeline_id=None,
      version_id=None, **kubeflow.run_settings(config, str(path)))
  spec = job.pipeline_spec.get('pipeline_spec', job.pipeline_spec)
  assert not _task_caching(spec)[pipeline_def.BASELINE]


def _load_spec(path) -> dict:
  import yaml  # pylint: disable=import-outside-toplevel
  return next(yaml.safe_load_all(path.read_text()))


def test_example_gen_is_not_cached_on_its_parameters_alone(default_spec):
  _, path = default_spec
  spec = _load_spec(path)
  task = spec['root']['dag']['tasks'][pipeline_def.EXAMPLE_GEN]
  options = task.get('cachingOptions', {})
  # Either no cache, or a key that changes with the data (a cache key).
  assert not options.get('enableCache') or options.get('cacheKey')


def test_storage_refuses_a_data_path_that_leaves_the_mount():
  config = _config('kubeflow.data_path=/mnt/tfx-e2e/../etc/data')
  with pytest.raises(ConfigError):
    kubeflow.check_storage(config, 'kubeflow')


def test_storage_refuses_a_relative_mount_path():
  config = _config('kubeflow.volume_mount_path=mnt/tfx-e2e',
                   'kubeflow.data_path=mnt/tfx-e2e/data',
                   'kubeflow.serving_base=mnt/tfx-e2e/serving')
  with pytest.raises(ConfigError):
    kubeflow.check_storage(config, 'kubeflow')


def test_storage_accepts_the_defaults_and_gcs():
  kubeflow.check_storage(_config(), 'kubeflow')
  kubeflow.check_storage(_config(
      'kubeflow.pipeline_root=gs://b/root', 'kubeflow.data_path=gs://b/data',
      'kubeflow.serving_base=gs://b/serving', 'kubeflow.volume_claim='),
                         'vertex')


def test_submit_takes_the_root_the_file_was_compiled_with(tmp_path):
  """Compiled for a bucket, submitted with the default configuration (as
  the README's procedure does): the run's root is the bucket, not MinIO."""
  for_bucket = _config('kubeflow.pipeline_root=gs://bucket/root')
  path = kubeflow.compile_pipeline(for_bucket, 'kubeflow',
                                   str(tmp_path / 'p.yaml'))
  settings = kubeflow.run_settings(_config(), str(path))
  assert settings['pipeline_root'] == 'gs://bucket/root'
  assert settings['enable_caching'] is None  # the compiled task settings
  assert kubeflow.run_settings(_config('enable_cache=false'), str(path))[
      'enable_caching'] is False


@pytest.mark.parametrize('settings', [
    ['kubeflow.pipeline_root=gs://'],
    ['kubeflow.serving_base=gs://'],
    ['kubeflow.volume_claim=My_Claim'],
    ['kubeflow.volume_mount_path=/tmp', 'kubeflow.data_path=/tmp/vol/d',
     'kubeflow.serving_base=/tmp/vol/s'],
    ['kubeflow.volume_mount_path=/tmp/kfp/vol',
     'kubeflow.data_path=/tmp/kfp/vol/d',
     'kubeflow.serving_base=/tmp/kfp/vol/s'],
    ['kubeflow.volume_mount_path=/minio', 'kubeflow.data_path=/minio/d',
     'kubeflow.serving_base=/minio/s'],
    ['kubeflow.volume_mount_path=/', 'kubeflow.data_path=/d',
     'kubeflow.serving_base=/s'],
])
def test_storage_that_cannot_work_is_refused(settings):
  with pytest.raises(ConfigError):
    kubeflow.check_storage(_config(*settings), 'kubeflow')
