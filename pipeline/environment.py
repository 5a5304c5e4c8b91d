"""The process environment that TensorFlow needs before it first loads.

Entry points call `configure()` once, before anything imports TensorFlow: the
CLI (`tfx_e2e.cli.main`), the test suite's conftest, the notebooks and the
benchmarks. Importing a module of this package never changes the process;
Kubeflow's component containers get the same variables from the image
(deploy/kubeflow/Dockerfile), and Beam's worker processes inherit them.
"""

import importlib
import logging
import os
import re
import sys
import tempfile
import warnings


def configure(quiet_tensorflow: bool = False) -> None:
  """Pins Keras 2 and quiets TensorFlow's C++ log; idempotent.

  Args:
    quiet_tensorflow: also import TensorFlow now, without its start-up noise
      on stderr, and without its deprecation notes about TFX's and TFMA's
      calls (for notebooks, where they would be the first cell's output).

  Raises:
    RuntimeError: TensorFlow was already imported with Keras 3 selected, which
      tf.Transform and the TFX Trainer cannot use.
  """
  # tf.Transform and the TFX Trainer need Keras 2; TF 2.16 picks Keras 3
  # unless this is set (to a value TensorFlow reads as true) before
  # TensorFlow is first imported.
  if ('tensorflow' in sys.modules and
      os.environ.get('TF_USE_LEGACY_KERAS') not in ('1', 'true', 'True')):
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
  if quiet_tensorflow:
    import_quietly('tensorflow')
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if not any(isinstance(f, _NoDeprecationNotes)
               for f in tf.get_logger().filters):
      tf.get_logger().addFilter(_NoDeprecationNotes())


# TensorFlow's own start-up lines on stderr that say nothing about the run:
# the CUDA plugins of its wheel registering twice on a machine without a GPU,
# no TensorRT, and CPU feature notes. In a notebook they are the first cell's
# output, in red.
_STARTUP_NOISE = re.compile(
    r'Unable to register cu(FFT|DNN|BLAS) factory|'
    r'TF-TRT Warning: Could not find TensorRT|'
    r'Could not find cuda drivers on your machine|'
    r'oneDNN custom operations are on|'
    r'This TensorFlow binary is optimized to use available CPU|'
    r'^To enable the following instructions: .*rebuild TensorFlow')


def import_quietly(module: str) -> None:
  """Imports `module` (TensorFlow) with its start-up noise dropped from stderr.

  The C++ runtime writes to file descriptor 2 directly, so Python's
  `sys.stderr` cannot filter it: the descriptor points at a temporary file
  during the import, and every line that is not known noise is written to
  stderr afterwards (a real error still shows).
  """
  if module in sys.modules:
    return
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # no stderr to filter
    importlib.import_module(module)
    return
  with tempfile.TemporaryFile(mode='w+b') as captured:
    os.dup2(captured.fileno(), 2)
    try:
      importlib.import_module(module)
    finally:  # a failed import's messages are shown too
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode(
          'utf-8', 'replace').splitlines()
              if line.strip() and not _STARTUP_NOISE.search(line)]
      if kept:
        sys.stderr.write('\n'.join(kept) + '\n')
        sys.stderr.flush()


class _NoDeprecationNotes(logging.Filter):
  """Drops TensorFlow's "is deprecated and will be removed" notes.

  They are about TFMA's and TFX's own calls (e.g. TFMA reading a validation
  result with `tf_record_iterator`), nothing a reader of the results can act
  on; other TensorFlow warnings still show.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return 'is deprecated and will be removed' not in record.getMessage()
