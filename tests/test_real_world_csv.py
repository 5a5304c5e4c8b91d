"""Users' own CSV files: the shapes real tables come in.

Each test here stands for a way a real file can be read wrongly or
refused late: header names that are not valid model inputs, duplicated
names, file names with pattern characters, missing-value markers, other
delimiters, compression, numbers written as text. The invariant, checked on
generated files: the gate refuses a file (naming it), or CsvExampleGen reads
exactly the file's rows, under the header's names made valid one to one.
"""

import bz2
import csv
import gzip
import io
import lzma
import os
import random
import re
import unicodedata
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tfx_e2e.components.executors import csv_example_gen
from tfx_e2e.pipeline import input_check, runner
from tfx_e2e.formats.csv_rules import DEFAULT_NA_VALUES
from tfx_e2e.pipeline.config import DataConfig, PipelineConfig
from tests.conftest import read_csv, run_cli, write_csv

VALID_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')


def _config(tmp_path, data, label='fare', **data_settings):
  for setting in ('exclude_features', 'categorical_features',
                  'slice_features'):
    data_settings.setdefault(setting, [])
  return PipelineConfig(output_dir=str(tmp_path / 'out'), data=DataConfig(
      path=str(data), label=label, **data_settings))


def _gate(config):
  """The gate's report, and the rows and columns CsvExampleGen then reads."""
  report = input_check.check_input(config)
  path = input_check.prepare_input(config, report)
  rows, names = [], None
  for byte_range in csv_example_gen.byte_ranges(path):
    _, columns = csv_example_gen.parse_range(*byte_range)
    names = list(columns)
    rows += [list(row) for row in zip(*(c.to_pylist()
                                        for c in columns.values()))]
  return report, names, rows


# Header names.

@given(st.lists(st.one_of(
    st.text(max_size=12),
    st.sampled_from(['Trip Miles', 'trip_miles', '', '_id', '__', '1st',
                     'Compañía', 'é', 'a.b', 'a-b', 'fare ($)', '名前'])),
    min_size=1, max_size=12))
@settings(max_examples=500, deadline=None)
def test_feature_names_are_valid_and_the_gate_keeps_them_one_to_one(header):
  names = input_check.feature_names(header)
  assert len(names) == len(header)
  assert all(VALID_NAME.fullmatch(name) for name in names), names
  for title, name in zip(header, names):
    if VALID_NAME.fullmatch(title):
      assert name == title  # valid names are kept
  # A name depends on its title alone (one with no letter or digit, on its
  # position): the same in a file to predict whose columns come in another
  # order.
  for title in header:
    first, later = (input_check.feature_name(title, p) for p in (1, 99))
    assert first == later or (first, later) == ('column_1', 'column_99')
  try:
    input_check.check_header(Path('d.csv'), header)
  except input_check.InputError as e:
    assert str(e).startswith('d.csv:1: columns ')
    assert len({name.lower() for name in names}) < len(names)
  else:  # unique regardless of case, as TensorFlow's signatures need
    assert len({name.lower() for name in names}) == len(names)


def test_a_header_with_spaces_punctuation_and_accents_maps_one_to_one(
    tmp_path):
  header = ['Fare ($)', 'Trip Miles', '', '_payment type', 'Compañía',
            '1st stop']
  data = write_csv(tmp_path / 'd.csv', header,
                   [['5', '1.5', 'x', 'Cash', 'A', 'y'],
                    ['7', '2.5', 'z', 'Card', 'B', 'w']])
  report, names, rows = _gate(_config(tmp_path, data, label='Fare ($)'))
  assert names == report.columns == [
      'Fare', 'Trip_Miles', 'column_3', 'payment_type', 'Compania',
      'c_1st_stop']
  assert report.renamed == dict(zip(header, names))
  assert rows == [['5', '1.5', 'x', 'Cash', 'A', 'y'],
                  ['7', '2.5', 'z', 'Card', 'B', 'w']]
  # Settings may name a column either way.
  resolved = input_check.resolve_config(_config(
      tmp_path, data, label='Fare', exclude_features=['Trip Miles'],
      slice_features=['_payment type']), report)
  assert (resolved.data.label, resolved.data.exclude_features,
          resolved.data.slice_features) == ('Fare', ['Trip_Miles'],
                                            ['payment_type'])


