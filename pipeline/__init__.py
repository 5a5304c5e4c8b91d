"""TFX end-to-end pipeline: configuration, pipeline definition, runners and CLI.

Importing this package pins the process to Keras 2 (tf-keras) before anything
imports TensorFlow: TF 2.16 defaults to Keras 3, which tf.Transform and the TFX
Trainer do not support. See ../shared/STACK.md.
"""

from components import _environment  # noqa: F401  (side effect: environment)
