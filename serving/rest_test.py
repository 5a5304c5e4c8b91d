"""The REST request parsing, without a server."""

import numpy as np
import pytest
import tensorflow as tf

from tfx_e2e.serving import api, inference, rest
from tfx_e2e.serving.errors import ServingError


def test_rows_become_columns_in_row_order():
  rows = [{'a': 1, 'b': 'x'}, {'b': 'y', 'a': 2}, {'a': 3, 'b': 'z'}]
  assert rest._rows_from_instances(rows, ['a', 'b']) == {  # pylint: disable=protected-access
      'a': [1, 2, 3], 'b': ['x', 'y', 'z']}
  assert rest._rows_from_instances([{'a': 1}, {'a': 2}], ['a']) == {  # pylint: disable=protected-access
      'a': [1, 2]}
  # A signature of one input also takes plain values, and {"b64": ...}.
  assert rest._rows_from_instances([1, 2], ['a']) == {'a': [1, 2]}  # pylint: disable=protected-access
  b64 = [{'b64': 'eA=='}, {'b64': 'eQ=='}]
  assert rest._rows_from_instances(b64, ['a']) == {'a': b64}  # pylint: disable=protected-access


def test_a_row_with_other_keys_is_named_by_its_index():
  rows = [{'a': 1, 'b': 2}, {'a': 1, 'b': 2}, {'a': 1, 'c': 2}]
  with pytest.raises(ServingError, match="element: 2 of 'instances'"):
    rest._rows_from_instances(rows, ['a', 'b'])  # pylint: disable=protected-access


def _nested(containers):
  value = 1.0
  for level in range(containers):
    value = [value] if level % 2 else {'k': value}
  return value


@pytest.mark.parametrize('containers', [rest.MAX_JSON_DEPTH,
                                        rest.MAX_JSON_DEPTH + 1])
def test_json_deeper_than_the_limit_is_refused(containers):
  # Alone, and as the last of many scalars in a list (one level more).
  for value in (_nested(containers), [1.0] * 1000 + [_nested(containers - 1)]):
    if containers <= rest.MAX_JSON_DEPTH:
      rest._check_depth(value)  # pylint: disable=protected-access
    else:
      with pytest.raises(ServingError, match='nested deeper'):
        rest._check_depth(value)  # pylint: disable=protected-access
  rest._check_depth('a scalar')  # pylint: disable=protected-access


def test_strings_decode_to_bytes():
  assert api.decode_strings(['ab', 'é']) == [b'ab', 'é'.encode()]
  assert api.decode_strings([['a'], [{'b64': 'eA=='}]]) == [[b'a'], [b'x']]
  assert api.decode_strings([]) == []


@pytest.mark.parametrize('values, dtype, fits', [
    ([600], 'int64', True), ([600.7], 'int64', False),
    ([600.0], 'int64', False), ([b'600'], 'int64', False),
    ([True], 'int64', False), ([600, 2.5], 'float32', True),
    ([[1], [2]], 'float32', True), ([b'x'], 'string', True),
    ([1], 'string', False), ([], 'int64', True),
    # gRPC: arrays typed by their TensorProto.
    (np.array([600.7], np.float32), 'int64', False),
    (np.array([b'600'], object), 'int64', False),
    (np.array([600], np.int32), 'int64', True),
    (np.array([600], np.int64), 'float32', True),
    (np.array([1.5]), 'string', False)])
def test_one_rule_for_which_values_fit_an_input(values, dtype, fits):
  """REST's JSON values and gRPC's typed arrays meet the same rule."""
  dtype = tf.dtypes.as_dtype(dtype)
  if fits:
    assert inference.as_input_tensor('x', values, dtype).dtype == dtype
  else:
    with pytest.raises(ServingError, match='Input "x": expected'):
      inference.as_input_tensor('x', values, dtype)
