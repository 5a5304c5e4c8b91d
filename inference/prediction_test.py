"""The shared pieces of batch and streaming prediction: CSV files read
column by column, and encoded into tf.Examples."""

import numpy as np
import pytest
import tensorflow as tf

from tfx_e2e.formats import csv_rules
from tfx_e2e.inference import prediction
from tfx_e2e.pipeline.config import DataConfig, PipelineConfig, save_run_config

TYPES = {'miles': tf.float32, 'seconds': tf.int64, 'company': tf.string,
         'absent': tf.int64}


def _features(serialized):
  """{name: values}; an empty feature (no value list) is missing, which is
  how tf.io.parse_example reads it too."""
  feature = tf.train.Example.FromString(serialized).features.feature
  return {name: list(getattr(feature[name], kind).value)
          for name in feature
          if (kind := feature[name].WhichOneof('kind'))}


def _encode(text):
  return prediction.examples_for_model(prediction.read_csv(text.encode()),
                                       TYPES)


def test_values_are_typed_and_empty_ones_left_out():
  examples, errors = _encode('seconds,company,miles,other\n'
                             '60,Flash Cab,1.5,x\n,,,y\n1e3,Ünï,-0,z\n')
  assert errors == {}
  assert [_features(e) for e in examples] == [
      {'seconds': [60], 'company': [b'Flash Cab'], 'miles': [1.5]},
      {},
      {'seconds': [1000], 'company': ['Ünï'.encode()], 'miles': [0.0]}]


def test_bad_values_name_their_column_and_keep_the_other_rows():
  examples, errors = _encode('miles,seconds\n1,2\nfar,2\n1,2.5\ninf,3\n'
                             ' 4 ,nan\n5,6\n1e300,1\n1,1e19\n')
  assert errors == {
      1: "column 'miles': could not convert string to float: 'far'",
      2: "column 'seconds': '2.5' is not an integer",
      6: "column 'miles': '1e300' is out of the float32 range",
      7: "column 'seconds': '1e19' is out of the int64 range"}
  # `inf` and `nan` are missing-value markers, as in training.
  assert [_features(e) for e in examples] == [
      {'miles': [1.0], 'seconds': [2]}, {'seconds': [3]}, {'miles': [4.0]},
      {'miles': [5.0], 'seconds': [6]}]


def test_rows_keep_their_lines_and_ragged_rows_are_reported():
  text = b'a,b\r\n1,2\r\n\r\n3\r\n"x,y",4\r\n"multi\nline",5\r\n6,7\r\n'
  table = prediction.read_csv(text)
  assert table.header == ['a', 'b']
  assert table.line_numbers.tolist() == [2, 5, 6, 8]
  assert table.values('a') == ['1', 'x,y', 'multi\nline', '6']
  assert table.bad_rows == [(4, '3', '1 fields, but the header has 2')]
  assert table.raw(5) == '"x,y",4'
  # Without values that span lines (the common case) and with them, the
  # same lines.
  table = prediction.read_csv(text.replace(b'"multi\nline",5\r\n', b''))
  assert table.line_numbers.tolist() == [2, 5, 6]
  table = prediction.read_csv(text + b'"bad\nrow",5,6\n\n9,9\n')
  assert table.line_numbers.tolist() == [2, 5, 6, 8, 12]
  assert table.bad_rows[-1] == (9, '"bad\nrow",5,6',
                                '3 fields, but the header has 2')


def test_a_lone_carriage_return_ends_a_line_as_for_the_reader():
  for text in (b'a,b\r1,2\r3,4\r', b'a,b\n1,2\r3,4\n'):
    table = prediction.read_csv(text)
    assert table.line_numbers.tolist() == [2, 3]
    assert table.values('a') == ['1', '3']
  table = prediction.read_csv(b'a,b\n"x\ry",2\n5,6\n')
  assert table.line_numbers.tolist() == [2, 4]


def test_odd_headers_keep_every_value_as_text():
  table = prediction.read_csv(b'\xef\xbb\xbfid,x\n007,1.50\n')  # a BOM
  assert table.header == ['id', 'x']
  assert (table.values('id'), table.values('x')) == (['007'], ['1.50'])
  # A quoted newline in the header: the reader's own column names.
  table = prediction.read_csv(b'a,"b\nc"\n1,\n2,3\n')
  assert table.header == ['a', 'b\nc']
  assert table.values('b\nc') == ['', '3']
  assert table.line_numbers.tolist() == [3, 4]


