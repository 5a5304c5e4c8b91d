"""How the gRPC methods turn exceptions into status codes, without a
server."""

import grpc
import pytest

from tfx_e2e.serving import grpc_service
from tfx_e2e.serving.errors import Code, ServingError


class _Aborted(Exception):
  pass


class _Context:
  """grpc.ServicerContext's abort: records the status and raises."""

  def __init__(self):
    self.status = None

  def abort(self, code, details):
    self.status = (code, details)
    raise _Aborted()


class _Service:

  def __init__(self, error):
    self.error = error

  @grpc_service._guard  # pylint: disable=protected-access
  def Predict(self, request, context):  # pylint: disable=invalid-name
    raise self.error


@pytest.mark.parametrize('error, code, details', [
    (ServingError(Code.INVALID_ARGUMENT, 'bad input'),
     grpc.StatusCode.INVALID_ARGUMENT, 'bad input'),
    (ServingError(Code.INTERNAL, 'model failed'),
     grpc.StatusCode.INTERNAL, 'model failed'),
    # A bug: INTERNAL, not gRPC's UNKNOWN, and not the exception's text.
    (KeyError('/srv/secret/path'), grpc.StatusCode.INTERNAL,
     'Internal server error'),
])
def test_errors_become_status_codes(error, code, details):
  context = _Context()
  with pytest.raises(_Aborted):
    _Service(error).Predict(None, context)
  assert context.status == (code, details)
