"""CsvExampleGen's executors with the data gate in front.

On an orchestrator that runs the compiled pipeline by itself (Kubeflow),
nothing checks the CSV before CsvExampleGen reads it. Both CsvExampleGen
executors (TFX's, and the fast one in components/executors/) therefore
call `screened` first: the checks of pipeline/input_check.py, with the
same messages, and the normalized copy read instead of the input when the
gate makes one. A local run checked the input before TFX started and says
so in the custom_config; it is not read twice.
"""

import os
from typing import Any, Callable, Dict

from google.protobuf import wrappers_pb2
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from tfx_e2e.pipeline import input_check


def _custom_config_text(exec_properties: Dict[str, Any]) -> str:
  """The JSON text the pipeline packed into ExampleGen's custom_config."""
  packed = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
  if not packed:
    return ''
  custom_config = example_gen_pb2.CustomConfig()
  proto_utils.json_to_proto(packed, custom_config)
  text = wrappers_pb2.StringValue()
  if not custom_config.custom_config.Unpack(text):
    return ''
  return text.value


def screened(exec_properties: Dict[str, Any], work_dir: Callable[[], str]
             ) -> Dict[str, Any]:
  """`exec_properties` with the input screened (input_check.screen) and,
  if the gate wrote a normalized copy, pointing at it (under `work_dir()`,
  asked for only then: an executor without a context has none)."""
  input_config = example_gen_pb2.Input()
  proto_utils.json_to_proto(
      exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
      input_config)
  if len(input_config.splits) != 1:
    return exec_properties
  input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
  pattern = input_config.splits[0].pattern
  settings = _custom_config_text(exec_properties)
  if not input_check.needs_screening(settings):
    return exec_properties
  new_base, new_pattern = input_check.screen(
      settings, input_base, pattern, os.path.join(work_dir(), 'input'))
  if (new_base, new_pattern) == (input_base, pattern):
    return exec_properties
  input_config.splits[0].pattern = new_pattern
  return dict(exec_properties, **{
      standard_component_specs.INPUT_BASE_KEY: new_base,
      standard_component_specs.INPUT_CONFIG_KEY:
          proto_utils.proto_to_json(input_config)})


class Executor(csv_executor.Executor):
  """TFX's CsvExampleGen executor, screened."""

  def Do(self, input_dict, output_dict, exec_properties):
    super().Do(input_dict, output_dict,
               screened(exec_properties, self._get_tmp_dir))

