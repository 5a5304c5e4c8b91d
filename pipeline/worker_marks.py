"""Where Beam work ran, told by the processes that ran it.

With `TFX_E2E_WORKER_MARKS=<directory>` in the environment (the pool's
workers inherit it from the command that starts the pool), each of this
project's DoFns leaves a file `<label>.<pid>` there when a process sets it
up, holding `pid ppid`: the component or job it belongs to, and the process
(and its parent) that ran it. A run on the `portable` profile is then seen
to run its Beam work in the worker pool's processes, not in the launching
one, from the workers' side. Unset (the default), nothing is written.
"""

import os
from pathlib import Path
from typing import Dict, Set, Tuple

ENV = 'TFX_E2E_WORKER_MARKS'


def mark(label: str) -> None:
  """Records that this process runs `label`'s Beam work (see the module
  docstring); nothing unless ENV is set."""
  directory = os.environ.get(ENV)
  if not directory:
    return
  os.makedirs(directory, exist_ok=True)
  Path(directory, f'{label}.{os.getpid()}').write_text(
      f'{os.getpid()} {os.getppid()}\n')


def read(directory: str) -> Dict[str, Set[Tuple[int, int]]]:
  """{label: {(pid, ppid), ...}} of the marks in `directory`."""
  marks: Dict[str, Set[Tuple[int, int]]] = {}
  for path in Path(directory).iterdir():
    label, _, _ = path.name.rpartition('.')
    pid, ppid = map(int, path.read_text().split())
    marks.setdefault(label, set()).add((pid, ppid))
  return marks