@pytest.mark.parametrize('header', [
    ['a b', 'a_b', 'fare'], ['A', 'a', 'fare'],
    ['Trip_Miles', 'trip miles', 'fare']])
def test_columns_that_would_be_one_model_input_are_refused(tmp_path, header):
  """`a b` and `a_b` (or `A` and `a`: TensorFlow's signatures compare
  names regardless of case) would be one model input: which column a file
  to predict means by it would depend on the order of its columns."""
  data = write_csv(tmp_path / 'd.csv', header, [['1', '2', '3']])
  with pytest.raises(input_check.InputError, match=re.escape(
      f"{data}:1: columns 1 ({header[0]!r}) and 2 ({header[1]!r}) would "
      'both be the model input')):
    input_check.check_input(_config(tmp_path, data))


def test_duplicate_header_names_are_refused(tmp_path):
  data = write_csv(tmp_path / 'd.csv',
                   ['fare', 'trip_miles', 'trip_miles', 'payment_type'],
                   [['5', '1', '600', 'Cash']])
  with pytest.raises(input_check.InputError, match=re.escape(
      f"{data}:1: columns 2 and 3 are both named 'trip_miles'")):
    input_check.check_input(_config(tmp_path, data))


@pytest.mark.parametrize('header, label', [
    (['miles', 'city', 'categorical_ids'], 'categorical_ids'),
    (['miles', 'numeric_xf'], 'numeric_xf'),
    (['Miles', 'numeric xf'], 'numeric xf')])
def test_a_label_named_as_a_transformed_feature_is_refused(
    tmp_path, header, label):
  data = write_csv(tmp_path / 'd.csv', header, [['1', 'a', '2'][:len(header)]])
  with pytest.raises(input_check.InputError,
                     match='named as a transformed feature'):
    input_check.check_input(_config(tmp_path, data, label=label))


# File names and paths.

def test_a_file_name_with_pattern_characters_is_read_literally(tmp_path):
  named = write_csv(tmp_path / 'g' / 'trips[12].csv', ['x', 'fare'],
                    [['1', '5'], ['2', '6'], ['3', '7']])
  write_csv(tmp_path / 'g' / 'trips1.csv', ['x', 'fare'], [['9', '99']])
  report, _, rows = _gate(_config(tmp_path, named))
  assert '[' not in report.path
  assert rows == [['1', '5'], ['2', '6'], ['3', '7']]


def test_an_output_directory_with_pattern_characters_is_refused(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['x', 'fare'], [['1', '5']])
  result = run_cli(['run', '--data', str(data), '--label', 'fare',
                    '--output', str(tmp_path / 'runs[1]')])
  assert result.exit_code == runner.EXIT_BAD_INPUT
  assert 'file patterns' in result.stderr
  assert not (tmp_path / 'runs[1]').exists()


@pytest.mark.parametrize('suffix, opener', [
    ('.csv.gz', gzip.open), ('.csv.bz2', bz2.open), ('.csv.xz', lzma.open),
    ('.csv', gzip.open)])  # gzip bytes under a plain name: the bytes decide
def test_compressed_files_are_read(tmp_path, suffix, opener):
  path = tmp_path / f'd{suffix}'
  with opener(path, 'wt', newline='') as f:
    f.write('x,fare\n1,5\n2,6\n')
  report, _, rows = _gate(_config(tmp_path, path))
  assert report.compression and rows == [['1', '5'], ['2', '6']]


def test_a_zip_archive_is_refused_with_what_to_do(tmp_path):
  path = tmp_path / 'd.csv'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('d.csv', 'x,fare\n1,5\n')
  with pytest.raises(input_check.InputError, match='zip archive.*unzip'):
    input_check.check_input(_config(tmp_path, path))


