"""The data gate: TFX's ExampleValidator, with its verdict as one scalar.

TFX's validator records a per-split dictionary, `blessed` ({'train': 1,
'eval': 0}), a struct-valued custom property. A condition on it works in
TFX's local orchestrator and on Vertex AI, but open-source Kubeflow
Pipelines stores artifact metadata in MLMD and hands structs back in
another shape, so a condition indexing into it fails there instead of
gating. This executor also records `DATA_OK`, an integer that is 1 when
every validated split is free of anomalies: the pipeline's gate tests that
one value, which every orchestrator hands back as it was written.
"""

from tfx.components.example_validator import component as validator_component
from tfx.components.example_validator import executor as validator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils
from tfx.types import standard_component_specs

# Custom property of the anomalies artifact: 1 when every split validated.
DATA_OK = 'data_ok'


class Executor(validator_executor.Executor):
  """TFX's ExampleValidator executor, plus `DATA_OK`."""

  def Do(self, input_dict, output_dict, exec_properties):
    super().Do(input_dict, output_dict, exec_properties)
    anomalies = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.ANOMALIES_KEY])
    blessed = anomalies.get_json_value_custom_property(
        validator_executor.ARTIFACT_PROPERTY_BLESSED_KEY) or {}
    # No split validated is no verdict: the gate stays closed.
    anomalies.set_int_custom_property(DATA_OK, int(bool(blessed) and all(
        value == validator_executor.BLESSED_VALUE
        for value in blessed.values())))


class ExampleValidator(validator_component.ExampleValidator):
  """TFX's ExampleValidator (same spec, artifacts and id) with `DATA_OK`."""

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
