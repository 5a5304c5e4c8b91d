"""A Pusher executor whose push is atomic on a local file system.

TFX's filesystem Pusher copies the model file by file into
`<base>/<version>/` (saved_model.pb last). A model server that lists the
base path while the copy runs sees the integer directory before it is
whole, and a push killed half-way leaves that partial version behind for
good. This executor lets TFX's own Pusher write the version into
`<base>/.staging/` (TF Serving and this project's server load only
all-digit directory names), then renames it into place: the version
appears complete or not at all. A later push clears what a killed one
left in staging.

On object stores (gs://, s3://) a rename is a copy, so this gives no
atomicity there; TF Serving then relies on saved_model.pb being written
last, as with TFX's own Pusher.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List

from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

STAGING_DIR = '.staging'
_log = logging.getLogger(__name__)


class Executor(pusher_executor.Executor):

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    key = standard_component_specs.PUSH_DESTINATION_KEY
    destination = proto_utils.json_to_proto(exec_properties[key],
                                            pusher_pb2.PushDestination())
    base = destination.filesystem.base_directory
    staging = os.path.join(base, STAGING_DIR)
    if fileio.exists(staging):  # what a killed push left
      fileio.rmtree(staging)
    destination.filesystem.base_directory = staging
    super().Do(input_dict, output_dict, dict(
        exec_properties, **{key: proto_utils.proto_to_json(destination)}))
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not model_push.get_int_custom_property('pushed'):
      return
    staged = model_push.get_string_custom_property('pushed_version')
    version = int(staged)
    while fileio.exists(os.path.join(base, str(version))):
      version += 1  # two pushes within one second: the next free version
    serving_path = os.path.join(base, str(version))
    fileio.rename(os.path.join(staging, staged), serving_path)
    fileio.rmtree(staging)
    model_push.set_string_custom_property('pushed_version', str(version))
    model_push.set_string_custom_property('pushed_destination', serving_path)
    _log.info('Model pushed atomically to %s.', serving_path)
