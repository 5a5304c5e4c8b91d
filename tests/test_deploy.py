"""Deployment files: Kubernetes objects validate against the Kubernetes API
models, TF Serving's config matches the Pusher's destination, and the
pipeline image installs what CI installs. (No cluster and no Docker engine
here: these are the checks that need neither.)"""

import ast
import dataclasses
import re

from google.protobuf import text_format
import kubernetes
import pytest
from tensorflow_serving.config import model_server_config_pb2
import yaml

from tfx_e2e.pipeline.config import REPO_ROOT, PipelineConfig
from tfx_e2e.pipeline.pipeline import placement

SERVING = REPO_ROOT / 'deploy' / 'serving'
KINDS = {'Deployment': 'V1Deployment', 'Service': 'V1Service',
         'PersistentVolumeClaim': 'V1PersistentVolumeClaim', 'Pod': 'V1Pod'}
VOLUME_SHELL = REPO_ROOT / 'deploy' / 'kubeflow' / 'volume-shell.yaml'


def _objects():
  for path in [*sorted(SERVING.rglob('*.yaml')), VOLUME_SHELL]:
    if path.name in ('kustomization.yaml', 'docker-compose.yaml'):
      continue
    for document in yaml.safe_load_all(path.read_text()):
      yield path, document


def _patch_files():
  return {p['path'] for k in SERVING.rglob('kustomization.yaml')
          for p in (yaml.safe_load(k.read_text()).get('patches') or [])}


def _merge(base, patch):
  """A strategic merge as kustomize does it for these patches: maps merge,
  lists of named objects merge by name."""
  if isinstance(base, dict) and isinstance(patch, dict):
    merged = dict(base)
    for key, value in patch.items():
      merged[key] = _merge(base[key], value) if key in base else value
    return merged
  if (isinstance(base, list) and isinstance(patch, list) and
      all(isinstance(i, dict) and 'name' in i for i in base + patch)):
    by_name = {i['name']: i for i in base}
    for item in patch:
      by_name[item['name']] = _merge(by_name.get(item['name'], {}), item)
    return list(by_name.values())
  if isinstance(base, list) and isinstance(patch, list):
    return base + patch
  return patch


def _without_nones(value):
  if isinstance(value, dict):
    return {k: _without_nones(v) for k, v in value.items() if v is not None}
  if isinstance(value, list):
    return [_without_nones(v) for v in value]
  return value


@pytest.mark.parametrize('path, document', list(_objects()),
                         ids=lambda v: getattr(v, 'name', ''))
def test_kubernetes_objects_validate_against_the_api_models(path, document):
  if path.name in _patch_files():
    # A kustomize patch is a partial object: check what it makes of the base.
    base = yaml.safe_load((SERVING / 'base' / 'deployment.yaml').read_text())
    document = _merge(base, document)
  api = kubernetes.client.ApiClient()
  model = api._ApiClient__deserialize(document, KINDS[document['kind']])  # pylint: disable=protected-access
  # A misspelt or misplaced field is dropped by the models: the round trip
  # must give the document back unchanged.
  assert _without_nones(api.sanitize_for_serialization(model)) == document, (
      path)


def _model_config(path):
  config = model_server_config_pb2.ModelServerConfig()
  text_format.Parse(path.read_text(), config)
  (model,) = config.model_config_list.config
  return model


def test_model_configs_serve_the_pushers_destination():
  config = PipelineConfig()
  local = _model_config(SERVING / 'base' / 'models.config')
  assert local.name == config.model_name
  assert local.base_path == f'/models/{config.model_name}'  # <serving>/<name>
  remote = _model_config(SERVING / 'overlays' / 'object-store' /
                         'models.config')
  assert remote.base_path == placement(dataclasses.replace(
      config, kubeflow=dataclasses.replace(
          config.kubeflow, serving_base='gs://YOUR_BUCKET/tfx-e2e/serving')),
                                       'kubeflow').serving_model_dir
  compose = yaml.safe_load((SERVING / 'docker-compose.yaml').read_text())
  service = compose['services']['tensorflow-serving']
  # ./output/serving (the Pusher's base) is mounted where base_path points.
  assert '../../output/serving:/models:ro' in service['volumes']


def test_the_volume_overlay_reads_where_the_compiled_pipeline_pushes(
    tmp_path):
  """The claim, its mount path and the model's folder of the volume overlay
  are the compiled spec's (kubeflow.volume_claim, volume_mount_path,
  serving_base)."""
  from tfx_e2e.pipeline import kubeflow  # pylint: disable=import-outside-toplevel
  config = PipelineConfig()
  overlay = SERVING / 'overlays' / 'local-volume'
  (claim,) = yaml.safe_load_all((overlay / 'pvc.yaml').read_text())
  (patch,) = yaml.safe_load_all((overlay / 'mount-models.yaml').read_text())
  pod = patch['spec']['template']['spec']
  (volume,) = pod['volumes']
  (mount,) = pod['containers'][0]['volumeMounts']
  spec_file = kubeflow.compile_pipeline(config, 'kubeflow',
                                        str(tmp_path / 'p.yaml'))
  _, platform = yaml.safe_load_all(spec_file.read_text())
  pvc_mounts = [m for executor in platform['platforms']['kubernetes'][
      'deploymentSpec']['executors'].values() for m in executor['pvcMount']]
  assert {(m['constant'], m['mountPath']) for m in pvc_mounts} == {
      (claim['metadata']['name'], mount['mountPath'])}
  assert volume['persistentVolumeClaim']['claimName'] == \
      config.kubeflow.volume_claim == claim['metadata']['name']
  assert mount['name'] == volume['name']
  assert mount['mountPath'] == config.kubeflow.volume_mount_path
  assert _model_config(overlay / 'models.config').base_path == placement(
      config, 'kubeflow').serving_model_dir
  assert 'ReadWriteMany' in claim['spec']['accessModes']
  # The pod that puts data on the claim mounts it read-write, there too.
  (shell,) = yaml.safe_load_all(VOLUME_SHELL.read_text())
  (shell_volume,) = shell['spec']['volumes']
  (shell_mount,) = shell['spec']['containers'][0]['volumeMounts']
  assert shell_volume['persistentVolumeClaim']['claimName'] == \
      config.kubeflow.volume_claim
  assert shell_mount['mountPath'] == config.kubeflow.volume_mount_path
  assert not shell_mount.get('readOnly')


