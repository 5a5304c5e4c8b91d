"""TF Serving's REST API (api_rest.md) on tornado's HTTP server.

GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature defs
POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    instances|inputs
POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress    examples
POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify   examples

Errors are `{"error": "..."}` with TF Serving's HTTP status for the code.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import operator
import re
from typing import Any, Dict, List, Tuple

import numpy as np
import orjson
import tensorflow as tf
from tornado import httputil

from tfx_e2e.serving import api
from tfx_e2e.serving.errors import Code, ServingError

_log = logging.getLogger(__name__)

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


_CONTAINERS = frozenset((list, dict))


def _check_depth(value: Any) -> None:
  """ServingError if lists/objects nest deeper than MAX_JSON_DEPTH.

  Applied to each input's values (and to examples) before they are decoded:
  nothing else in a request is descended into.
  """
  # Level by level, keeping only the containers; a node's children are
  # looked through at C speed (map), as a column of many rows is thousands
  # of scalars.
  level, depth = [value] if type(value) in _CONTAINERS else [], 1
  while level:
    if depth > MAX_JSON_DEPTH:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f'JSON nested deeper than {MAX_JSON_DEPTH} levels')
    containers = []
    for node in level:
      children = node.values() if type(node) is dict else node
      if not _CONTAINERS.isdisjoint(map(type, children)):
        containers += [c for c in children if type(c) in _CONTAINERS]
    level, depth = containers, depth + 1


# Request bodies up to this size (a few rows) may run on the event loop.
INLINE_MAX_BODY_BYTES = 4096


def _rows_from_instances(instances: List[Any], input_names: List[str]
                         ) -> Dict[str, list]:
  """Row format -> one column per input."""
  if not isinstance(instances, list) or not instances:
    raise ServingError(Code.INVALID_ARGUMENT,
                       "'instances' must be a non-empty JSON list")
  first = instances[0]
  if set(map(type, instances)) == {dict} and not api.is_b64(first):
    keys, key_set = list(first), first.keys()
    if not all(map(key_set.__eq__, map(dict.keys, instances))):
      index, instance = next((i, instance) for i, instance in
                             enumerate(instances) if instance.keys() != key_set)
      _check_depth(instance)  # before it is quoted back
      raise ServingError(
          Code.INVALID_ARGUMENT,
          f'Failed to process element: {index} of \'instances\' list. '
          f'JSON object: {orjson.dumps(instance).decode()} keys '
          f'{sorted(instance)} differ from the first element\'s '
          f'{sorted(keys)}')
    if len(keys) < 2:  # itemgetter of one key gives values, not tuples
      return {key: [instance[key] for instance in instances] for key in keys}
    # Rows to columns by map and zip: a third of the loops' time.
    return dict(zip(keys, map(list, zip(*map(operator.itemgetter(*keys),
                                             instances)))))
  if any(isinstance(i, dict) and not api.is_b64(i) for i in instances):
    raise ServingError(Code.INVALID_ARGUMENT,
                       "'instances' mixes JSON objects and plain values")
  if len(input_names) != 1:
    raise ServingError(
        Code.INVALID_ARGUMENT,
        'Expecting JSON objects (one key per input) in \'instances\': the '
        f'signature has {len(input_names)} inputs')
  return {input_names[0]: instances}


class RestApi:
  """The API apart from HTTP: a method, a path and a body in; an HTTP status
  and a JSON body out."""

  def __init__(self, service: api.ModelService):
    self.service = service

  def runs_inline(self, method: str, body_bytes: int) -> bool:
    """Whether a request is answered on the event loop, not a worker thread.

    Status, metadata and small predictions take less time than the hop to a
    worker thread and back (~0.2 ms). The rest run on worker threads:
    TensorFlow releases the GIL while it computes, so the loop parses the
    next requests meanwhile, and batching waits for rows from other
    requests.
    """
    return method != 'POST' or (not self.service.inference.batching and
                                body_bytes <= INLINE_MAX_BODY_BYTES)

  def answer(self, method: str, path: str, body: bytes) -> Tuple[int, bytes]:
    try:
      payload, status = self._dispatch(method, path, body), 200
    except ServingError as e:
      payload, status = {'error': e.message}, e.code.http_status
    except Exception:  # pylint: disable=broad-except
      # A bug, not a bad request: the traceback goes to the log, and the
      # client gets TF Serving's form of an internal error.
      _log.exception('%s %s', method, path)
      payload, status = {'error': 'Internal server error'}, 500
    return status, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)

  def _dispatch(self, method: str, path: str, body: bytes):
    if not path.startswith('/v1/models/'):
      raise ServingError(Code.NOT_FOUND,
                         f'Malformed request: {method} {path}')
    match = _PATH.fullmatch(path)
    if (not match or method not in ('GET', 'POST') or
        (method == 'GET') != (match['method'] is None)):
      raise ServingError(Code.INVALID_ARGUMENT,
                         f'Malformed request: {method} {path}')
    version = None
    if match['version'] is not None:
      if not match['version'].isdigit():
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f'Failed to convert version: {match["version"]} to numeric.')
      version = int(match['version'])
    if method == 'GET':
      if match['metadata']:
        return self.service.metadata_json(match['name'], version,
                                          match['label'])
      return self.service.status_json(match['name'], version, match['label'])
    request = self._json_body(body)
    servable = self.service.models.servable(match['name'], version,
                                            match['label'])
    signature_name = request.get('signature_name', '')
    if not isinstance(signature_name, str):
      raise ServingError(Code.INVALID_ARGUMENT,
                         "'signature_name' must be a string")
    handler = {'predict': self._predict, 'regress': self._regress,
               'classify': self._classify}[match['method'].lower()]
    return handler(servable, signature_name, request)

  @staticmethod
  def _json_body(data: bytes) -> Dict[str, Any]:
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
    for value in columns.values():
      _check_depth(value)
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
    _check_depth(examples)
    _check_depth(context)
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


class RestServer(httputil.HTTPServerConnectionDelegate):
  """The API over tornado's HTTP/1.1 server.

  tornado parses HTTP and enforces the header size limit; this enforces the
  body size limit while reading, and one deadline per request: from the
  moment the connection can take a request until its body is in. Slow
  clients, clients that never finish their body and idle connections are
  all cut off by it.

  tornado's own RequestHandler layer and its per-read timeouts are left out:
  together they cost ~0.1 ms a request, a tenth of a one-row prediction.
  """

  def __init__(self, service: api.ModelService, max_body_bytes: int,
               request_timeout_seconds: float):
    self.api = RestApi(service)
    self.max_body_bytes = max_body_bytes
    self.request_timeout_seconds = request_timeout_seconds

  def start_request(self, server_conn, request_conn):
    return _Exchange(self, request_conn)


class _Exchange(httputil.HTTPMessageDelegate):
  """One request and its reply."""

  def __init__(self, server: RestServer, connection):
    self._server = server
    self._connection = connection
    self._loop = asyncio.get_running_loop()
    self._deadline = self._loop.call_later(server.request_timeout_seconds,
                                           connection.close)
    self._method = self._path = ''
    self._chunks: List[bytes] = []
    self._received = 0
    self._closed = False  # nothing more to read or to answer

  def headers_received(self, start_line, headers):
    self._method = start_line.method
    self._path = start_line.path.partition('?')[0]
    declared = headers.get('Content-Length', '')
    if declared.isdigit() and int(declared) > self._server.max_body_bytes:
      self._too_large(int(declared))

  def data_received(self, chunk: bytes):
    if self._closed:
      return
    self._received += len(chunk)
    if self._received > self._server.max_body_bytes:
      self._too_large(self._received)
    else:
      self._chunks.append(chunk)

  def finish(self):
    self._deadline.cancel()
    if self._closed:
      return
    rest_api, body = self._server.api, b''.join(self._chunks)
    if rest_api.runs_inline(self._method, len(body)):
      self._reply(*rest_api.answer(self._method, self._path, body))
    else:
      self._loop.run_in_executor(
          None, rest_api.answer, self._method, self._path, body
      ).add_done_callback(lambda done: self._reply(*done.result()))

  def on_connection_close(self):
    self._deadline.cancel()
    self._closed = True

  def _too_large(self, size: int) -> None:
    # The rest of the body is not read, so this connection cannot carry
    # another request: say so, or a keep-alive client would reuse it.
    self._reply(413, orjson.dumps({
        'error': f'Request body of {size} bytes is larger than the limit of '
                 f'{self._server.max_body_bytes} bytes'}), close=True)
    self._closed = True
    self._connection.close()

  def _reply(self, status: int, body: bytes, close: bool = False) -> None:
    if self._closed:  # the client went away meanwhile
      return
    headers = httputil.HTTPHeaders({
        'Content-Type': 'application/json', 'Content-Length': str(len(body)),
        'Date': email.utils.formatdate(usegmt=True)})
    if close:
      headers['Connection'] = 'close'
    self._connection.write_headers(
        httputil.ResponseStartLine('HTTP/1.1', status,
                                   httputil.responses.get(status, 'Unknown')),
        headers, body if self._method != 'HEAD' else b'')
    self._connection.finish()