def test_a_directory_with_compressed_and_plain_files(tmp_path):
  write_csv(tmp_path / 'in' / 'a.csv', ['x', 'fare'], [['1', '5']])
  with gzip.open(tmp_path / 'in' / 'b.csv.gz', 'wt') as f:
    f.write('x,fare\n2,6\n')
  report, _, rows = _gate(_config(tmp_path, tmp_path / 'in'))
  assert report.rows == 2 and rows == [['1', '5'], ['2', '6']]


def test_a_symlink_whose_own_name_has_pattern_characters(tmp_path):
  target = write_csv(tmp_path / 'real.csv', ['x', 'fare'],
                     [['1', '5'], ['2', '6']])
  (tmp_path / 'sym[1]').mkdir()
  link = tmp_path / 'sym[1]' / 'link[1].csv'
  link.symlink_to(target)
  write_csv(tmp_path / 'sym1' / 'link1.csv', ['x', 'fare'], [['9', '99']])
  report, _, rows = _gate(_config(tmp_path, link))
  assert '[' not in report.path and rows == [['1', '5'], ['2', '6']]


def test_directory_files_that_a_csv_pattern_would_miss_or_confuse(tmp_path):
  write_csv(tmp_path / 'in' / 'trips[1].csv', ['x', 'fare'],
            [['1', '5'], ['2', '6']])
  write_csv(tmp_path / 'in' / 'trips1.csv', ['x', 'fare'], [['3', '7']])
  write_csv(tmp_path / 'in' / 'PART2.CSV', ['x', 'fare'], [['4', '8']])
  report, _, rows = _gate(_config(tmp_path, tmp_path / 'in'))
  assert report.copy_reasons and report.rows == 4
  assert sorted(rows) == [['1', '5'], ['2', '6'], ['3', '7'], ['4', '8']]


def test_numbers_as_missing_value_markers(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['x', 'fare'],
                   [['1', '5'], ['-999', '6'], ['3', '-999'], ['4', '8']])
  report, _, rows = _gate(_config(tmp_path, data,
                                  na_values=['NA', '-999']))
  assert rows == [['1', '5'], ['', '6'], ['4', '8']]
  assert report.missing_markers == {'x': 1, 'fare': 1}


def test_the_empty_value_is_missing_whatever_the_markers(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['x', 'fare'],
                   [['1', '5'], ['', ''], ['3', '7']])
  report = input_check.check_input(_config(tmp_path, data, na_values=['NA']))
  assert report.dropped_rows == 1


def test_a_constant_label_is_refused(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['x', 'fare'],
                   [['1', '5'], ['2', '5.0'], ['3', 'NA']])
  with pytest.raises(input_check.InputError, match='5 in every row'):
    input_check.check_input(_config(tmp_path, data))


def test_an_empty_column_to_slice_by_is_refused_and_others_noted(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['x', 'region', 'note', 'fare'],
                   [['1', 'NA', '', '5'], ['2', '', '-', '6']])
  with pytest.raises(input_check.InputError, match='without a single value'):
    input_check.check_input(_config(tmp_path, data,
                                    slice_features=['region']))
  report = input_check.check_input(_config(tmp_path, data))
  assert report.empty_columns == ['region', 'note']
  assert 'not features: region, note' in '\n'.join(
      input_check.input_notes(report))


def test_labels_that_float32_cannot_hold_exactly_are_noted(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['x', 'fare'],
                   [['1', '1000000050'], ['2', '1000000100']])
  notes = '\n'.join(input_check.input_notes(
      input_check.check_input(_config(tmp_path, data))))
  assert 'lose digits as float32' in notes


def test_a_pipe_is_refused_with_what_to_do(tmp_path):
  fifo = tmp_path / 'data.csv'
  os.mkfifo(fifo)
  with pytest.raises(input_check.InputError, match='not a regular file'):
    input_check.check_input(_config(tmp_path, fifo))


