"""A Beam worker pool on loopback for the jobs of one command (`portable`).

The `portable` Beam profile sends the work to SDK workers started by an
external worker pool (Beam's `worker_pool_main`, the service that Beam's SDK
container runs for Flink's and Spark's EXTERNAL environments). Unless
`beam.worker_pool` names a running pool, `for_jobs` starts one for the
command and stops it when the command ends, whatever the way.

The pool starts each worker as `python` from PATH (in its own process, with
the pool's environment): PATH starts with this interpreter's directory, so
the workers run this virtual environment, with this package installed.

No worker is left behind:
- the pool runs in a process group of its own, which its workers join, and
  stopping the pool signals the whole group (the pool's own clean-up,
  atexit, does not run on SIGTERM);
- Ctrl-C or SIGTERM to the command stops the group, then ends the command
  (`_stopped_on_signals`);
- the pool gets SIGTERM when the command's process dies (Linux's parent
  death signal), and a worker whose pool or runner is gone fails its
  control stream and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Tuple

from tfx_e2e.pipeline.config import ConfigError, PipelineConfig

_log = logging.getLogger(__name__)

PORTABLE = 'portable'
# The Beam whose embedded job service `_job_service_workers` patches.
BEAM_VERSION = '2.59.0'
# Seconds for the pool to listen; its start-up imports Beam (~2-4 s).
START_TIMEOUT = 60.0
# Seconds between SIGTERM and SIGKILL when stopping the group.
STOP_GRACE = 10.0
# Beam's worker_pool_main, asking first for SIGTERM when the process that
# started it dies (Linux's prctl(PR_SET_PDEATHSIG)): set in the pool itself,
# as a preexec_fn is unsafe in a process with threads (TensorFlow's).
_POOL_MAIN = '''
import ctypes, signal, sys
try:
  ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))
except (OSError, AttributeError):
  pass
from apache_beam.runners.worker import worker_pool_main
worker_pool_main.main(sys.argv)
'''


class WorkerPool:
  """A `worker_pool_main` process (and its workers) in its own process
  group. `address` is host:port for `--environment_config`."""

  def __init__(self):
    self.port = _free_port()
    self.address = f'localhost:{self.port}'
    env = dict(os.environ)
    # The pool starts workers as `python`: this interpreter's, first.
    env['PATH'] = os.pathsep.join(
        [str(Path(sys.executable).parent), env.get('PATH', '')])
    # Its output and its workers' stderr go where this process's stderr
    # goes: the command's log.
    self.process = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, '-c', _POOL_MAIN, f'--service_port={self.port}'],
        env=env, stdin=subprocess.DEVNULL, stdout=2, stderr=2,
        start_new_session=True)
    self.pid = self.process.pid
    self._stopped = False
    self._lock = threading.Lock()

  def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
    """Returns once the pool answers on its port; raises RuntimeError (the
    pool stopped) if it exits or does not answer within `timeout` seconds.

    It is asked to stop a worker it never started, which it answers
    without doing anything: a connection alone could be another process's
    that took the port first.
    """
    import grpc  # pylint: disable=import-outside-toplevel
    from apache_beam.portability.api import beam_fn_api_pb2  # pylint: disable=import-outside-toplevel
    from apache_beam.portability.api import beam_fn_api_pb2_grpc  # pylint: disable=import-outside-toplevel
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(self.address) as channel:
      pool = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
      while time.monotonic() < deadline:
        if self.process.poll() is not None:
          self.stop()
          raise RuntimeError(
              f'the Beam worker pool exited with code '
              f'{self.process.returncode} before answering on {self.address}'
              ' (see the log)')
        try:
          pool.StopWorker(beam_fn_api_pb2.StopWorkerRequest(
              worker_id='readiness-probe'), timeout=1)
          return
        except grpc.RpcError:
          time.sleep(0.2)
    self.stop()
    raise RuntimeError(f'the Beam worker pool did not answer on '
                       f'{self.address} within {timeout:.0f} s')

  def stop(self) -> None:
    """Stops the pool and every worker it started (its process group):
    SIGTERM, then SIGKILL after STOP_GRACE seconds. Idempotent."""
    with self._lock:
      if self._stopped:
        return
      self._stopped = True
    _signal_group(self.pid, signal.SIGTERM)
    try:
      self.process.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
      pass
    # Workers may outlive their pool by a moment: the group goes too.
    deadline = time.monotonic() + STOP_GRACE
    while _group_alive(self.pid) and time.monotonic() < deadline:
      time.sleep(0.05)
    if _group_alive(self.pid):
      _log.warning('Beam worker pool %d: processes left after SIGTERM; '
                   'killing them', self.pid)
      _signal_group(self.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
      self.process.wait(STOP_GRACE)


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('localhost', 0))
    return probe.getsockname()[1]


def _signal_group(pgid: int, signum: int) -> None:
  with contextlib.suppress(ProcessLookupError, PermissionError):
    os.killpg(pgid, signum)


def live_processes() -> Iterator[Tuple[int, int, int]]:
  """(pid, parent pid, process group) of each live process, zombies aside
  (from /proc)."""
  for entry in Path('/proc').iterdir():
    if not entry.name.isdigit():
      continue
    try:
      stat = (entry / 'stat').read_text()
    except OSError:
      continue
    # After the command's closing parenthesis: state, ppid, pgrp, ...
    state, ppid, pgrp = stat[stat.rindex(')') + 2:].split()[:3]
    if state != 'Z':
      yield int(entry.name), int(ppid), int(pgrp)


def _group_alive(pgid: int) -> bool:
  """Whether any process of group `pgid` lives (zombies aside)."""
  return any(pgrp == pgid for _, _, pgrp in live_processes())


# Ctrl-C and SIGTERM; each ends the command with its usual status: 130
# ("interrupted", as the CLI reports a KeyboardInterrupt), 143.
_STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 128 + signal.SIGTERM}


@contextlib.contextmanager
def _stopped_on_signals(pool: WorkerPool) -> Iterator[None]:
  """While it lasts, Ctrl-C or SIGTERM stops the pool and its workers, then
  ends the process at once.

  Not by unwinding (KeyboardInterrupt, SystemExit): the threads of the
  embedded job service's gRPC servers (Beam's UnboundedThreadPoolExecutor,
  not daemons) wait forever for the interrupted job's control and data
  streams, so the interpreter would never exit. What a killed run leaves
  is handled as before: the output directory's lock is the kernel's, and
  the next run marks the execution left RUNNING in MLMD as CANCELED.
  """
  if threading.current_thread() is not threading.main_thread():
    yield  # signal handlers belong to the main thread; atexit still runs
    return

  def stop(signum, _frame):
    pool.stop()
    _log.warning('%s: Beam worker pool (pid %d) stopped; exiting',
                 signal.Signals(signum).name, pool.pid)
    with contextlib.suppress(Exception):
      print(f'\n{signal.Signals(signum).name}: stopped the Beam worker pool;'
            ' interrupted', flush=True)
    for stream in (sys.stdout, sys.stderr):
      with contextlib.suppress(Exception):
        stream.flush()
    logging.shutdown()
    os._exit(_STOP_SIGNALS[signum])  # pylint: disable=protected-access

  previous = {number: signal.signal(number, stop)
              for number in _STOP_SIGNALS}
  try:
    yield
  finally:
    for number, handler in previous.items():
      signal.signal(number, handler)


@contextlib.contextmanager
def _job_service_workers(enabled: bool = True) -> Iterator[None]:
  """While it lasts, Beam's embedded job service runs each job on
  `--direct_num_workers` SDK workers (0: one per core) instead of one, and
  has the pool stop them when the job ends.

  Two patches of Beam's internals, behind `beam.fast_paths` (`enabled`)
  like the fast executors, and written for Beam 2.59.0 (any other version
  gets neither, with a warning); without them Beam's own job service runs
  as it is, one worker a job, its workers stopped with the pool:
  - local_job_service.BeamJob._invoke_runner: its FnApiRunner reads
    direct_num_workers only in `run_pipeline`, which the job service
    bypasses (it calls `run_via_runner_api`), so every job got one worker,
    whatever the option said. Set here, the runner splits each stage's
    input over that many workers, each a process the pool starts, as the
    multi-process DirectRunner splits it over its own subprocesses.
  - worker_handlers.ExternalWorkerHandler.stop_worker, which does nothing:
    the pool was never asked to stop a job's workers, which went on running
    for seconds after their job, into the next component's time, and stayed
    as zombies until the pool ended. It now sends the pool's StopWorker,
    which ends the worker and waits for it.
  """
  import apache_beam  # pylint: disable=import-outside-toplevel
  from apache_beam.options import pipeline_options  # pylint: disable=import-outside-toplevel
  from apache_beam.portability.api import beam_job_api_pb2  # pylint: disable=import-outside-toplevel
  from apache_beam.runners.portability import local_job_service  # pylint: disable=import-outside-toplevel
  import grpc  # pylint: disable=import-outside-toplevel
  from apache_beam.portability.api import beam_fn_api_pb2  # pylint: disable=import-outside-toplevel
  from apache_beam.portability.api import beam_fn_api_pb2_grpc  # pylint: disable=import-outside-toplevel
  from apache_beam.runners.portability.fn_api_runner import fn_runner  # pylint: disable=import-outside-toplevel
  from apache_beam.runners.portability.fn_api_runner import worker_handlers  # pylint: disable=import-outside-toplevel
  if not enabled:
    yield
    return
  if apache_beam.__version__ != BEAM_VERSION:
    _log.warning('Beam %s, not %s: the embedded job service runs each job '
                 'on one SDK worker, whatever beam.workers says, and leaves '
                 'the pool to stop it',
                 apache_beam.__version__, BEAM_VERSION)
    yield
    return
  job_class = local_job_service.BeamJob
  original = job_class._invoke_runner  # pylint: disable=protected-access

  def invoke_runner(job):
    job.set_state(beam_job_api_pb2.JobState.RUNNING)
    options = job.pipeline_options()
    runner = fn_runner.FnApiRunner(provision_info=job._provision_info)  # pylint: disable=protected-access
    # The job's options arrive as text (a protobuf Struct).
    workers = int(options.view_as(
        pipeline_options.DirectOptions).direct_num_workers or 1)
    runner._num_workers = workers if workers > 0 else os.cpu_count() or 1  # pylint: disable=protected-access
    return runner.run_via_runner_api(job._pipeline_proto, options)  # pylint: disable=protected-access

  handler_class = worker_handlers.ExternalWorkerHandler
  original_stop = handler_class.stop_worker

  def stop_worker(handler):
    pool = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(
        grpc.insecure_channel(handler._external_payload.endpoint.url))  # pylint: disable=protected-access
    try:
      pool.StopWorker(beam_fn_api_pb2.StopWorkerRequest(
          worker_id=handler.worker_id), timeout=STOP_GRACE + 5)
    except grpc.RpcError as e:  # the worker ends with its control stream
      _log.warning('Beam worker pool: could not stop worker %s: %s',
                   handler.worker_id, e)

  job_class._invoke_runner = invoke_runner  # pylint: disable=protected-access
  handler_class.stop_worker = stop_worker
  try:
    yield
  finally:
    job_class._invoke_runner = original  # pylint: disable=protected-access
    handler_class.stop_worker = original_stop


@contextlib.contextmanager
def for_jobs(config: PipelineConfig, profile: Optional[str] = None
             ) -> Iterator[PipelineConfig]:
  """The configuration to run Beam jobs with, a pool running for them.

  For the `portable` profile (`profile`, default beam.profile) with no
  `beam.worker_pool`, starts a pool on loopback, yields the configuration
  with its address, and stops the pool (and its workers) when the block
  ends: normally, by an exception, Ctrl-C or SIGTERM. Otherwise yields
  `config` as it is.

  Args:
    config: the command's configuration.
    profile: the Beam profile the jobs use (default: config's).

  Raises:
    ConfigError: the pool could not be started.
  """
  profile = profile or config.beam_profile()
  if profile != PORTABLE:
    yield config
    return
  if config.beam.worker_pool:
    with _job_service_workers(config.beam.fast_paths):
      yield config
    return
  pool = WorkerPool()
  atexit.register(pool.stop)
  try:
    with _stopped_on_signals(pool), _job_service_workers(
        config.beam.fast_paths):
      try:
        pool.wait_ready()
      except RuntimeError as e:
        raise ConfigError(f'portable Beam profile: {e}') from None
      _log.info('Beam worker pool (pid %d) listening at %s', pool.pid,
                pool.address)
      yield dataclasses.replace(config, beam=dataclasses.replace(
          config.beam, worker_pool=pool.address))
  finally:
    pool.stop()
    atexit.unregister(pool.stop)
    _log.info('Beam worker pool (pid %d) stopped', pool.pid)
