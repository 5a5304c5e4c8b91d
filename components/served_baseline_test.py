"""ServedBaseline: which version TF Serving serves (integer names, compared
as numbers, only complete SavedModels), its copy in the Evaluator's layout,
an empty artifact when nothing is served, and the Evaluator mixin that
takes an empty artifact as no baseline."""

import os
import shutil

import pytest
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import channel
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs

from tfx_e2e.components import served_baseline


class _Doubler(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def __call__(self, x):
    return 2.0 * x


@pytest.fixture(scope='module')
def saved_model(tmp_path_factory):
  """A real SavedModel (saved_model.pb, variables/, assets/)."""
  path = tmp_path_factory.mktemp('saved') / 'model'
  tf.saved_model.save(_Doubler(), str(path))
  return path


def _version(base, name, saved_model, marker=None):
  """A version directory holding the SavedModel, and a nested asset saying
  which version it is."""
  target = base / name
  shutil.copytree(saved_model, target)
  nested = target / 'assets' / 'nested' / 'deeper'
  nested.mkdir(parents=True)
  (nested / 'which.txt').write_text(marker or name)
  return target


def _tree(root):
  """Every file and directory under `root`, relative, with file bytes."""
  entries = {}
  for directory, dirs, files in os.walk(root):
    rel = os.path.relpath(directory, root)
    for d in dirs:
      entries[os.path.normpath(os.path.join(rel, d)) + '/'] = None
    for f in files:
      with open(os.path.join(directory, f), 'rb') as fh:
        entries[os.path.normpath(os.path.join(rel, f))] = fh.read()
  return entries


def _run(base, out_dir):
  baseline = standard_artifacts.Model()
  baseline.uri = str(out_dir)
  served_baseline.Executor().Do(
      {served_baseline.CANDIDATE: [standard_artifacts.Model()]},
      {served_baseline.BASELINE: [baseline]},
      {served_baseline.SERVING_MODEL_DIR: str(base)})
  return baseline


def _served_version_property(artifact):
  prop = artifact.mlmd_artifact.custom_properties[
      served_baseline.SERVED_VERSION]
  assert prop.WhichOneof('value') == 'int_value'
  return prop.int_value


def test_versions_compare_as_numbers_not_strings(tmp_path, saved_model):
  for name in ('9', '10', '2'):
    _version(tmp_path, name, saved_model)
  assert served_baseline.served_version(str(tmp_path)) == '10'


def test_only_complete_integer_versions_count(tmp_path, saved_model):
  _version(tmp_path, '7', saved_model)
  # Higher, but not a version TF Serving loads: a staging copy the atomic
  # pusher renames later, a hidden one, names with digits in them.
  for name in ('.staging-99', '99.tmp', 'v99', '99a', '-99', ' 99'):
    _version(tmp_path, name, saved_model)
  # A version being written: its directory exists, saved_model.pb not yet.
  (tmp_path / '100' / 'variables').mkdir(parents=True)
  # A file named like a version.
  (tmp_path / '101').write_text('not a directory')
  assert served_baseline.served_version(str(tmp_path)) == '7'


def test_nothing_served(tmp_path):
  assert served_baseline.served_version(str(tmp_path / 'missing')) is None
  assert served_baseline.served_version(str(tmp_path)) is None  # empty
  (tmp_path / '3').mkdir()  # a version without a model
  assert served_baseline.served_version(str(tmp_path)) is None


def test_executor_copies_the_served_version_whole(tmp_path, saved_model):
  base = tmp_path / 'serving'
  for name in ('9', '10'):
    _version(base, name, saved_model)
  (base / '11').mkdir()  # being written
  baseline = _run(base, tmp_path / 'baseline')

  assert _served_version_property(baseline) == 10
  copied = tmp_path / 'baseline' / 'Format-Serving'
  # Every file and (nested, also empty) directory, byte for byte.
  assert _tree(copied) == _tree(base / '10')
  assert (copied / 'assets' / 'nested' / 'deeper' / 'which.txt'
          ).read_text() == '10'
  assert served_baseline.has_model(baseline)
  # The copy is a model that runs.
  loaded = tf.saved_model.load(str(copied))
  assert loaded(tf.constant([1.5, -2.0])).numpy().tolist() == [3.0, -4.0]


@pytest.mark.parametrize('make_base', [
    lambda tmp: tmp / 'missing',
    lambda tmp: tmp,
])
def test_executor_without_a_served_model_leaves_the_artifact_empty(
    tmp_path, make_base):
  base = make_base(tmp_path / 'serving')
  (tmp_path / 'serving').mkdir()
  (tmp_path / 'serving' / '.staging-1').mkdir()
  out = tmp_path / 'baseline'
  baseline = _run(base, out)
  assert _served_version_property(baseline) == 0
  assert not (out / 'Format-Serving').exists()
  assert not served_baseline.has_model(baseline)


class _Recorder(base_executor.BaseExecutor):
  """The executor below the mixin: records what it was handed."""

  def Do(self, input_dict, output_dict, exec_properties):
    self.seen = input_dict


class _Screened(served_baseline.BaselineOrNone, _Recorder):
  pass


def _model(uri):
  artifact = standard_artifacts.Model()
  artifact.uri = str(uri)
  return artifact


def test_an_empty_baseline_is_no_baseline(tmp_path, saved_model):
  key = standard_component_specs.BASELINE_MODEL_KEY
  full = tmp_path / 'full'
  shutil.copytree(saved_model, full / 'Format-Serving')
  empty = tmp_path / 'empty'
  empty.mkdir()
  candidate = _model(tmp_path / 'candidate')

  def seen(baselines):
    inputs = {standard_component_specs.MODEL_KEY: [candidate]}
    if baselines is not None:
      inputs[key] = baselines
    executor = _Screened()
    executor.Do(inputs, {}, {})
    # The caller's dictionary is left as it was.
    assert (key in inputs) == (baselines is not None)
    assert executor.seen[standard_component_specs.MODEL_KEY] == [candidate]
    return executor.seen.get(key)

  with_model = [_model(full)]
  assert seen(with_model) == with_model
  assert seen([_model(empty)]) is None
  # One empty among several: no baseline (the Evaluator takes one).
  assert seen([_model(full), _model(empty)]) is None
  assert seen([_model(tmp_path / 'never-written')]) is None
  assert not seen([])
  assert seen(None) is None


def test_the_component_wires_candidate_in_baseline_out(tmp_path):
  from tfx_e2e.components import served_baseline as sb
  component = sb.ServedBaseline(
      model=channel.Channel(type=standard_artifacts.Model),
      serving_model_dir=str(tmp_path))
  assert component.exec_properties[sb.SERVING_MODEL_DIR] == str(tmp_path)
  assert component.outputs[sb.BASELINE].type == standard_artifacts.Model
  assert sb.CANDIDATE in component.inputs
  assert sb.Evaluator.EXECUTOR_SPEC.executor_class is sb.EvaluatorExecutor
  assert issubclass(sb.EvaluatorExecutor, sb.BaselineOrNone)


def test_only_ascii_digit_names_are_versions(tmp_path, saved_model):
  _version(tmp_path, '5', saved_model)
  _version(tmp_path, '²', saved_model)
  _version(tmp_path, '٣', saved_model)
  assert served_baseline.served_version(str(tmp_path)) == '5'


def test_a_version_that_does_not_load_is_not_the_served_one(tmp_path,
                                                            saved_model):
  """A newer folder with only saved_model.pb (a copy in progress, by hand):
  TF Serving fails to load it and keeps serving the version it had, so
  that one is the baseline, and the executor does not fail."""
  _version(tmp_path, '7', saved_model)
  broken = tmp_path / '8'
  broken.mkdir()
  shutil.copy(saved_model / 'saved_model.pb', broken / 'saved_model.pb')
  assert served_baseline.versions(str(tmp_path)) == ['8', '7']
  assert served_baseline.served_version(str(tmp_path)) == '7'
  artifact = _run(tmp_path, tmp_path.parent / 'out')
  assert _served_version_property(artifact) == 7
