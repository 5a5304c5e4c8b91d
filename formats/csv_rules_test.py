"""formats.csv_rules: the rules every CSV reader here applies."""

import io
import subprocess
import sys
import types

import pyarrow as pa
import pytest

from tfx_e2e.formats import csv_rules


@pytest.mark.parametrize('lines, expected', [
    (['a,b,c', '1,2,3'], ','),
    (['a;b;c', '1,5;2;3'], ';'),
    (['a\tb', '1\t2'], '\t'),
    (['a|b|c', '1|2|3'], '|'),
    # The most used one that splits the next lines as the header.
    (['a;b,c;d', '1;2,5;3'], ';'),
    (['a,b;c', '1;2,3;4'], ','),  # both fit: as used, `,` first
    (['a,b;c', '1,2,3;4;5'], ','),  # neither: as used, `,` first
    (['name', 'x'], ','),         # none: `,`
])
def test_delimiter_is_detected_from_the_header_and_next_lines(lines,
                                                              expected):
  assert csv_rules.delimiter_of(lines[0], '', lines[1:]) == expected


@pytest.mark.parametrize('configured, expected', [
    ('tab', '\t'), ('\\t', '\t'), (' Semicolon ', ';'), ('pipe', '|'),
    ('comma', ','), (':', ':')])
def test_a_configured_delimiter_wins_and_may_be_named(configured, expected):
  assert csv_rules.delimiter_of('a,b;c', configured) == expected
  assert csv_rules.configured_delimiter(configured) == expected


@pytest.mark.parametrize('title, name', [
    ('fare', 'fare'), ('Trip Miles', 'Trip_Miles'), ('  a--b  ', 'a_b'),
    ('Čas (s)', 'Cas_s'), ('2nd', 'c_2nd'), ('___', 'column_3'),
    ('', 'column_3'), ('日本', 'column_3'), ('a__b', 'a__b'),
    ('_a__b', 'a_b')])
def test_header_names_become_model_input_names(title, name):
  assert csv_rules.feature_name(title, 3) == name


def test_feature_names_number_columns_from_one():
  assert csv_rules.feature_names(['', 'x', '']) == [
      'column_1', 'x', 'column_3']


@pytest.mark.parametrize('header, message', [
    (['a', 'b', 'a'], "columns 1 and 3 are both named 'a'"),
    (['a b', 'A_B'], "would both be the model input 'A_B'"),
])
def test_a_header_with_two_columns_of_one_name_is_refused(header, message):
  with pytest.raises(csv_rules.InputError, match=message):
    csv_rules.check_header('data.csv', header)


def test_a_valid_header_passes():
  csv_rules.check_header('data.csv', ['a', 'b', 'Trip Miles'])


def test_a_column_is_resolved_by_header_name_then_model_name():
  header = ['Trip Miles', 'a_b', 'a b']
  names = ['Trip_Miles', 'a_b', 'a_b_']  # the names need not be valid here
  assert csv_rules.resolve_column('Trip Miles', header, names) == 'Trip_Miles'
  assert csv_rules.resolve_column('Trip_Miles', header, names) == 'Trip_Miles'
  # A header name first, even where it is another column's model name.
  assert csv_rules.resolve_column('a_b', header, names) == 'a_b'
  # Compared in one Unicode normal form.
  assert csv_rules.resolve_column('Cafe\u0301', ['Café'], ['Cafe']) == 'Cafe'
  assert csv_rules.resolve_column('nope', header, names) is None


def test_missing_values_are_the_markers_and_empty_once_trimmed():
  rules = csv_rules.CsvRules(delimiter=';', na_values=('NA', '-'))
  assert rules.missing_values == {'NA', '-', ''}
  column = pa.array([' 1 ', 'NA', ' - ', '', 'x', 'NAN'])
  assert rules.cleaned(column).to_pylist() == ['1', '', '', '', 'x', 'NAN']


def test_default_rules_read_pandas_markers_as_missing():
  rules = csv_rules.CsvRules()
  assert rules.delimiter == ''
  assert {'', 'NA', 'NULL', 'nan', 'inf', '-', '?'} <= rules.missing_values