def test_a_label_named_in_another_unicode_normal_form(tmp_path):
  decomposed = unicodedata.normalize('NFD', 'Compañía')
  data = write_csv(tmp_path / 'd.csv', ['x', decomposed],
                   [['1', '5'], ['2', '6']])
  report = input_check.check_input(_config(
      tmp_path, data, label=unicodedata.normalize('NFC', 'Compañía')))
  assert report.columns == ['x', 'Compania']


# Delimiters.

@pytest.mark.parametrize('delimiter', [';', '\t', '|'])
def test_the_delimiter_is_detected(tmp_path, delimiter):
  path = tmp_path / 'd.csv'
  path.write_text(delimiter.join(['x', 'payment', 'fare']) + '\n' +
                  delimiter.join(['1,5', 'a,b', '5']) + '\n')
  report, _, rows = _gate(_config(tmp_path, path))
  assert report.delimiter == delimiter
  assert rows == [['1,5', 'a,b', '5']]


def test_a_configured_delimiter_wins_and_a_wrong_one_is_named(tmp_path):
  path = tmp_path / 'd.csv'
  path.write_text('x;fare\n1;5\n')
  _, _, rows = _gate(_config(tmp_path, path, delimiter=';'))
  assert rows == [['1', '5']]
  with pytest.raises(input_check.InputError,
                     match="no label column 'fare'"):
    input_check.check_input(_config(tmp_path, path, delimiter=','))


def test_the_delimiter_splitting_every_line_alike_wins_a_tie(tmp_path):
  path = tmp_path / 'd.csv'
  path.write_text('Preis (EUR, brutto);Fläche, m2;Zimmer\n'
                  '250000;80;3\n180000;55;2\n', encoding='utf-8')
  report = input_check.check_input(_config(tmp_path, path, label='Zimmer'))
  assert report.delimiter == ';'
  assert report.columns == ['Preis_EUR_brutto', 'Flache_m2', 'Zimmer']


@pytest.mark.parametrize('setting', ['tab', '\\t', '\t'])
def test_a_tab_may_be_configured_by_name(tmp_path, setting):
  path = tmp_path / 'd.csv'
  path.write_text('x\tfare\n1\t5\n2\t6\n')
  config = _config(tmp_path, path, delimiter=setting).validate()
  assert input_check.check_input(config).delimiter == '\t'


def test_a_missing_label_names_the_delimiter_it_may_be(tmp_path):
  path = tmp_path / 'd.csv'
  path.write_text('x;fare\n1;5\n')
  with pytest.raises(input_check.InputError,
                     match="separated by ';', set data.delimiter"):
    input_check.check_input(_config(tmp_path, path, delimiter=','))


# Values.

def test_missing_value_markers_are_missing_in_every_column(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['miles', 'payment', 'fare'], [
      ['1.5', 'Cash', '5'], ['NA', 'N/A', '6'], ['null', 'Card', 'NaN'],
      [' 2 ', ' - ', '7'], ['?', 'None', '8'], ['3', 'Cash', 'inf']])
  report, _, rows = _gate(_config(tmp_path, data))
  assert rows == [['1.5', 'Cash', '5'], ['', '', '6'], ['2', '', '7'],
                  ['', '', '8']]
  assert report.dropped_rows == 2  # NaN and inf labels: missing
  # Counted in every row, also those dropped for their label.
  assert report.missing_markers == {'miles': 3, 'payment': 3, 'fare': 2}
  assert report.trimmed == {'miles': 1, 'payment': 1}
  assert not report.text_columns  # miles is numeric after all
  batch = csv_example_gen.range_types(csv_example_gen.byte_ranges(
      report.path)[0])
  assert batch['miles'] == csv_example_gen.FLOAT


def test_markers_are_configurable(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['code', 'fare'],
                   [['NA', '5'], ['missing', '6'], ['EU', '7']])
  _, _, rows = _gate(_config(tmp_path, data, na_values=['', 'missing']))
  assert rows == [['NA', '5'], ['', '6'], ['EU', '7']]


