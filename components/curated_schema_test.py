"""CuratedSchema: the schema's text, carried as an exec property, written as
the one schema.pbtxt that TFX's schema readers find."""

import os

import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from tfx_e2e.components import curated_schema

SCHEMA_TEXT = '''
# A comment, odd spacing and a feature name that is not ASCII.
feature {   name: "fare"  type: FLOAT presence { min_fraction: 1.0 } }
feature {
  name: "payment_type"
  type: BYTES
  domain: "payment_type"
}
feature { name: "café" type: INT }
string_domain { name: "payment_type" value: "Cash" value: "Crédit" }
'''


def _run(uri, text):
  schema = standard_artifacts.Schema()
  schema.uri = str(uri)
  curated_schema.Executor().Do(
      {}, {curated_schema.SCHEMA: [schema]},
      {curated_schema.SCHEMA_TEXT: text})
  return schema


def test_written_as_the_schema_it_was_given(tmp_path):
  _run(tmp_path / 'schema', SCHEMA_TEXT)
  assert os.listdir(tmp_path / 'schema') == ['schema.pbtxt']
  # Read as ExampleValidator, Transform and the Trainer read it.
  read = io_utils.SchemaReader().read(
      io_utils.get_only_uri_in_dir(str(tmp_path / 'schema')))
  assert read == text_format.Parse(SCHEMA_TEXT, schema_pb2.Schema())
  assert [f.name for f in read.feature] == ['fare', 'payment_type', 'café']
  assert list(read.string_domain[0].value) == ['Cash', 'Crédit']


def test_a_second_run_replaces_the_file(tmp_path):
  _run(tmp_path, SCHEMA_TEXT)
  _run(tmp_path, 'feature { name: "x" type: INT }')
  read = io_utils.SchemaReader().read(str(tmp_path / 'schema.pbtxt'))
  assert [f.name for f in read.feature] == ['x']


def test_a_text_that_is_no_schema_writes_nothing(tmp_path):
  with pytest.raises(text_format.ParseError):
    _run(tmp_path / 'schema', 'feature { name: "x" kind: SIDEWAYS }')
  assert not (tmp_path / 'schema').exists()


def test_read_schema_text_keeps_the_text_and_checks_it(tmp_path):
  path = tmp_path / 'my.pbtxt'
  path.write_text(SCHEMA_TEXT, encoding='utf-8')
  assert curated_schema.read_schema_text(str(path)) == SCHEMA_TEXT
  path.write_text('feature { name: ', encoding='utf-8')
  with pytest.raises(text_format.ParseError):
    curated_schema.read_schema_text(str(path))


def test_the_text_is_the_component_s_property():
  component = curated_schema.CuratedSchema(SCHEMA_TEXT)
  assert component.exec_properties[curated_schema.SCHEMA_TEXT] == SCHEMA_TEXT
  assert not component.inputs
  assert (component.outputs[curated_schema.SCHEMA].type ==
          standard_artifacts.Schema)
  # Another text, another property: another cache key.
  other = curated_schema.CuratedSchema(SCHEMA_TEXT + '\n')
  assert (other.exec_properties[curated_schema.SCHEMA_TEXT] !=
          component.exec_properties[curated_schema.SCHEMA_TEXT])
