"""The `tfx-e2e` command line."""

from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
  """Runs one `tfx-e2e` command.

  Args:
    argv: the arguments after the program name (default: `sys.argv[1:]`).

  Returns:
    The exit status: 0 done, 2 an input or setting refused, others as each
    command documents.
  """
  # The environment must be set before the commands import TensorFlow.
  from tfx_e2e.pipeline import environment  # pylint: disable=import-outside-toplevel
  environment.configure()
  from tfx_e2e.cli import commands  # pylint: disable=import-outside-toplevel
  return commands.main(argv)
