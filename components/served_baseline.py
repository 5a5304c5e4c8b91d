"""The baseline of the Evaluator: the model the push destination serves now.

A new model is compared with what TF Serving would answer with today: the
latest integer version under the Pusher's base directory (TF Serving's
default version policy). The same rule runs locally and on every
orchestrator; it needs no resolver, which open-source Kubeflow Pipelines
does not run, and no metadata query, so a model pushed by another run,
another orchestrator or by hand is the baseline as well.

`ServedBaseline` copies that version into its output Model artifact (in
the layout the Evaluator reads, `Format-Serving/`), or leaves the artifact
empty when nothing is served yet; `served_version` says which (0: none).
The Evaluator executors take an empty artifact as no baseline
(`BaselineOrNone`): the change thresholds are then skipped, as TFX does for
a first model.

Its input is the candidate model: the component runs again whenever the
Trainer produced a new model, so a cached baseline never outlives the
candidate it was found for.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional

from absl import logging
import tensorflow as tf
from tfx.components.evaluator import component as evaluator_component
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import base_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.channel import Channel
from tfx.utils import io_utils
from tfx.utils import path_utils

SERVING_MODEL_DIR = 'serving_model_dir'
CANDIDATE = 'model'
BASELINE = 'baseline_model'
# Custom property of the output: the version copied, 0 when none is served.
SERVED_VERSION = 'served_version'
# A version folder's name, as TF Serving reads one (ASCII digits only).
_VERSION = re.compile(r'[0-9]+')


def versions(serving_model_dir: str) -> List[str]:
  """The version folders under `serving_model_dir` holding a SavedModel,
  newest first (highest integer, as TF Serving orders them)."""
  if not tf.io.gfile.isdir(serving_model_dir):
    return []
  found = []
  for name in tf.io.gfile.listdir(serving_model_dir):
    name = name.rstrip('/')
    # A version being written is under another name (atomic_pusher).
    if _VERSION.fullmatch(name) and tf.io.gfile.exists(
        os.path.join(serving_model_dir, name, 'saved_model.pb')):
      found.append(name)
  return sorted(found, key=int, reverse=True)


def _loads(path: str) -> bool:
  try:
    tf.saved_model.load(path)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('Version %s does not load, so TF Serving does not serve '
                    'it: %s', path, str(e).splitlines()[0] if str(e) else e)
    return False
  return True


def served_version(serving_model_dir: str) -> Optional[str]:
  """The version TF Serving serves from `serving_model_dir`: the newest
  that loads, or None. A newer version that fails to load (copied in by
  hand, half written) leaves TF Serving on the one it had, under its
  default availability-preserving policy."""
  return next((version for version in versions(serving_model_dir)
               if _loads(os.path.join(serving_model_dir, version))), None)


class Executor(base_executor.BaseExecutor):
  """Copies the served version into the baseline artifact, if any."""

  def Do(self, input_dict: Dict[str, List[Any]],
         output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    base = exec_properties[SERVING_MODEL_DIR]
    baseline = artifact_utils.get_single_instance(output_dict[BASELINE])
    version = served_version(base)
    if version is None:
      logging.info('No model is served from %s yet: evaluating without a '
                   'baseline.', base)
      baseline.set_int_custom_property(SERVED_VERSION, 0)
      return
    io_utils.copy_dir(os.path.join(base, version),
                      path_utils.serving_model_dir(baseline.uri))
    baseline.set_int_custom_property(SERVED_VERSION, int(version))
    logging.info('Baseline: version %s served from %s.', version, base)


class ServedBaselineSpec(component_spec.ComponentSpec):
  PARAMETERS = {
      SERVING_MODEL_DIR: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {
      CANDIDATE: component_spec.ChannelParameter(
          type=standard_artifacts.Model),
  }
  OUTPUTS = {
      BASELINE: component_spec.ChannelParameter(
          type=standard_artifacts.Model),
  }


class ServedBaseline(base_component.BaseComponent):
  """The model served from `serving_model_dir` now, as a Model artifact."""

  SPEC_CLASS = ServedBaselineSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, model, serving_model_dir: str):
    super().__init__(spec=ServedBaselineSpec(
        model=model, serving_model_dir=serving_model_dir,
        baseline_model=Channel(type=standard_artifacts.Model)))


def has_model(artifact) -> bool:
  """Whether a baseline artifact holds a model (see ServedBaseline)."""
  return tf.io.gfile.exists(os.path.join(
      path_utils.serving_model_path(
          artifact.uri, path_utils.is_old_model_artifact(artifact)),
      'saved_model.pb'))


class BaselineOrNone:
  """Evaluator executor mixin: an empty baseline artifact is no baseline."""

  def Do(self, input_dict, output_dict, exec_properties):
    key = standard_component_specs.BASELINE_MODEL_KEY
    if input_dict.get(key) and not all(map(has_model, input_dict[key])):
      input_dict = dict(input_dict)
      del input_dict[key]
    super().Do(input_dict, output_dict, exec_properties)


class EvaluatorExecutor(BaselineOrNone, evaluator_executor.Executor):
  """TFX's Evaluator executor, taking an empty baseline as none."""


class Evaluator(evaluator_component.Evaluator):
  """TFX's Evaluator (same spec, artifacts and id) for a ServedBaseline."""

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(EvaluatorExecutor)
