"""The process environment that TensorFlow needs before it first loads.

Entry points call `configure()` once, before anything imports TensorFlow: the
CLI (`tfx_e2e.cli.main`), the test suite's conftest, the notebooks and the
benchmarks. Importing a module of this package never changes the process;
Kubeflow's component containers get the same variables from the image
(deploy/kubeflow/Dockerfile), and Beam's worker processes inherit them.
"""

import os
import sys
import warnings


def configure() -> None:
  """Pins Keras 2 and quiets TensorFlow's C++ log; idempotent.

  Raises:
    RuntimeError: TensorFlow was already imported with Keras 3 selected, which
      tf.Transform and the TFX Trainer cannot use.
  """
  # tf.Transform and the TFX Trainer need Keras 2; TF 2.16 picks Keras 3
  # unless this is set before TensorFlow is first imported.
  if ('tensorflow' in sys.modules and
      os.environ.get('TF_USE_LEGACY_KERAS') != '1'):
    raise RuntimeError(
        'TensorFlow was imported before tfx_e2e could select Keras 2: set '
        'TF_USE_LEGACY_KERAS=1 in the environment, or call '
        'tfx_e2e.pipeline.environment.configure() before importing '
        'TensorFlow.')
  os.environ['TF_USE_LEGACY_KERAS'] = '1'
  # TensorFlow's C++ INFO/WARNING chatter (CPU feature notes, etc.) hides the
  # pipeline's own progress; errors still show.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # TFX 1.16 supports no Python newer than 3.10, which google-api-core flags
  # as end of life on every import.
  warnings.filterwarnings(
      'ignore', category=FutureWarning, module=r'google\.api_core.*')
  # google-cloud-aiplatform (a tfx[kfp] dependency) asks for a newer
  # google-cloud-storage than apache-beam[gcp] 2.59 allows.
  warnings.filterwarnings(
      'ignore', category=FutureWarning, module=r'google\.cloud\.aiplatform.*')
