"""TFX module code (preprocessing, model) for the pipeline's components."""

from components import _environment  # noqa: F401  (side effect: environment)