def test_a_mostly_numeric_column_read_as_text_is_reported(tmp_path):
  rows = [[str(i), str(i % 7)] for i in range(100)]
  rows[3][0], rows[9][0], rows[12][0] = '1,380', '2,100', 'unknown'
  data = write_csv(tmp_path / 'd.csv', ['seconds', 'fare'], rows)
  report = input_check.check_input(_config(tmp_path, data))
  column = report.text_columns['seconds']
  assert (column.not_numbers, column.present) == (3, 100)
  assert set(column.examples) == {'1,380', '2,100', 'unknown'}
  notes = '\n'.join(input_check.input_notes(report))
  assert 'seconds is read as text' in notes and 'thousands' in notes


def test_a_text_column_is_not_reported(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['payment', 'fare'],
                   [['Cash', '5'], ['Card', '6'], ['1', '7']])
  assert not input_check.check_input(_config(tmp_path, data)).text_columns


def test_every_bad_label_is_counted_with_examples(tmp_path):
  rows = [[str(i), str(i)] for i in range(50)]
  for i in (4, 9, 20, 30):
    rows[i][1] = f'x{i}'
  data = write_csv(tmp_path / 'd.csv', ['miles', 'fare'], rows)
  with pytest.raises(input_check.InputError) as error:
    input_check.check_input(_config(tmp_path, data))
  message = str(error.value)
  assert message.startswith(f"{data}:6: label 'fare' is not numeric: 'x4'")
  assert '4 rows like this' in message
  assert "d.csv:32 'x30'" in message


def test_a_label_beyond_float32_is_dropped_not_trained_as_infinity(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['miles', 'fare'],
                   [['1', '5'], ['2', '1e39'], ['3', '-3.5e38'], ['4', '3e38']])
  report, _, rows = _gate(_config(tmp_path, data))
  assert report.dropped_examples == [
      "d.csv:3 (label '1e39' beyond the float32 range)",
      "d.csv:4 (label '-3.5e38' beyond the float32 range)"]
  assert rows == [['1', '5'], ['4', '3e38']]


@given(st.text(alphabet='0123456789.eE+-_, infatyINFATY', max_size=10))
@settings(max_examples=2000, deadline=None)
def test_the_number_rule_is_csv_example_gens(value):
  """A label the gate takes as a number is one CsvExampleGen's Arrow cast
  reads as a number, and the reverse."""
  try:
    pc.cast(pa.array([value]), pa.float64())
    arrow = True
  except pa.ArrowInvalid:
    arrow = False
  assert bool(input_check.NUMBER.fullmatch(value)) == arrow, value


# The invariant, on generated files.

_TITLES = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=('Cs', 'Cc')),
            max_size=8),
    st.sampled_from(['Trip Miles', 'trip_miles', '', ' ', '_x', 'é',
                     'fare']))
_VALUES = st.one_of(
    st.integers(-1000, 1000).map(str), st.floats(-1e6, 1e6).map(repr),
    st.sampled_from(['', 'NA', 'N/A', 'null', 'NaN', 'inf', '-', '?',
                     ' 3 ', 'Cash', '1,380']),
    st.text(alphabet='abc ,;"', max_size=5))


@st.composite
def _tables(draw):
  features = draw(st.lists(_TITLES, min_size=1, max_size=6))
  header = features + ['label']
  rows = [draw(st.lists(_VALUES, min_size=len(features),
                        max_size=len(features))) +
          [draw(st.one_of(st.integers(-99, 99).map(str),
                          st.sampled_from(['', 'NA', 'x'])))]
          for _ in range(draw(st.integers(1, 8)))]
  delimiter = draw(st.sampled_from([',', ';', '\t']))
  return header, rows, delimiter


def _write_table(work: Path, table):
  """(header, rows, the CSV file written with the table's delimiter)."""
  header, rows, delimiter = table
  text = io.StringIO()
  csv.writer(text, delimiter=delimiter, lineterminator='\n').writerows(
      [header] + rows)
  path = work / 'data.csv'
  path.write_text(text.getvalue(), encoding='utf-8')
  return header, rows, path


