"""Process environment that every entry point needs before TensorFlow loads.

Imported for its side effects by `components/__init__.py` and
`pipeline/__init__.py`, so the CLI, tests, notebooks and component executors
(which import module code by its dotted path) all get it.
"""

import os
import warnings

# tf.Transform and the TFX Trainer need Keras 2; TF 2.16 picks Keras 3 unless
# this is set before TensorFlow is first imported.
os.environ['TF_USE_LEGACY_KERAS'] = '1'
# TensorFlow's C++ INFO/WARNING chatter (CPU feature notes, etc.) hides the
# pipeline's own progress; errors still show.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# TFX 1.16 supports no Python newer than 3.10, which google-api-core flags as
# end of life on every import.
warnings.filterwarnings(
    'ignore', category=FutureWarning, module=r'google\.api_core.*')
# google-cloud-aiplatform (a tfx[kfp] dependency) asks for a newer
# google-cloud-storage than apache-beam[gcp] 2.59 allows.
warnings.filterwarnings(
    'ignore', category=FutureWarning, module=r'google\.cloud\.aiplatform.*')
