"""Review of issue 21 (Kubeflow for real): confirmed faults of the compiled
spec, of `submit` and of compile's storage checks, each as the real code
path runs it (TFX's compiler, the KFP SDK's job configuration that
`tfx-e2e submit` goes through, `kubeflow.check_storage`).

Open-source KFP's cache key (backend/src/v2/driver/cache.go getFingerPrint,
cacheutils.GenerateCacheKey) is the task's input parameters, the names of
its input artifacts, its output specs with the URIs wiped, its command,
arguments, image and PVC names: nothing of the content of a file the task
reads from a volume or a bucket. The backend ignores TFX's
`lifecycle.preCacheCheck` (the ExampleGen driver that fingerprints the
input on Vertex AI).
"""

import pytest

from tfx_e2e.pipeline import kubeflow
from tfx_e2e.pipeline import pipeline as pipeline_def
from tfx_e2e.pipeline.config import ConfigError, load_config, parse_overrides


def _config(*overrides):
  return load_config(overrides=parse_overrides(list(overrides)))


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  """The default configuration compiled for open-source KFP."""
  config = _config()
  path = kubeflow.compile_pipeline(
      config, 'kubeflow',
      str(tmp_path_factory.mktemp('review') / 'pipeline.yaml'))
  return config, path


def _task_caching(pipeline_spec: dict) -> dict:
  return {name: task.get('cachingOptions', {}).get('enableCache', False)
          for name, task in pipeline_spec['root']['dag']['tasks'].items()}


def test_submit_keeps_the_served_baseline_uncached(compiled):
  config, path = compiled
  import kfp  # pylint: disable=import-outside-toplevel
  assert not _task_caching(_load_spec(path))[pipeline_def.BASELINE]
  # What kfp.Client.create_run_from_pipeline_package sends, with the
  # arguments kubeflow.submit gives it (no server needed to build it).
  job = kfp.Client._create_job_config(  # pylint: disable=protected-access
      None, params={}, pipeline_package_path=str(path), pipeline_id=None,
      version_id=None, **kubeflow.run_settings(config, str(path)))
  spec = job.pipeline_spec.get('pipeline_spec', job.pipeline_spec)
  assert not _task_caching(spec)[pipeline_def.BASELINE]


def _load_spec(path) -> dict:
  import yaml  # pylint: disable=import-outside-toplevel
  return next(yaml.safe_load_all(path.read_text()))


def test_example_gen_is_not_cached_on_its_parameters_alone(compiled):
  _, path = compiled
  spec = _load_spec(path)
  task = spec['root']['dag']['tasks'][pipeline_def.EXAMPLE_GEN]
  options = task.get('cachingOptions', {})
  # Either no cache, or a key that changes with the data (a cache key).
  assert not options.get('enableCache') or options.get('cacheKey')


def test_storage_refuses_a_data_path_that_leaves_the_mount():
  config = _config('kubeflow.data_path=/mnt/tfx-e2e/../etc/data')
  with pytest.raises(ConfigError):
    kubeflow.check_storage(config, 'kubeflow')


def test_storage_refuses_a_relative_mount_path():
  config = _config('kubeflow.volume_mount_path=mnt/tfx-e2e',
                   'kubeflow.data_path=mnt/tfx-e2e/data',
                   'kubeflow.serving_base=mnt/tfx-e2e/serving')
  with pytest.raises(ConfigError):
    kubeflow.check_storage(config, 'kubeflow')


def test_storage_accepts_the_defaults_and_gcs():
  kubeflow.check_storage(_config(), 'kubeflow')
  kubeflow.check_storage(_config(
      'kubeflow.pipeline_root=gs://b/root', 'kubeflow.data_path=gs://b/data',
      'kubeflow.serving_base=gs://b/serving', 'kubeflow.volume_claim='),
                         'vertex')


def test_replay_fails_a_task_reading_a_host_path_no_volume_mounts(tmp_path):
  # pylint: disable=import-outside-toplevel
  from tests import kfp_replay
  from tests.test_kfp_replay import pipeline, task
  # pylint: enable=import-outside-toplevel
  data = tmp_path / 'volume' / 'data.csv'
  data.parent.mkdir()
  data.write_text('a,b\n1,2\n')
  docs = pipeline({'reader': task(
      "open(ei['inputs']['parameterValues']['input_base']).read()",
      params={'input_base': {'runtimeValue': {'constant': str(data)}}})})
  result = kfp_replay.replay(docs, workdir=tmp_path / 'work',
                             volumes=[tmp_path / 'volume'])
  assert result['reader'].state == kfp_replay.FAILED, result.table()


def test_submit_takes_the_root_the_file_was_compiled_with(tmp_path):
  """Compiled for a bucket, submitted with the default configuration (as
  the README's procedure does): the run's root is the bucket, not MinIO."""
  compiled = _config('kubeflow.pipeline_root=gs://bucket/root')
  path = kubeflow.compile_pipeline(compiled, 'kubeflow',
                                   str(tmp_path / 'p.yaml'))
  settings = kubeflow.run_settings(_config(), str(path))
  assert settings['pipeline_root'] == 'gs://bucket/root'
  assert settings['enable_caching'] is None  # the compiled task settings
  assert kubeflow.run_settings(_config('enable_cache=false'), str(path))[
      'enable_caching'] is False


@pytest.mark.parametrize('settings', [
    ['kubeflow.pipeline_root=gs://'],
    ['kubeflow.serving_base=gs://'],
    ['kubeflow.volume_claim=My_Claim'],
    ['kubeflow.volume_mount_path=/tmp/vol', 'kubeflow.data_path=/tmp/vol/d',
     'kubeflow.serving_base=/tmp/vol/s'],
    ['kubeflow.volume_mount_path=/minio', 'kubeflow.data_path=/minio/d',
     'kubeflow.serving_base=/minio/s'],
    ['kubeflow.volume_mount_path=/', 'kubeflow.data_path=/d',
     'kubeflow.serving_base=/s'],
])
def test_storage_that_cannot_work_is_refused(settings):
  with pytest.raises(ConfigError):
    kubeflow.check_storage(_config(*settings), 'kubeflow')
