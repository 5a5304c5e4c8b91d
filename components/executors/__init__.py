"""Executors and extractors that replace TFX's stock ones for speed.

They reach into private parts of tfx, tfx-bsl, TFMA and tf.Transform, so they
are used only where both hold: the `beam.fast_paths` setting is on (the
default), and the installed versions of those libraries are the ones this
code was written and tested against (`usable`). Otherwise
`tfx_e2e.pipeline.pipeline` builds TFX's stock components with their stock
executors, which produce the same splits, schema, model and metrics.

None of the fast executors is imported unless they are used: a mismatched
library version may not even import them. `atomic_pusher` is the exception:
both ways use it (it makes a push atomic, through the Pusher executor's
`Do` only, and is not a fast path).
"""

import functools
import importlib.metadata
import logging
from typing import Dict, List, Mapping, Optional

# The distributions whose internals the executors use, and the versions
# those internals were read in.
WRITTEN_FOR: Mapping[str, str] = {
    'tfx': '1.16.0',
    'tfx-bsl': '1.16.1',
    'tensorflow-model-analysis': '0.47.1',
    'tensorflow-transform': '1.16.0',
}

_log = logging.getLogger(__name__)


def _installed(name: str) -> Optional[str]:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def mismatches(installed: Optional[Dict[str, Optional[str]]] = None
               ) -> List[str]:
  """What differs from WRITTEN_FOR, one line a distribution.

  Args:
    installed: distribution name to its version (None: not installed);
      default, this environment's.
  """
  if installed is None:
    installed = {name: _installed(name) for name in WRITTEN_FOR}
  return [f'{name} {installed.get(name) or "not installed"} (written for '
          f'{version})' for name, version in WRITTEN_FOR.items()
          if installed.get(name) != version]


@functools.lru_cache(maxsize=None)
def usable() -> bool:
  """Whether the installed libraries are those the fast paths were written
  for; warns once (a process) when they are not."""
  differ = mismatches()
  if differ:
    _log.warning('Using TFX\'s stock executors: the fast paths were written '
                 'for other library versions: %s.', '; '.join(differ))
  return not differ
