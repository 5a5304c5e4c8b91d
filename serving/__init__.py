"""TF Serving's REST and gRPC API for the pipeline's pushed models."""

from components import _environment  # noqa: F401  (side effect: environment)