def test_files_that_are_not_csv_text():
  with pytest.raises(ValueError, match='not UTF-8 text'):
    prediction.read_csv(b'a,b\n\xff,1\n')
  with pytest.raises(ValueError, match='malformed CSV header'):
    prediction.read_csv(b'a,\x00b\n1,2\n')
  empty = prediction.read_csv(b'a,b\n\n')
  assert len(empty) == 0 and empty.bad_rows == []
  assert np.array_equal(prediction.read_csv(b'').line_numbers, [])


@pytest.mark.parametrize('text', [
    'a,b\n1,"2\n3,4\n',            # the rows after it would vanish into it
    'a,b\n0,0\n1,"2\n3,4\n5,6',
    'a\tb\n1\t"x\n',
])
def test_a_quote_never_closed_refuses_the_file(text):
  with pytest.raises(ValueError, match='never closed'):
    prediction.read_csv(text.encode(),
                        csv_rules.CsvRules(delimiter='\t' if '\t' in text
                                           else ''))


def test_quotes_that_close_or_sit_inside_a_value_are_read():
  table = prediction.read_csv(b'a,b\n1,"2\n3"\n4,5" screen\n6,""\n')
  assert len(table) == 3
  assert table.bad_rows == []


def test_values_are_read_by_the_training_rules():
  """Header names as the model names them, missing-value markers, spaces
  and another delimiter, as the training input was read."""
  table = prediction.read_csv('Trip Miles;Compañía;seconds\n'
                              ' 2.5 ;NA;60\nN/A; Flash Cab ;?\n'.encode())
  examples, errors = prediction.examples_for_model(
      table, {'Trip_Miles': tf.float32, 'Compania': tf.string,
              'seconds': tf.int64})
  assert errors == {}
  assert [_features(e) for e in examples] == [
      {'Trip_Miles': [2.5], 'seconds': [60]}, {'Compania': [b'Flash Cab']}]
  assert table.values('Trip Miles') == table.values('Trip_Miles') == [
      ' 2.5 ', 'N/A']  # passthrough columns as the file has them
  assert prediction.missing_columns(
      table.header, {'Trip_Miles': tf.float32, 'fare': tf.float32}) == [
          'fare']


def test_configured_markers_and_delimiter():
  rules = csv_rules.CsvRules(delimiter='|', na_values=('missing',))
  table = prediction.read_csv(b'a|b\nmissing|NA\n', rules)
  examples, _ = prediction.examples_for_model(
      table, {'a': tf.string, 'b': tf.string})
  assert [_features(e) for e in examples] == [{'b': [b'NA']}]


def test_model_inputs_are_found_whatever_the_order_of_the_columns():
  """Training named `Trip Miles` Trip_Miles and `x` x: a file with its
  columns in another order feeds each input its own column."""
  types = {'Trip_Miles': tf.float32, 'x': tf.int64}
  for text in (b'Trip Miles,x\n1.5,2\n', b'x,Trip Miles\n2,1.5\n'):
    examples, _ = prediction.examples_for_model(prediction.read_csv(text),
                                                types)
    assert [_features(e) for e in examples] == [{'Trip_Miles': [1.5],
                                                 'x': [2]}]


def test_a_header_that_makes_one_input_of_two_columns_is_refused():
  with pytest.raises(ValueError, match="would both be the model input 'a_b'"):
    prediction.read_csv(b'a b,a_b\n1,2\n')


def test_predict_with_a_model_reads_csv_by_its_runs_rules(tmp_path):
  """`--model DIR` alone: the CSV rules (here a marker) come from the run
  that pushed the model, not from ./output."""
  from tfx_e2e.cli import commands as cli  # pylint: disable=import-outside-toplevel
  output = tmp_path / 'run'
  config = PipelineConfig(output_dir=str(output), data=DataConfig(
      na_values=['unknown']))
  save_run_config(config)
  model = output / 'serving' / config.model_name / '7'
  args = cli.build_parser().parse_args(
      ['predict', '--model', str(model), '--input', 'x.csv', '--output', 'p'])
  assert cli.load_config(args).data.na_values == ['unknown']
