"""TF Serving's REST API (api_rest.md) on tornado.

GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature defs
POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    instances|inputs
POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress    examples
POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify   examples

Errors are `{"error": "..."}` with TF Serving's HTTP status for the code.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Dict, List

import numpy as np
import orjson
import tensorflow as tf
import tornado.web

from serving import api
from serving.errors import Code, ServingError

_PATH = re.compile(
    r'/v1/models/(?P<name>[^/:]+)'
    r'(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?'
    r'(?:(?P<metadata>/metadata)|:(?P<method>predict|regress|classify))?',
    re.IGNORECASE)


def _json_value(array: np.ndarray, name: str):
  if array.dtype == object:
    if name.endswith('_bytes'):
      return [{'b64': base64.b64encode(v).decode()} for v in array.ravel()
              ] if array.ndim else {'b64': base64.b64encode(array.item())
                                    .decode()}
    decode = np.vectorize(lambda v: v.decode('utf-8', 'replace')
                          if isinstance(v, bytes) else v, otypes=[object])
    return decode(array).tolist()
  return array.tolist()


# Deeper JSON than any tensor needs; the limit keeps the decoding of values
# (recursive, as in TF Serving) within Python's stack.
MAX_JSON_DEPTH = 64


def _check_depth(value: Any) -> None:
  """ServingError if lists/objects nest deeper than MAX_JSON_DEPTH."""
  # Level by level, keeping only the containers: a request of many rows is
  # thousands of scalars, each looked at once.
  level, depth = [value], 1
  while level:
    if depth > MAX_JSON_DEPTH:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f'JSON nested deeper than {MAX_JSON_DEPTH} levels')
    containers = []
    for node in level:
      children = node.values() if type(node) is dict else node
      containers += [c for c in children if type(c) is list or type(c) is dict]
    level, depth = containers, depth + 1


# Request bodies up to this size (a few rows) run on the event loop: their
# work takes less time than the hop to a worker thread and back (~0.2 ms).
INLINE_MAX_BODY_BYTES = 4096


def _rows_from_instances(instances: List[Any], input_names: List[str]
                         ) -> Dict[str, list]:
  """Row format -> one column per input."""
  if not isinstance(instances, list) or not instances:
    raise ServingError(Code.INVALID_ARGUMENT,
                       "'instances' must be a non-empty JSON list")
  if all(isinstance(i, dict) and not api.is_b64(i) for i in instances):
    keys = list(instances[0])
    key_set = instances[0].keys()
    for index, instance in enumerate(instances):
      if instance.keys() != key_set:
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f'Failed to process element: {index} of \'instances\' list. '
            f'JSON object: {orjson.dumps(instance).decode()} keys '
            f'{sorted(instance)} differ from the first element\'s '
            f'{sorted(keys)}')
    return {key: [instance[key] for instance in instances] for key in keys}
  if any(isinstance(i, dict) and not api.is_b64(i) for i in instances):
    raise ServingError(Code.INVALID_ARGUMENT,
                       "'instances' mixes JSON objects and plain values")
  if len(input_names) != 1:
    raise ServingError(
        Code.INVALID_ARGUMENT,
        'Expecting JSON objects (one key per input) in \'instances\': the '
        f'signature has {len(input_names)} inputs')
  return {input_names[0]: instances}


@tornado.web.stream_request_body
class ModelHandler(tornado.web.RequestHandler):
  """Every /v1/models route; `max_body_bytes` is enforced while reading."""

  def initialize(self, service: api.ModelService, max_body_bytes: int):
    self.service = service
    self.max_body_bytes = max_body_bytes
    self._chunks: List[bytes] = []
    self._received = 0

  def prepare(self):
    declared = self.request.headers.get('Content-Length', '')
    if declared.isdigit() and int(declared) > self.max_body_bytes:
      self._too_large(int(declared))

  def data_received(self, chunk: bytes):
    self._received += len(chunk)
    if self._received > self.max_body_bytes:
      self._too_large(self._received)
    else:
      self._chunks.append(chunk)

  def _too_large(self, size: int) -> None:
    # The rest of the body is not read, so this connection cannot carry
    # another request: say so, or a keep-alive client would reuse it.
    self.set_header('Connection', 'close')
    self._reply({'error': f'Request body of {size} bytes is larger than the '
                          f'limit of {self.max_body_bytes} bytes'}, 413)
    self.request.connection.close()

  def set_default_headers(self):
    self.set_header('Content-Type', 'application/json')

  def _reply(self, payload, status: int = 200) -> None:
    self.set_status(status)
    self.finish(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))

  def _error(self, error: ServingError) -> None:
    self._reply({'error': error.message}, error.code.http_status)

  def write_error(self, status_code, **kwargs):
    self.finish(orjson.dumps({'error': self._reason}))

  def _route(self, method: str):
    match = _PATH.fullmatch(self.request.path)
    if not match or (method == 'GET') != (match['method'] is None):
      raise ServingError(
          Code.INVALID_ARGUMENT,
          f'Malformed request: {method} {self.request.path}')
    version = None
    if match['version'] is not None:
      if not match['version'].isdigit():
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f'Failed to convert version: {match["version"]} to numeric.')
      version = int(match['version'])
    return match, version

  def get(self, *_):
    try:
      match, version = self._route('GET')
      if match['metadata']:
        self._reply(self.service.metadata_json(
            match['name'], version, match['label']))
      else:
        self._reply(self.service.status_json(match['name'], version,
                                             match['label']))
    except ServingError as e:
      self._error(e)

  async def post(self, *_):
    try:
      match, version = self._route('POST')
      body = self._json_body()
      servable = self.service.models.servable(match['name'], version,
                                              match['label'])
      signature_name = body.get('signature_name', '')
      if not isinstance(signature_name, str):
        raise ServingError(Code.INVALID_ARGUMENT,
                           "'signature_name' must be a string")
      method = match['method'].lower()
      handler = {'predict': self._predict, 'regress': self._regress,
                 'classify': self._classify}[method]
      if (not self.service.inference.batching and
          self._received <= INLINE_MAX_BODY_BYTES):
        result = handler(servable, signature_name, body)
      else:
        # Off the event loop: TensorFlow releases the GIL while it computes,
        # so the loop parses the next requests meanwhile (and batching
        # waits for rows from other requests).
        result = await tornado.ioloop.IOLoop.current().run_in_executor(
            None, handler, servable, signature_name, body)
      self._reply(result)
    except ServingError as e:
      self._error(e)

  def _json_body(self) -> Dict[str, Any]:
    data = b''.join(self._chunks)
    try:
      body = orjson.loads(data)
    except orjson.JSONDecodeError as e:
      try:  # NaN and Infinity literals, which TF Serving's parser accepts
        body = json.loads(data)
      except (ValueError, RecursionError):  # also nesting deeper than 1,024
        raise ServingError(Code.INVALID_ARGUMENT,
                           f'JSON Parse error: {e}') from None
    if not isinstance(body, dict):
      raise ServingError(Code.INVALID_ARGUMENT,
                         'The request body must be a JSON object')
    _check_depth(body)
    return body

  def _predict(self, servable, signature_name, body):
    has_instances, has_inputs = 'instances' in body, 'inputs' in body
    if has_instances == has_inputs:
      raise ServingError(
          Code.INVALID_ARGUMENT,
          'Missing \'inputs\' or \'instances\' key' if not has_instances else
          'Not formatted correctly expecting only one of \'inputs\' or '
          '\'instances\' keys to exist')
    _, function = servable.signature(signature_name)
    input_names = list(function.input_dtypes)
    if has_instances:
      columns = _rows_from_instances(body['instances'], input_names)
    elif isinstance(body['inputs'], dict) and not api.is_b64(body['inputs']):
      columns = body['inputs']
    elif len(input_names) == 1:
      columns = {input_names[0]: body['inputs']}
    else:
      raise ServingError(
          Code.INVALID_ARGUMENT,
          "'inputs' must be a JSON object with one key per input: the "
          f'signature has {len(input_names)} inputs')
    inputs = {name: api.decode_strings(value)
              if function.input_dtypes.get(name) == tf.string else value
              for name, value in columns.items()}
    outputs = self.service.inference.predict(servable, signature_name, inputs)
    return api.predict_json(outputs, row_format=has_instances,
                            to_json=_json_value)

  def _examples(self, body) -> List[bytes]:
    examples = body.get('examples')
    if not isinstance(examples, list):
      raise ServingError(Code.INVALID_ARGUMENT,
                         "'examples' must be a JSON list of objects")
    context = body.get('context') or {}
    if not isinstance(context, dict):
      raise ServingError(Code.INVALID_ARGUMENT, "'context' must be an object")
    serialized = []
    for index, example in enumerate(examples):
      if not isinstance(example, dict):
        raise ServingError(Code.INVALID_ARGUMENT,
                           f'examples[{index}] must be a JSON object')
      shared = set(example) & set(context)
      if shared:
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f'Feature(s) {sorted(shared)} of examples[{index}] also appear '
            'in context')
      serialized.append(api.example_from_features(
          {**context, **example}, f'examples[{index}]').SerializeToString())
    return serialized

  def _regress(self, servable, signature_name, body):
    return {'results': self.service.inference.regress(
        servable, signature_name, self._examples(body))}

  def _classify(self, servable, signature_name, body):
    return {'results': [[[label, score] for label, score in row]
                        for row in self.service.inference.classify(
                            servable, signature_name, self._examples(body))]}


class NotFoundHandler(tornado.web.RequestHandler):
  """Anything outside /v1/models: TF Serving's 'Malformed request'."""

  def prepare(self):
    self.set_header('Content-Type', 'application/json')
    self.set_status(404)
    self.finish(orjson.dumps({'error': f'Malformed request: '
                              f'{self.request.method} {self.request.path}'}))


def make_app(service: api.ModelService, max_body_bytes: int
             ) -> tornado.web.Application:
  return tornado.web.Application([
      (r'/v1/models/.*', ModelHandler,
       {'service': service, 'max_body_bytes': max_body_bytes}),
      (r'.*', NotFoundHandler),
  ])
