"""TFX's cache key covers a component's properties, not the project code
they name: each component that runs this project's code carries its digest.
Editing a module must change the properties of exactly the components that
run it, so that those rerun and the others stay cached."""

import importlib
import importlib.util
from pathlib import Path
import sys

import pytest
from tfx.dsl.compiler import compiler

from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline.config import load_config


def _properties():
  ir = compiler.Compiler().compile(pipeline_def.create_pipeline(load_config()))
  return {node.pipeline_node.node_info.id:
          node.pipeline_node.parameters.SerializeToString(deterministic=True)
          for node in ir.nodes}


@pytest.mark.parametrize('module, components', [
    ('tfx_e2e.components.executors.csv_example_gen',
     {pipeline_def.EXAMPLE_GEN}),
    ('tfx_e2e.formats.csv_rules', {pipeline_def.EXAMPLE_GEN}),
    # The data gate, which screens the input inside CsvExampleGen when
    # nothing screened it before (Kubeflow).
    ('tfx_e2e.pipeline.input_check', {pipeline_def.EXAMPLE_GEN}),
    ('tfx_e2e.components.screened_example_gen', {pipeline_def.EXAMPLE_GEN}),
    ('tfx_e2e.components.preprocessing', {pipeline_def.TRANSFORM}),
    ('tfx_e2e.components.executors.examples_io',
     {pipeline_def.EXAMPLE_GEN, pipeline_def.TRANSFORM}),
    ('tfx_e2e.components.model', {pipeline_def.TRAINER}),
    ('tfx_e2e.components.features',
     {pipeline_def.TRANSFORM, pipeline_def.TRAINER}),
    ('tfx_e2e.components.metrics', {pipeline_def.EVALUATOR}),
    ('tfx_e2e.components.executors.extractors', {pipeline_def.EVALUATOR}),
])
def test_an_edit_to_module_code_changes_its_components_cache_keys(
    module, components, tmp_path, monkeypatch):
  before = _properties()
  original = Path(importlib.import_module(module).__file__)
  edited = tmp_path / original.name
  edited.write_text(original.read_text() + '\n# An edit.\n')
  spec = importlib.util.spec_from_file_location(module, edited)
  edited_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(edited_module)
  monkeypatch.setitem(sys.modules, module, edited_module)
  after = _properties()
  assert {node for node in before if before[node] != after[node]} == components


def test_the_served_baseline_is_never_taken_from_the_cache():
  """Its result depends on what the push destination serves, which is not
  among its inputs; every other component keeps the pipeline's cache."""
  ir = pipeline_def.compile_ir(pipeline_def.create_pipeline(load_config()))
  assert {node.pipeline_node.node_info.id:
          node.pipeline_node.execution_options.caching_options.enable_cache
          for node in ir.nodes} == {
              node.pipeline_node.node_info.id:
              node.pipeline_node.node_info.id != pipeline_def.BASELINE
              for node in ir.nodes}
