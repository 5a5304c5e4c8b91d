"""One way to replace a file: readers see the old file or the new one.

A file is written under a temporary name in its own directory, then renamed
over the target in one step. A write that fails half-way (an exception, a
full disk) removes its temporary file and leaves the old target untouched.

Local paths use the standard library (`os.replace` is atomic on POSIX and
Windows within one file system). Remote paths (`gs://...`, any `://`) go
through `tf.io.gfile`, imported only then, so TF-free code can use this
module: on object stores the rename is a copy then a delete, but readers
still never see a partly written object.
"""

import contextlib
import os
import uuid
from typing import IO, Iterator, Union


def is_remote(path: str) -> bool:
  return '://' in str(path)


def temporary_name(path: str) -> str:
  """A unique name beside `path`, hidden from `*.csv`-style globs."""
  path = str(path)
  directory, name = os.path.split(path)
  if is_remote(path):
    directory, name = path.rsplit('/', 1)
    return f'{directory}/.{name}.tmp-{uuid.uuid4().hex}'
  return os.path.join(directory, f'.{name}.tmp-{uuid.uuid4().hex}')


@contextlib.contextmanager
def atomic_output(path: Union[str, os.PathLike], mode: str = 'w',
                  **open_args) -> Iterator[IO]:
  """Opens a file to stream into; it replaces `path` when the block ends.

  `mode` is 'w' or 'wb'; `open_args` (encoding, newline) apply to local
  files. If the block raises, the temporary file is removed and `path` keeps
  what it had (or stays absent).
  """
  if mode not in ('w', 'wb'):
    raise ValueError(f'atomic_output writes whole files: mode {mode!r}')
  path = os.fspath(path)
  temporary = temporary_name(path)
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      with tf.io.gfile.GFile(temporary, mode) as out:
        yield out
      tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException:
      with contextlib.suppress(Exception):
        if tf.io.gfile.exists(temporary):
          tf.io.gfile.remove(temporary)
      raise
    return
  if 'b' not in mode:
    open_args.setdefault('encoding', 'utf-8')
  try:
    # 'x': a fresh file with the usual permissions (umask), never reused.
    with open(temporary, mode.replace('w', 'x'), **open_args) as out:
      yield out
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise


def write_atomically(path: Union[str, os.PathLike],
                     data: Union[str, bytes]) -> None:
  """Replaces `path` with `data` (text as UTF-8), whole or not at all."""
  with atomic_output(path, 'wb' if isinstance(data, bytes) else 'w') as out:
    out.write(data)