@given(_tables())
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.function_scoped_fixture])
def test_the_gate_refuses_or_examplegen_reads_exactly_the_rows(
    tmp_path_factory, table):
  work = tmp_path_factory.mktemp('gen')
  header, rows, path = _write_table(work, table)
  config = _config(work, path, label='label')
  try:
    report, names, read = _gate(config)
  except input_check.InputError as e:
    assert str(e).startswith(str(path)) or 'label' in str(e), e
    return
  assert names == report.columns == input_check.feature_names(header)
  na_values = set(config.data.na_values)

  def clean(value):
    value = value.strip()
    return '' if value in na_values else value

  expected = [[clean(v) for v in row] for row in rows
              if clean(row[-1]) != '']
  assert read == expected
  assert report.rows - report.dropped_rows == len(read)


# Refused runs leave the output directory as it was.

def _tree(directory: Path):
  return sorted((str(p.relative_to(directory)), p.stat().st_size,
                 p.stat().st_mtime_ns) for p in directory.rglob('*'))


def test_a_rejected_run_changes_nothing_in_an_existing_output(tmp_path):
  output = tmp_path / 'out'
  output.mkdir()
  (output / 'run-config.yaml').write_text('pipeline_name: earlier\n')
  (output / 'logs').mkdir()
  before = _tree(output)
  bad = write_csv(tmp_path / 'd.csv', ['fare', 'x', 'x'], [['1', '2', '3']])
  for data in (tmp_path / 'typo.csv', bad):
    result = run_cli(['run', '--data', str(data), '--label', 'fare',
                      '--output', str(output)])
    assert result.exit_code == runner.EXIT_BAD_INPUT, result
  assert _tree(output) == before


def test_a_rejected_run_creates_no_output_directory(tmp_path):
  result = run_cli(['run', '--data', str(tmp_path / 'typo.csv'), '--label',
                    'fare', '--output', str(tmp_path / 'new')])
  assert result.exit_code == runner.EXIT_BAD_INPUT
  assert not (tmp_path / 'new').exists()


# The invariant end to end, on a few generated tables (each a real run).

@st.composite
def _trainable_tables(draw):
  """40 rows under a generated header (duplicates, spaces, unicode, empty
  names), a generated delimiter, and missing-value markers here and there;
  the label is a linear function of the first column, so a model can be
  blessed."""
  titles = draw(st.lists(_TITLES, min_size=2, max_size=5))
  header = titles + ['y value']
  rng = random.Random(draw(st.integers(0, 2**32)))
  markers = ['NA', 'null', '', '?']
  rows = []
  for i in range(40):
    x = rng.uniform(0, 10)
    row = [f'{x:.3f}'] + [rng.choice(['a', 'b', 'c', f'{rng.random():.2f}'])
                          for _ in titles[1:]]
    for at in range(len(row)):
      if rng.random() < 0.1:
        row[at] = rng.choice(markers)
    rows.append(row + [f'{2 * x + 1 + rng.gauss(0, 0.1):.3f}'])
  return header, rows, draw(st.sampled_from([',', ';', '\t']))


