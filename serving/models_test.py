"""Loading versions, on small SavedModels exported here: the probe of the
flat signature call and its keyword-call fallback, and the guard that keeps
a half-copied version directory from being loaded."""

import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfx_e2e.serving import models
from tfx_e2e.serving.model_config import ModelConfig


class _Model(tf.Module):
  """Three inputs, two of one dtype, so that inputs given in the wrong
  order give other outputs."""

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.float32, name='a'),
      tf.TensorSpec([None], tf.float32, name='b'),
      tf.TensorSpec([None], tf.string, name='s')])
  def serve(self, a, b, s):
    return {'difference': a - b,
            'length': tf.strings.length(s),
            'ratio': a / b}  # 0/0: NaN, which must compare equal to itself


def _export(path):
  model = _Model()
  tf.saved_model.save(model, str(path),
                      signatures={'serving_default': model.serve})
  return path


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  return _export(tmp_path_factory.mktemp('model') / '1')


ROWS = {'a': tf.constant([3.0, 0.0, -1.5, 7.0]),
        'b': tf.constant([1.0, 0.0, 2.0, 7.0]),
        's': tf.constant([b'x', b'', b'abc', b'\xff\x00'])}


def _predict(servable, inputs=None):
  _, function = servable.signature('')
  outputs = function(dict(inputs or ROWS))
  return {name: tensor.numpy() for name, tensor in outputs.items()}


def _assert_same(got, expected):
  assert sorted(got) == sorted(expected)
  for name in expected:
    assert got[name].dtype == expected[name].dtype, name
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def _keyword_outputs(servable):
  _, function = servable.signature('')
  return {name: tensor.numpy() for name, tensor in
          function._function(**ROWS).items()}  # pylint: disable=protected-access


def test_the_flat_call_passes_its_probe_and_answers_as_the_keyword_call(
    exported, caplog):
  with caplog.at_level(logging.WARNING, logger=models.__name__):
    servable = models.Servable('m', 1, str(exported))
  _, function = servable.signature('')
  assert function.flat and function.probe_failure is None
  assert not caplog.records
  _assert_same(_predict(servable), _keyword_outputs(servable))


def _raising(self, flat):
  raise TypeError('_call_flat() takes 2 positional arguments')


def _reordered(self, flat):
  # As if a TensorFlow release ordered flat inputs otherwise.
  return _FLAT(self, [flat[1], flat[0], flat[2]])


_FLAT = models.SignatureFunction._call_flat  # pylint: disable=protected-access


@pytest.mark.parametrize('broken_flat_call, why', [
    (_raising, 'the flat call raised TypeError'),
    (_reordered, 'the flat call answered otherwise: output difference')])
def test_a_flat_call_that_fails_its_probe_gives_way_to_the_keyword_call(
    exported, caplog, monkeypatch, broken_flat_call, why):
  expected = _predict(models.Servable('m', 1, str(exported)))  # flat
  monkeypatch.setattr(models.SignatureFunction, '_call_flat',
                      broken_flat_call)
  with caplog.at_level(logging.WARNING, logger=models.__name__):
    servable = models.Servable('m', 1, str(exported))
  _, function = servable.signature('')
  assert not function.flat
  assert function.probe_failure.startswith(why), function.probe_failure
  # One warning for the model, naming the signature and the reason.
  warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1
  assert 'serving_default: ' + why in warnings[0].getMessage()
  # Every request takes the keyword call: the same predictions as the flat
  # call gave before it broke, and TensorFlow's own errors.
  _assert_same(_predict(servable), expected)
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    _predict(servable, {**ROWS, 'a': tf.constant([1, 2, 3, 4])})


def test_a_signature_of_serialized_examples_is_probed_with_zero_rows(
    tmp_path, caplog):
  """A made-up string is no tf.Example: the probe must not be refused (nor
  make TensorFlow log a parse error at every load)."""

  class Examples(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                                name='examples')])
    def serve(self, examples):
      features = tf.io.parse_example(
          examples, {'x': tf.io.FixedLenFeature([], tf.float32)})
      return {'y': features['x'] * 2}

  module = Examples()
  tf.saved_model.save(module, str(tmp_path / '1'),
                      signatures={'serving_default': module.serve})
  with caplog.at_level(logging.WARNING, logger=models.__name__):
    servable = models.Servable('m', 1, str(tmp_path / '1'))
  _, function = servable.signature('')
  assert function.flat, function.probe_failure
  assert not caplog.records
  example = tf.train.Example(features=tf.train.Features(feature={
      'x': tf.train.Feature(float_list=tf.train.FloatList(value=[1.5]))}))
  outputs = function({'examples': tf.constant([example.SerializeToString()])})
  assert outputs['y'].numpy().tolist() == [3.0]


# --- a half-copied version directory -------------------------------------

def test_a_half_copied_version_is_not_loaded_and_the_previous_one_serves(
    exported, tmp_path):
  base = tmp_path / 'm'
  shutil.copytree(exported, base / '1')
  # Version 2 as a copy leaves it midway: variables, no saved_model.pb.
  shutil.copytree(exported / 'variables', base / '2' / 'variables')
  manager = models.ModelManager([ModelConfig('m', str(base))],
                                poll_seconds=3600)
  for _ in range(3):  # more than the two looks a whole version needs
    manager.poll()
  assert manager.servable('m').version == 1
  # Never tried: no failed load of version 2 in the status, only a reason.
  assert sorted(manager.states('m')) == [1]
  assert 'no saved_model.pb' in manager.skipped('m')[2]
  _assert_same(_predict(manager.servable('m')),
               _predict(models.Servable('m', 1, str(exported))))

  # Once the copy is whole (and has settled), version 2 takes over.
  shutil.copy(exported / 'saved_model.pb', base / '2' / 'saved_model.pb')
  for _ in range(2):
    manager.poll()
  assert manager.servable('m').version == 2
  assert 2 not in manager.skipped('m')


def test_a_half_copied_newest_version_leaves_one_off_loads_on_the_previous(
    exported, tmp_path):
  """`predict` and `stream` choose once, without waiting to settle: the
  same guard applies."""
  base = tmp_path / 'm'
  shutil.copytree(exported, base / '1')
  shutil.copytree(exported / 'variables', base / '2' / 'variables')
  tried = []

  def load(path):
    tried.append(path)
    return models.Servable('m', int(path.rsplit('/', 1)[1]), path)

  version, servable, skipped = models.load_newest_version(str(base), load)
  assert (version, servable.version) == (1, 1)
  assert tried == [str(base / '1')]  # version 2 was not even tried
  assert 'no saved_model.pb' in skipped[2]
