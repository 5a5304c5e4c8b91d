"""The same pipeline on Kubeflow Pipelines v2: compile and submit.

`compile_pipeline` places the one pipeline definition on the cluster (paths,
image and Beam profile from the configuration's `kubeflow` section) and
writes it with TFX's KubeflowV2DagRunner: a KFP v2 PipelineSpec (YAML) for
Kubeflow Pipelines, or a Vertex AI PipelineJob (JSON).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, Optional

from tfx_e2e.pipeline.config import ConfigError, PipelineConfig

TARGET_SUFFIXES = {'kubeflow': ('.yaml', '.yml'), 'vertex': ('.json',)}


def _placeholder_to_cel_with_keys(original):
  """TFX's KFP v2 compiler drops the key of `placeholder['key']` and writes
  `[0]`, so the data gate's condition on the per-split `blessed` dictionary
  of ExampleValidator would test the wrong thing on Kubeflow. This writes
  `['key']` (CEL map access) and leaves the rest to TFX.

  The function patched: `tfx.orchestration.kubeflow.v2.compiler_utils.
  placeholder_to_cel`, whose `index_op` branch formats only
  `IndexOperator.index`. Written for TFX 1.16.0 (with kfp 2.5.0, whose SDK
  is not involved: the CEL is TFX's own); a later copy of the file seen
  upstream had the same branch. No upstream issue or pull request reports
  it (searched the tensorflow/tfx and kubeflow/pipelines trackers); drop
  this once TFX formats `IndexOperator.key`.
  """

  def placeholder_to_cel(expression):
    if expression.HasField('operator') and expression.operator.WhichOneof(
        'operator_type') == 'index_op' and expression.operator.index_op.key:
      index_op = expression.operator.index_op
      return f"{placeholder_to_cel(index_op.expression)}['{index_op.key}']"
    return original(expression)

  return placeholder_to_cel


@contextlib.contextmanager
def _cel_with_keys(compiler_utils) -> Iterator[None]:
  """`compiler_utils.placeholder_to_cel` wrapped (see above) while the
  pipeline compiles, and the original put back afterwards, even on error:
  the module is TFX's, shared with any other compile in this process.
  TFX's recursive calls look the name up in the module, so they take the
  wrapper too."""
  original = compiler_utils.placeholder_to_cel
  compiler_utils.placeholder_to_cel = _placeholder_to_cel_with_keys(original)
  try:
    yield
  finally:
    compiler_utils.placeholder_to_cel = original


def compile_pipeline(config: PipelineConfig, target: str,
                     output_file: str) -> Path:
  """Compiles the pipeline of `config` for Kubeflow Pipelines or Vertex AI.

  Args:
    config: the configuration; its `kubeflow` section places the pipeline.
    target: 'kubeflow' (a KFP v2 PipelineSpec, .yaml) or 'vertex' (a Vertex
      AI PipelineJob, .json).
    output_file: where the compiled file goes; its suffix must fit `target`.

  Returns:
    The compiled file's path.

  Raises:
    ConfigError: an unknown target or a suffix that does not fit it.
  """
  # Imported here: TensorFlow and the KFP SDK load slowly.
  from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
  from tfx.orchestration.kubeflow.v2 import compiler_utils  # pylint: disable=import-outside-toplevel
  from tfx_e2e.pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel

  path = Path(output_file)
  if target not in TARGET_SUFFIXES:
    raise ConfigError(f'--target must be one of {", ".join(TARGET_SUFFIXES)}')
  if path.suffix not in TARGET_SUFFIXES[target]:
    raise ConfigError(
        f'a {target} pipeline file must end in '
        f'{" or ".join(TARGET_SUFFIXES[target])}: {output_file}')
  path.parent.mkdir(parents=True, exist_ok=True)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=config.kubeflow.image),
      output_dir=str(path.parent), output_filename=path.name)
  with _cel_with_keys(compiler_utils):
    runner.run(create_pipeline(config, target='kubeflow'))
  return path


def submit(config: PipelineConfig, pipeline_file: str, host: str,
           experiment: str, run_name: Optional[str] = None,
           parameters: Optional[Dict[str, str]] = None):
  """Starts a run of a compiled pipeline on the KFP endpoint `host`.

  A PipelineSpec has no pipeline root of its own: the run gets the
  configuration's `kubeflow.pipeline_root`.
  """
  import kfp  # pylint: disable=import-outside-toplevel
  client = kfp.Client(host=host)
  return client.create_run_from_pipeline_package(
      pipeline_file, arguments=parameters or {}, run_name=run_name,
      experiment_name=experiment,
      pipeline_root=config.kubeflow.pipeline_root,
      enable_caching=config.enable_cache)
