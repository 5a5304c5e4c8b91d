"""The real-TF-Serving deployment files agree with the pipeline's defaults."""


from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
import yaml

from pipeline.config import REPO_ROOT, PipelineConfig

DEPLOY = REPO_ROOT / 'deploy' / 'serving'


def test_model_config_serves_the_default_model_from_the_mounted_volume():
  config = model_server_config_pb2.ModelServerConfig()
  text_format.Parse((DEPLOY / 'models.config').read_text(), config)
  (model,) = config.model_config_list.config
  assert model.name == PipelineConfig().model_name
  assert model.base_path == f'/models/{model.name}'


def test_manifests_mount_the_push_destination_and_probe_the_model():
  compose = yaml.safe_load((DEPLOY / 'docker-compose.yaml').read_text())
  service = compose['services']['tensorflow-serving']
  assert '../../output/serving:/models:ro' in service['volumes']
  (deployment,) = yaml.safe_load_all(
      (DEPLOY / 'k8s' / 'deployment.yaml').read_text())
  container = deployment['spec']['template']['spec']['containers'][0]
  name = PipelineConfig().model_name
  assert container['readinessProbe']['httpGet']['path'] == f'/v1/models/{name}'
  assert {'name': 'models', 'mountPath': '/models', 'readOnly': True} in (
      container['volumeMounts'])
  kustomization = yaml.safe_load((DEPLOY / 'kustomization.yaml').read_text())
  for resource in kustomization['resources']:
    assert (DEPLOY / resource).is_file()