def test_rules_of_a_config_take_its_data_settings():
  config = types.SimpleNamespace(data=types.SimpleNamespace(
      delimiter='tab', na_values=['missing']))
  rules = csv_rules.CsvRules.of(config)
  assert rules.delimiter == '\t'
  assert rules.missing_values == {'missing', ''}


# What Arrow's cast reads as a number and what it does not: NUMBER must
# agree with it, as the gate judges with the one and CsvExampleGen parses
# with the other.
NUMBERS = ['0', '-1', '1.', '.5', '-.5', '1e3', '1E-3', '2.5e+7', 'inf',
           '-Infinity', 'nan', 'NaN', '007', '1.5e3']
NOT_NUMBERS = ['+1', ' 1', '1 ', '1,000', '1_000', '1.2.3', 'e3', '.', '-',
               '', '0x10', '$5', '5%', '1e', 'infinite', '١٢']


@pytest.mark.parametrize('value', NUMBERS)
def test_numbers_match_the_rule_and_arrows_cast(value):
  assert csv_rules.NUMBER.fullmatch(value)
  assert csv_rules.casts(pa.array([value]), pa.float64())


@pytest.mark.parametrize('value', NOT_NUMBERS)
def test_non_numbers_fail_the_rule_and_arrows_cast(value):
  assert not csv_rules.NUMBER.fullmatch(value)
  assert not csv_rules.casts(pa.array([value]), pa.float64())


@pytest.mark.parametrize('values, kind', [
    (['1', '', '-2'], csv_rules.INT),
    (['1', '2.5', ''], csv_rules.FLOAT),
    (['1', 'nan'], csv_rules.FLOAT),
    (['1', 'x'], csv_rules.STRING),
    (['', ''], csv_rules.UNKNOWN),
    (['9223372036854775808'], csv_rules.FLOAT),  # beyond int64
])
def test_column_type_is_tfxs_rule_on_present_values(values, kind):
  assert csv_rules.column_type(pa.array(values)) == kind


def test_column_type_judges_every_value_not_only_the_sample():
  values = ['1'] * csv_rules.TYPE_SAMPLE + ['1.5']
  assert csv_rules.column_type(pa.array(values)) == csv_rules.FLOAT
  values = ['1'] * csv_rules.TYPE_SAMPLE + ['x']
  assert csv_rules.column_type(pa.array(values)) == csv_rules.STRING


@pytest.mark.parametrize('data, line, next_at', [
    (b'a,b\n1,2\n', b'a,b', 4),
    (b'a,b\r\n1,2\r\n', b'a,b', 5),
    (b'a,b\r1,2\r', b'a,b', 4),
    (b'a,b', b'a,b', 3),
    (b'', b'', 0),
    (b'x' * 70000 + b'\n1', b'x' * 70000, 70001),  # beyond one read
])
def test_header_line_ends_at_lf_crlf_or_cr(data, line, next_at):
  assert csv_rules.header_line(io.BytesIO(data)) == (line, next_at)


def test_parse_header_splits_quoted_names():
  assert csv_rules.parse_header('"a,b";c;"d ""e"""', ';') == [
      'a,b', 'c', 'd "e"']
  assert csv_rules.parse_header('', ',') == []


def test_the_rules_do_not_import_tensorflow():
  subprocess.run([sys.executable, '-c',
                  'import sys; from tfx_e2e.formats import csv_rules; '
                  'assert "tensorflow" not in sys.modules, "tensorflow"'],
                 check=True)


def test_the_readers_use_these_rules():
  # One definition: the gate re-exports these very objects.
  from tfx_e2e.pipeline import input_check  # pylint: disable=g-import-not-at-top
  for name in ('InputError', 'CsvRules', 'NUMBER', 'feature_name',
               'feature_names', 'check_header', 'delimiter_of',
               'configured_delimiter', 'resolve_column'):
    assert getattr(input_check, name) is getattr(csv_rules, name), name
