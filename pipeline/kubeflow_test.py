"""The same pipeline compiled for Kubeflow Pipelines v2 and Vertex AI, and
submitted with the kfp client. No Kubeflow cluster is available here: the
submit test records what the client sends to an HTTP server on loopback."""

import http.server
import json
import re
import threading

import pytest
from tfx.dsl.compiler import compiler
import yaml

from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline.config import load_config
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


def _node_id(task: str) -> str:
  # KFP splits the Resolver into one task per resolved channel.
  return (pipeline_def.RESOLVER if task.startswith(pipeline_def.RESOLVER)
          else task)


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  out = tmp_path_factory.mktemp('kfp')
  for target, name in (('kubeflow', 'pipeline.yaml'),
                       ('vertex', 'pipeline.json')):
    result = run_cli(['compile', '--target', target, '--output',
                      str(out / name), *OVERRIDES])
    assert result.exit_code == 0, result.stderr
  return (yaml.safe_load((out / 'pipeline.yaml').read_text()),
          json.loads((out / 'pipeline.json').read_text()), out)


def test_kubeflow_spec_matches_the_local_pipeline(compiled):
  spec, _, _ = compiled
  assert spec['schemaVersion'] == '2.0.0'
  assert spec['pipelineInfo']['name'] == 'taxi-fare'
  tasks = spec['root']['dag']['tasks']
  local_nodes = {n for edge in _local_edges() for n in edge}
  assert {_node_id(t) for t in tasks} == local_nodes
  assert len(tasks) == len(local_nodes) + 1  # the Resolver's two channels
  compiled_edges = {(_node_id(up), _node_id(task))
                    for task, body in tasks.items()
                    for up in body.get('dependentTasks', [])}
  # KFP compiles the Resolver into lookup tasks outside the data gate's
  # condition: they only find the latest blessed model, and everything that
  # uses it (Evaluator) is still gated.
  gate_on_resolver = (pipeline_def.EXAMPLE_VALIDATOR, pipeline_def.RESOLVER)
  assert compiled_edges == _local_edges() - {gate_on_resolver}


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


def test_data_gate_condition_is_both_splits_blessed(compiled):
  spec, _, _ = compiled
  tasks = spec['root']['dag']['tasks']
  gated = {task for task, body in tasks.items() if 'triggerPolicy' in body}
  assert gated == {pipeline_def.TRANSFORM, pipeline_def.TRAINER,
                   pipeline_def.EVALUATOR, pipeline_def.PUSHER}
  for node in sorted(gated):
    condition = _parse(tasks[node]['triggerPolicy']['condition'])
    # The input artifact the condition reads is the validator's anomalies.
    (key,) = set(_input_artifacts(condition))
    assert tasks[node]['inputs']['artifacts'][key] == {'taskOutputArtifact': {
        'producerTask': pipeline_def.EXAMPLE_VALIDATOR,
        'outputArtifactKey': 'anomalies'}}
    blessed = (f"inputs.artifacts['{key}'].artifacts[0]"
               ".metadata['blessed']")
    assert condition == _parse(f"({blessed}['train'] == 1) && "
                               f"({blessed}['eval'] == 1)"), condition


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
  assert {e['container']['image'] for e in executors.values()
          if 'container' in e} == {IMAGE}
  for node in ('CsvExampleGen', 'StatisticsGen', 'Transform', 'Evaluator'):
    args = executors[f'{node}_executor']['container']['args']
    assert '--direct_running_mode=multi_processing' in args
    assert '--direct_num_workers=0' in args
  text = yaml.safe_dump(spec)
  assert 'tfx_e2e.components.preprocessing.preprocessing_fn' in text
  assert 'tfx_e2e.components.model.run_fn' in text
  assert 'gs://bucket/data' in text
  assert 'gs://bucket/serving/taxi_fare' in text  # the Pusher's destination


def test_vertex_job_wraps_the_same_spec(compiled):
  spec, job, _ = compiled
  assert set(job['pipelineSpec']['root']['dag']['tasks']) == set(
      spec['root']['dag']['tasks'])
  assert job['runtimeConfig']['gcsOutputDirectory'] == 'gs://bucket/root'


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
  assert set(run['pipeline_spec']['root']['dag']['tasks']) >= {
      'CsvExampleGen', 'Trainer', 'Pusher'}
