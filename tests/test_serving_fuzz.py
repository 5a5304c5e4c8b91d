"""Generated REST requests (schemathesis, from serving/openapi.yaml) against
the running server, and a small soak: no server errors, and valid requests
are answered during and after."""

from pathlib import Path

from hypothesis import HealthCheck, settings
import pytest
import requests
import schemathesis

from bench.serving_soak import soak
from tests.serving_support import TAXI_ROW, serving_copy

pytestmark = pytest.mark.e2e  # runs the pipeline or a server

SCHEMA = schemathesis.openapi.from_path(
    Path(__file__).parents[1] / 'serving' / 'openapi.yaml')
CASES = []  # (operation, status) of every generated request


@pytest.fixture(scope='module')
def server(taxi_pushed_model, tmp_path_factory):
  with serving_copy(taxi_pushed_model,
                    tmp_path_factory.mktemp('fuzz')) as running:
    yield running


@SCHEMA.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_generated_requests_never_get_a_server_error(case, server):
  response = case.call(base_url=server.rest, timeout=30)
  CASES.append((case.operation.label, response.status_code))
  assert response.status_code < 500, (case.as_curl_command(),
                                      response.text[:500])
  valid = requests.post(
      f'{server.rest}/v1/models/taxi_fare:predict', timeout=30,
      json={'signature_name': 'serving_raw', 'instances': [TAXI_ROW]})
  assert valid.status_code == 200, valid.text


def test_the_fuzzer_reached_every_operation_and_both_outcomes():
  if not CASES:
    pytest.skip('checks the generated-request tests above; run them too')
  operations = {label for label, _ in CASES}
  assert len(operations) == 8, operations
  statuses = {status for _, status in CASES}
  assert 200 in statuses and any(400 <= s < 500 for s in statuses)


def test_a_small_soak_with_a_push_half_way(taxi_pushed_model, tmp_path):
  result = soak(taxi_pushed_model, tmp_path, total=2000, clients=8)
  assert result.server_errors == 0, result.first_failures
  assert result.valid_answered == result.valid == 1800, result.first_failures
  assert result.malformed_4xx == result.malformed == 200
  assert result.version_at_end == '2'
