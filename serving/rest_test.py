"""The REST request parsing, without a server."""

import pytest

from serving import api, rest
from serving.errors import ServingError


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
