"""Predict, Regress and Classify on a loaded servable: the one implementation
behind both the REST and the gRPC API (they only translate formats).

Inputs and outputs are numpy arrays keyed by signature tensor name. Checks and
messages follow TF Serving's, so that a client cannot tell the servers apart.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfx_e2e.serving.batching import Batcher
from tfx_e2e.serving.errors import Code, ServingError
from tfx_e2e.serving.models import DEFAULT_SIGNATURE, Servable

PREDICT = tf.saved_model.PREDICT_METHOD_NAME
REGRESS = tf.saved_model.REGRESS_METHOD_NAME
CLASSIFY = tf.saved_model.CLASSIFY_METHOD_NAME

_log = logging.getLogger(__name__)


def _dtype(tensor_info) -> tf.dtypes.DType:
  return tf.dtypes.as_dtype(tensor_info.dtype)


# The kinds of value each kind of input takes: integers where the input
# is floating-point, but not the other way round, and no booleans for
# numbers (TF Serving's rules for JSON and for typed TensorProtos alike).
_BOOL, _INTEGER, _FLOAT, _STRING = 'boolean', 'integer', 'floating-point', (
    'string')
_NUMPY_KINDS = {'b': _BOOL, 'i': _INTEGER, 'u': _INTEGER, 'f': _FLOAT,
                'c': 'complex', 'S': _STRING, 'U': _STRING}
_PYTHON_KINDS = {bool: _BOOL, int: _INTEGER, float: _FLOAT, bytes: _STRING,
                 str: _STRING, np.bool_: _BOOL}


def _kinds(values) -> set:
  """The kinds of value in `values`: a numpy array (a gRPC TensorProto's,
  typed) or nested lists of JSON values."""
  if isinstance(values, np.ndarray):
    if values.dtype != object:
      return {_NUMPY_KINDS.get(values.dtype.kind, str(values.dtype))}
    values = values.ravel().tolist()
  if not isinstance(values, list):
    values = [values]
  types = set(map(type, values))  # at C speed: flat columns
  if types.issubset(_PYTHON_KINDS):  # the common case
    return {_PYTHON_KINDS[kind] for kind in types}
  kinds = set()
  for kind in types:
    if kind is list:
      for value in values:
        if type(value) is list:
          kinds |= _kinds(value)
    elif issubclass(kind, np.generic) and kind not in _PYTHON_KINDS:
      kinds.add(_NUMPY_KINDS.get(np.dtype(kind).kind, kind.__name__))
    else:
      kinds.add(_PYTHON_KINDS.get(kind, kind.__name__))
  return kinds


_ALLOWED: Dict[tf.dtypes.DType, Optional[frozenset]] = {}


def fits(kinds: set, dtype: tf.dtypes.DType) -> bool:
  """Whether values of these kinds fit an input of `dtype` (see _kinds)."""
  allowed = _ALLOWED.get(dtype, False)
  if allowed is False:  # worked out once per dtype: DType compares slowly
    if dtype == tf.string:
      allowed = frozenset({_STRING})
    elif dtype == tf.bool:
      allowed = frozenset({_BOOL})
    elif dtype.is_integer:
      allowed = frozenset({_INTEGER})
    elif dtype.is_floating:
      allowed = frozenset({_INTEGER, _FLOAT})
    else:
      allowed = None  # other dtypes: TensorFlow's conversion decides
    _ALLOWED[dtype] = allowed
  return allowed is None or kinds <= allowed


def as_input_tensor(name: str, values, dtype: tf.dtypes.DType) -> tf.Tensor:
  """`values` as a tensor of the input's dtype, or a clear INVALID_ARGUMENT.

  The one rule for REST (JSON values) and gRPC (typed TensorProtos,
  arrays here): a value must be of a kind the dtype takes (`fits`), as TF
  Serving answers; a float for an integer input or a string for a number
  is refused, not cast.
  """
  kinds = _kinds(values)
  if not fits(kinds, dtype):
    raise ServingError(
        Code.INVALID_ARGUMENT,
        f'Input "{name}": expected {dtype.name} values, got '
        f'{" and ".join(sorted(kinds))} values')
  try:
    # tf.constant: the same conversion and errors as tf.convert_to_tensor,
    # at half the cost (no dispatch), which counts in a one-row request.
    tensor = tf.constant(values, dtype=dtype)
  except (TypeError, ValueError) as e:
    message = str(e).split('\n')[0]
    if 'non-rectangular' in message:
      message = 'rows of different lengths'
    raise ServingError(
        Code.INVALID_ARGUMENT,
        f'Input "{name}": expected {dtype.name} values: {message}') from None
  return tensor


def _check_input_names(expected_names, given: Sequence[str]) -> None:
  expected = set(expected_names)
  given_set = set(given)
  if given_set != expected:
    extra = sorted(given_set - expected)
    missing = sorted(expected - given_set)
    raise ServingError(
        Code.INVALID_ARGUMENT,
        f'input size does not match signature: {len(given_set)}!='
        f'{len(expected)} len({{{",".join(sorted(given_set))}}}) != '
        f'len({{{",".join(sorted(expected))}}}). '
        f'Sent extra: {{{",".join(extra)}}}. '
        f'Missing but required: {{{",".join(missing)}}}.')


def _run(function, inputs: Mapping[str, tf.Tensor]) -> Dict[str, np.ndarray]:
  """The signature's outputs for `inputs`, or a ServingError whose code
  says whose fault it is.

  InvalidArgumentError (values the model's ops refuse) and the binding's
  ValueError and TypeError come from the request: INVALID_ARGUMENT, with
  TensorFlow's message. Any other error of TensorFlow's runtime (a missing
  asset file, an uninitialized table, an internal error, memory) is the
  server's: INTERNAL, with a short message; the details, which may name
  server paths, go to the log only.
  """
  try:
    outputs = function(inputs)
  except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
    raise ServingError(Code.INVALID_ARGUMENT,
                       str(getattr(e, 'message', e)).strip()) from None
  except tf.errors.OpError as e:
    _log.error('running the model failed (a server fault, answered as '
               'INTERNAL): %s: %s', type(e).__name__, e)
    raise ServingError(
        Code.INTERNAL, f'Internal error running the model '
        f'({type(e).__name__}); the server log has the details') from None
  return {k: v.numpy() for k, v in outputs.items()}


class Inference:
  """The three inference APIs over a servable, with optional batching."""

  def __init__(self, batcher: Optional[Batcher] = None, loggers=None):
    self._batcher = batcher
    # serving.request_log.RequestLoggers: answered requests are handed to
    # the model's logger, which queues them without waiting.
    self._loggers = loggers

  def _logged(self, kind: str, servable: Servable, signature_name: str,
              request, response) -> None:
    logger = self._loggers.get(servable.name) if self._loggers else None
    if logger is not None:
      logger.log(kind, servable.name, servable.version,
                 signature_name or DEFAULT_SIGNATURE, request, response)

  @property
  def batching(self) -> bool:
    return self._batcher is not None

  def _call(self, servable: Servable, signature_name: str, function,
            inputs: Dict[str, tf.Tensor]) -> Dict[str, np.ndarray]:
    if self._batcher is not None:
      return self._batcher.run(
          (servable.name, servable.version, signature_name),
          lambda batch: _run(function, batch), inputs)
    return _run(function, inputs)

  def predict(self, servable: Servable, signature_name: str,
              inputs: Mapping[str, object],
              output_filter: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    signature_def, function = servable.signature(signature_name)
    if signature_def.method_name not in (PREDICT, REGRESS, CLASSIFY):
      raise ServingError(
          Code.INVALID_ARGUMENT,
          'Expected prediction signature method_name to be one of '
          f'{{{PREDICT}, {CLASSIFY}, {REGRESS}}}. Was: '
          f'{signature_def.method_name}')
    _check_input_names(function.input_dtypes, list(inputs))
    tensors = {name: as_input_tensor(name, value, function.input_dtypes[name])
               for name, value in inputs.items()}
    sizes = {t.shape[0] if t.shape.rank else None for t in tensors.values()}
    if len(sizes) > 1:
      raise ServingError(
          Code.INVALID_ARGUMENT,
          'Input batch sizes differ: '
          + ', '.join(f'{k}: {t.shape[0] if t.shape.rank else "scalar"}'
                      for k, t in sorted(tensors.items())))
    for name in output_filter:
      if name not in signature_def.outputs:
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f'output tensor alias not found in signature: {name} Outputs '
            f'expected to be in the set {{{",".join(signature_def.outputs)}}}.')
    outputs = self._call(servable, signature_name or DEFAULT_SIGNATURE,
                         function, tensors)
    if output_filter:
      outputs = {k: v for k, v in outputs.items() if k in output_filter}
    self._logged('predict', servable, signature_name, tensors, outputs)
    return outputs

  def _examples_signature(self, servable: Servable, signature_name: str,
                          method: str, kind: str):
    signature_def, function = servable.signature(signature_name)
    if signature_def.method_name != method:
      raise ServingError(
          Code.INVALID_ARGUMENT,
          f'Expected {kind} signature method_name to be {method}. Was: '
          f'{signature_def.method_name}')
    if (len(signature_def.inputs) != 1 or
        _dtype(next(iter(signature_def.inputs.values()))) != tf.string):
      raise ServingError(
          Code.INVALID_ARGUMENT,
          f'Expected one input Tensor of serialized tf.Examples, got '
          f'{len(signature_def.inputs)} inputs.')
    return signature_def, function

  def _run_examples(self, servable: Servable, signature_name: str, function,
                    signature_def, serialized_examples: List[bytes]
                    ) -> Dict[str, np.ndarray]:
    if not serialized_examples:
      raise ServingError(Code.INVALID_ARGUMENT, 'Input is empty.')
    input_name = next(iter(signature_def.inputs))
    return self._call(servable, signature_name or DEFAULT_SIGNATURE,
                      function, {input_name: tf.constant(
                          serialized_examples, tf.string)})

  def regress(self, servable: Servable, signature_name: str,
              serialized_examples: List[bytes]) -> List[float]:
    signature_def, function = self._examples_signature(
        servable, signature_name, REGRESS, 'regression')
    if 'outputs' not in signature_def.outputs:
      raise ServingError(Code.INVALID_ARGUMENT,
                         'No regression outputs found in signature.')
    outputs = self._run_examples(servable, signature_name, function,
                                 signature_def, serialized_examples)
    values = outputs['outputs'].reshape(len(serialized_examples), -1)
    if values.shape[1] != 1:
      raise ServingError(Code.INVALID_ARGUMENT,
                         'Expected output Tensor shape to be [batch_size] or '
                         f'[batch_size, 1] but got {list(values.shape)}')
    results = [float(v) for v in values[:, 0]]
    self._logged('regress', servable, signature_name, serialized_examples,
                 results)
    return results

  def classify(self, servable: Servable, signature_name: str,
               serialized_examples: List[bytes]
               ) -> List[List[Tuple[str, float]]]:
    signature_def, function = self._examples_signature(
        servable, signature_name, CLASSIFY, 'classification')
    if not ({'classes', 'scores'} & set(signature_def.outputs)):
      raise ServingError(
          Code.INVALID_ARGUMENT,
          'Expected classification signature outputs to contain at least '
          'one of "classes" and "scores".')
    outputs = self._run_examples(servable, signature_name, function,
                                 signature_def, serialized_examples)
    count = len(serialized_examples)
    scores = outputs.get('scores')
    classes = outputs.get('classes')
    if scores is not None:
      scores = scores.reshape(count, -1)
    if classes is not None:
      classes = classes.reshape(count, -1)
    width = (scores if scores is not None else classes).shape[1]
    results = []
    for row in range(count):
      results.append([
          ((classes[row, i].decode() if isinstance(classes[row, i], bytes)
            else str(classes[row, i])) if classes is not None else '',
           float(scores[row, i]) if scores is not None else 0.0)
          for i in range(width)])
    self._logged('classify', servable, signature_name, serialized_examples,
                 results)
    return results