def test_probes_ask_for_a_serving_version_and_a_listening_port():
  (deployment,) = yaml.safe_load_all(
      (SERVING / 'base' / 'deployment.yaml').read_text())
  container = deployment['spec']['template']['spec']['containers'][0]
  ports = {p['name']: p['containerPort'] for p in container['ports']}
  assert ports == {'grpc': 8500, 'http': 8501}  # TF Serving's defaults
  assert container['readinessProbe']['httpGet'] == {
      'path': f'/v1/models/{PipelineConfig().model_name}/metadata',
      'port': 'http'}
  assert container['livenessProbe']['tcpSocket'] == {'port': 'http'}
  assert 'httpGet' not in container['livenessProbe']
  assert container['resources']['requests']


def test_kustomizations_reference_existing_files():
  for kustomization in SERVING.rglob('kustomization.yaml'):
    spec = yaml.safe_load(kustomization.read_text())
    listed = list(spec.get('resources', [])) + [
        p['path'] for p in spec.get('patches', [])] + [
            f for g in spec.get('configMapGenerator', [])
            for f in g['files']]
    for entry in listed:
      assert (kustomization.parent / entry).exists(), (kustomization, entry)


DOCKERFILE = REPO_ROOT / 'deploy' / 'kubeflow' / 'Dockerfile'


def _stages():
  """The Dockerfile's build stages: [(base image, [instruction, ...])],
  continuation lines joined."""
  text = re.sub(r'\\\n\s*', ' ', DOCKERFILE.read_text())
  stages = []
  for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    if line.startswith('FROM '):
      stages.append((line.split()[1], []))
    else:
      stages[-1][1].append(line)
  return stages


def test_dockerfile_copies_existing_files_and_installs_as_ci_does():
  """A slim Python 3.10 with exactly the installs of the Makefile (which CI
  runs), the package's every folder, and nothing from the build stage but
  the installed Python."""
  (build_base, build), (base, final) = _stages()
  assert build_base == base == 'python:3.10-slim'
  copies = [line.split()[1:] for line in build + final
            if line.startswith('COPY ') and '--from=' not in line]
  for *sources, _ in copies:
    for source in sources:
      assert (REPO_ROOT / source).exists(), source
  # The Makefile's two installs, in its order, and no other.
  makefile = (REPO_ROOT / 'Makefile').read_text()
  make_installs = [args.replace('--no-deps -e .', '--no-deps .')
                   for args in re.findall(
                       r'\$\(BIN\)/python -m pip install (.+)$', makefile,
                       re.M)]
  installs = [re.search(r'python -m pip install (.+)$', line).group(1)
              for line in build if 'pip install' in line]
  assert installs == make_installs and len(installs) == 2
  assert not any('pip install' in line for line in final)
  # The lock is copied from the repository, not another file.
  assert ['requirements/lock.txt', 'requirements/lock.txt'] in copies
  # Every folder the package is made of is in the build of the package.
  setup = (REPO_ROOT / 'setup.py').read_text()
  rooms = ast.literal_eval(re.search(r'^ROOMS = (\[.*?\])', setup,
                                     re.M | re.S).group(1))
  copied = {source for *sources, _ in copies for source in sources}
  assert {room.split('/')[0] for room in rooms} <= copied
  assert 'COPY --from=build /usr/local /usr/local' in final
  assert 'ENV TF_USE_LEGACY_KERAS=1' in final


def test_one_image_for_kubeflow_components_and_beam_workers():
  """Beam's SDK boot is the entrypoint (Dataflow, Flink and Spark start the
  image as it is); Kubeflow's command for each component replaces it and
  runs with the image's Python, where the package is installed."""
  from tfx_e2e.pipeline import kubeflow  # pylint: disable=import-outside-toplevel
  _, (_, final) = _stages()
  assert ('COPY --from=apache/beam_python3.10_sdk:2.59.0 /opt/apache/beam '
          '/opt/apache/beam') in final
  assert final[-1] == 'ENTRYPOINT ["/opt/apache/beam/boot"]'
  # The pinned Beam and Python are the boot's.
  lock = (REPO_ROOT / 'requirements' / 'lock.txt').read_text()
  assert 'apache-beam==2.59.0' in lock.splitlines()
  assert 'ENV RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1' in final
  python, flag, module = kubeflow.COMMAND
  # python:3.10-slim's python is on PATH (/usr/local/bin, copied whole).
  assert (python, flag) == ('python', '-m')
  package, _, rest = module.partition('.')
  assert package == 'tfx_e2e'
  room, name = rest.rsplit('.', 1)
  assert (REPO_ROOT / room.replace('.', '/') / f'{name}.py').is_file()
  assert room.replace('.', '/') in ast.literal_eval(re.search(
      r'^ROOMS = (\[.*?\])', (REPO_ROOT / 'setup.py').read_text(),
      re.M | re.S).group(1))
