"""The atomic Pusher executor on a real SavedModel: a version appears whole
or not at all, even when the copy dies half-way."""

import os
from unittest import mock

import pytest
import tensorflow as tf
from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from tfx_e2e.components.executors import atomic_pusher


@pytest.fixture
def push(tmp_path):
  """push() runs the executor once: a model into tmp/serving, blessed
  unless push(blessed=0)."""
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'trainer' / 'model')
  module = tf.Module()
  module.scale = tf.Variable(2.0)
  module.__call__ = tf.function(lambda x: x * module.scale,
                                input_signature=[tf.TensorSpec([None])])
  tf.saved_model.save(module, os.path.join(model.uri, 'Format-Serving'))
  base = tmp_path / 'serving' / 'm'
  destination = proto_utils.proto_to_json(tfx.proto.PushDestination(
      filesystem=tfx.proto.PushDestination.Filesystem(
          base_directory=str(base))))

  def run(blessed=1):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / 'blessing')
    blessing.set_int_custom_property('blessed', blessed)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / 'pushed' / str(len(os.listdir(tmp_path))))
    atomic_pusher.Executor().Do(
        {'model': [model], 'model_blessing': [blessing]},
        {'pushed_model': [pushed]}, {'push_destination': destination})
    return pushed

  run.base = base
  return run


def _versions(base):
  return sorted(p for p in os.listdir(base) if not p.startswith('.'))


def test_a_push_appears_whole_under_an_integer_version(push):
  pushed = push()
  version = pushed.get_string_custom_property('pushed_version')
  assert _versions(push.base) == [version]
  assert os.listdir(push.base) == [version]  # no staging left
  assert pushed.get_string_custom_property('pushed_destination') == str(
      push.base / version)
  assert tf.saved_model.load(str(push.base / version))(
      tf.constant([1.5])).numpy().tolist() == [3.0]


def test_a_push_killed_mid_copy_leaves_no_loadable_version(push):
  copied = []
  real_copy = fileio.copy

  def dies_after_two_files(source, destination, *args, **kwargs):
    if len(copied) == 2:
      raise OSError('killed')
    copied.append(destination)
    return real_copy(source, destination, *args, **kwargs)

  # TFX's copy_dir copies each file with tfx.dsl.io.fileio.copy.
  with mock.patch.object(fileio, 'copy', dies_after_two_files):
    with pytest.raises(OSError, match='killed'):
      push()
  assert copied and all('/.staging/' in path for path in copied)
  assert _versions(push.base) == []  # a server polling sees nothing
  pushed = push()  # the next push clears the remains and succeeds
  assert _versions(push.base) == [
      pushed.get_string_custom_property('pushed_version')]
  assert '.staging' not in os.listdir(push.base)


def test_pushes_within_one_second_get_distinct_versions(push):
  with mock.patch('time.time', return_value=1_800_000_000.2):
    first, second = push(), push()
  assert _versions(push.base) == ['1800000000', '1800000001']
  assert second.get_string_custom_property('pushed_version') == '1800000001'
  assert first.get_string_custom_property('pushed_destination') != (
      second.get_string_custom_property('pushed_destination'))


def test_a_model_that_is_not_blessed_is_not_pushed(push):
  """Nothing appears for a server to load, nothing is left in staging, and
  the artifact says so; a version pushed before stays as it was."""
  refused = push(blessed=0)
  assert refused.get_int_custom_property('pushed') == 0
  assert not refused.get_string_custom_property('pushed_version')
  assert not refused.get_string_custom_property('pushed_destination')
  assert not push.base.exists() or os.listdir(push.base) == []

  first = push()
  version = first.get_string_custom_property('pushed_version')
  # What a killed push left in staging goes, blessed or not.
  (push.base / atomic_pusher.STAGING_DIR / 'leftover').mkdir(parents=True)
  refused = push(blessed=0)
  assert refused.get_int_custom_property('pushed') == 0
  assert os.listdir(push.base) == [version]
  assert tf.saved_model.load(str(push.base / version))(
      tf.constant([1.0])).numpy().tolist() == [2.0]
