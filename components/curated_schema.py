"""A curated schema (`data.schema`) shipped inside the pipeline definition.

TFX's ImportSchemaGen takes a path, which a compiled Kubeflow pipeline
would carry as a path on the machine that compiled it. This component
carries the schema's text instead, so the pipeline brings its schema to
any orchestrator, and an edit to the schema is an edit to the component's
properties (its cache key), whatever the file's name.
"""

import os

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import base_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

SCHEMA_TEXT = 'schema_text'
SCHEMA = 'schema'
# The file name TFX's SchemaGen and ImportSchemaGen write.
SCHEMA_FILE = 'schema.pbtxt'


def read_schema_text(path: str) -> str:
  """The text of the schema file at `path`, checked to parse."""
  text = tf.io.gfile.GFile(path).read()
  text_format.Parse(text, schema_pb2.Schema())
  return text


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    schema = text_format.Parse(exec_properties[SCHEMA_TEXT],
                               schema_pb2.Schema())
    uri = artifact_utils.get_single_uri(output_dict[SCHEMA])
    tf.io.gfile.makedirs(uri)
    with tf.io.gfile.GFile(os.path.join(uri, SCHEMA_FILE), 'w') as f:
      f.write(text_format.MessageToString(schema))


class CuratedSchemaSpec(component_spec.ComponentSpec):
  PARAMETERS = {SCHEMA_TEXT: component_spec.ExecutionParameter(type=str)}
  INPUTS = {}
  OUTPUTS = {SCHEMA: component_spec.ChannelParameter(
      type=standard_artifacts.Schema)}


class CuratedSchema(base_component.BaseComponent):
  """Writes the schema text it was built with as a Schema artifact."""

  SPEC_CLASS = CuratedSchemaSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, schema_text: str):
    super().__init__(spec=CuratedSchemaSpec(
        schema_text=schema_text,
        schema=Channel(type=standard_artifacts.Schema)))
