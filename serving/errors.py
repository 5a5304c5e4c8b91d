"""Errors with TF Serving's status codes, and their HTTP statuses."""

import enum

import grpc


class Code(enum.Enum):
  """The canonical status codes TF Serving answers with (a subset)."""
  INVALID_ARGUMENT = (grpc.StatusCode.INVALID_ARGUMENT, 400)
  FAILED_PRECONDITION = (grpc.StatusCode.FAILED_PRECONDITION, 400)
  NOT_FOUND = (grpc.StatusCode.NOT_FOUND, 404)
  RESOURCE_EXHAUSTED = (grpc.StatusCode.RESOURCE_EXHAUSTED, 429)
  UNIMPLEMENTED = (grpc.StatusCode.UNIMPLEMENTED, 501)
  INTERNAL = (grpc.StatusCode.INTERNAL, 500)
  UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, 503)
  DEADLINE_EXCEEDED = (grpc.StatusCode.DEADLINE_EXCEEDED, 504)

  @property
  def grpc_code(self) -> grpc.StatusCode:
    return self.value[0]

  @property
  def http_status(self) -> int:
    return self.value[1]


class ServingError(Exception):
  """A request that cannot be served; the message is the client's."""

  def __init__(self, code: Code, message: str):
    super().__init__(message)
    self.code = code
    self.message = message