@pytest.mark.e2e
@given(_trainable_tables())
@settings(max_examples=3, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],  # a shrink is a run each
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.function_scoped_fixture])
def test_a_run_refuses_or_trains_on_exactly_the_named_rows_and_columns(
    tmp_path_factory, table):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  work = tmp_path_factory.mktemp('run')
  header, rows, path = _write_table(work, table)
  output = work / 'out'
  result = run_cli(['run', '--data', str(path), '--label', 'y value',
                    '--output', str(output)])
  assert 'Traceback' not in result.stdout + result.stderr
  assert 'could not be written' not in result.stderr  # the HTML report
  if result.exit_code == runner.EXIT_BAD_INPUT:
    assert result.stderr.startswith(f'error: {path}'), result.stderr
    return
  assert result.exit_code in (runner.EXIT_PUSHED, runner.EXIT_NOT_PUSHED), (
      result.stdout + result.stderr)
  names = input_check.feature_names(header)
  examples = [tf.train.Example.FromString(r.numpy())
              for r in tf.data.TFRecordDataset(
                  [str(p) for p in output.glob(
                      'pipeline/CsvExampleGen/examples/*/Split-*/*.gz')],
                  compression_type='GZIP')]
  usable = [row for row in rows
            if row[-1].strip() not in DEFAULT_NA_VALUES]
  assert len(examples) == len(usable)

  def value(feature):
    values = list(feature.float_list.value) + list(feature.int64_list.value)
    return round(float(values[0]), 3) if values else None

  def cell(text):
    text = text.strip()
    return None if text in DEFAULT_NA_VALUES else round(float(text), 3)

  # Every example is a row of the file: its first column and its label
  # under their model names, pair by pair (a column swap fails here).
  pairs = sorted(((value(e.features.feature[names[0]]),
                   value(e.features.feature['y_value'])) for e in examples),
                 key=repr)
  assert pairs == sorted(((cell(row[0]), cell(row[-1])) for row in usable),
                         key=repr)
  model_dirs = list(output.glob('pipeline/Trainer/model/*/Format-Serving'))
  if model_dirs:  # the data gate may stop a run on generated data
    model = tf.saved_model.load(str(model_dirs[0]))
    inputs = model.signatures['serving_raw'].structured_input_signature[1]
    assert sorted(inputs) == sorted(names[:-1])


@pytest.mark.e2e
def test_an_edit_that_keeps_size_and_mtime_is_not_served_from_cache(
    taxi_sample, tmp_path):
  """TFX fingerprints input files by size and modification time (seconds):
  the data gate's digest of the content is in CsvExampleGen's cache key."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  header, rows = read_csv(taxi_sample)
  fare = header.index('fare')
  data = write_csv(tmp_path / 'd.csv', header, rows[:600])
  stat = data.stat()
  output = tmp_path / 'out'
  args = ['run', '--set', f'data.path={data}', '--output', str(output)]
  assert run_cli(args).exit_code == runner.EXIT_PUSHED
  swap = str.maketrans('12', '21')  # other fares, the same bytes long
  edited = [row[:fare] + [row[fare].translate(swap)] + row[fare + 1:]
            for row in rows[:600]]
  write_csv(data, header, edited)
  os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert data.stat().st_size == stat.st_size
  result = run_cli(args)
  assert result.exit_code in (runner.EXIT_PUSHED, runner.EXIT_NOT_PUSHED)
  latest = max(output.glob('pipeline/CsvExampleGen/examples/*'),
               key=lambda p: int(p.name))
  labels = sorted(
      tf.train.Example.FromString(r.numpy()).features.feature['fare']
      .float_list.value[0]
      for r in tf.data.TFRecordDataset(
          [str(p) for p in latest.glob('Split-*/*.gz')],
          compression_type='GZIP'))
  assert labels == pytest.approx(sorted(
      float(row[fare]) for row in edited if row[fare]), rel=1e-6)


def test_a_curated_schema_with_the_files_own_names_is_refused(tmp_path):
  data = write_csv(tmp_path / 'd.csv', ['Trip Miles', 'fare'],
                   [['1', '5'], ['2', '6']])
  schema = tmp_path / 'schema.pbtxt'
  schema.write_text('feature { name: "Trip Miles" type: FLOAT }\n'
                    'feature { name: "fare" type: FLOAT }\n')
  with pytest.raises(input_check.InputError, match=re.escape(
      "features the data does not have: Trip Miles (the schema names "
      "columns as the file does; the model names them: 'Trip Miles' is "
      "'Trip_Miles')")):
    input_check.check_input(_config(tmp_path, data, schema=str(schema)))
  schema.write_text(schema.read_text().replace('"Trip Miles"',
                                               '"Trip_Miles"'))
  assert input_check.check_input(_config(tmp_path, data, schema=str(schema)))
