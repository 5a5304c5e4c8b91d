"""The portable profile's worker pool: a real `worker_pool_main` process,
started and stopped with its process group."""

import os
import signal
import socket
import time

from apache_beam.runners.portability import local_job_service
import pytest

from tfx_e2e.pipeline import worker_pool
from tfx_e2e.pipeline.config import BeamConfig, PipelineConfig


def _portable(**settings) -> PipelineConfig:
  return PipelineConfig(beam=BeamConfig(profile='portable', **settings))


def test_other_profiles_start_no_pool():
  config = PipelineConfig(beam=BeamConfig(profile='multi-process'))
  invoke = local_job_service.BeamJob._invoke_runner  # pylint: disable=protected-access
  with worker_pool.for_jobs(config) as job_config:
    assert job_config is config
    assert local_job_service.BeamJob._invoke_runner is invoke  # pylint: disable=protected-access


def test_a_configured_pool_is_used_as_it_is():
  config = _portable(worker_pool='pool.example:50000', workers=3)
  invoke = local_job_service.BeamJob._invoke_runner  # pylint: disable=protected-access
  with worker_pool.for_jobs(config) as job_config:
    assert job_config is config
    # The job service asks it for beam.workers workers.
    assert local_job_service.BeamJob._invoke_runner is not invoke  # pylint: disable=protected-access
    assert '--environment_config=pool.example:50000' in job_config.beam_args()
  assert local_job_service.BeamJob._invoke_runner is invoke  # pylint: disable=protected-access


def test_a_started_pool_listens_then_goes_with_its_group():
  with worker_pool.for_jobs(_portable(workers=2)) as job_config:
    address = job_config.beam.worker_pool
    assert address.startswith('localhost:')
    assert f'--environment_config={address}' in job_config.beam_args()
    assert '--direct_num_workers=2' in job_config.beam_args()
    pool = next(int(pid) for pid in os.listdir('/proc') if pid.isdigit()
                and f'--service_port={address.split(":")[1]}'.encode() in
                open(f'/proc/{pid}/cmdline', 'rb').read())  # pylint: disable=consider-using-with
    assert os.getpgid(pool) == pool  # a group of its own
  assert not worker_pool._group_alive(pool)  # pylint: disable=protected-access


def _state(pid: int) -> str:
  """The process state letter of /proc/PID/stat (T: stopped)."""
  with open(f'/proc/{pid}/stat', encoding='ascii') as f:
    return f.read().rpartition(')')[2].split()[0]


def test_stop_kills_a_group_that_ignores_sigterm(monkeypatch):
  """A stopped (SIGSTOP) pool does not act on SIGTERM, as a stuck process
  would not: SIGKILL after the grace period."""
  monkeypatch.setattr(worker_pool, 'STOP_GRACE', 1.0)
  pool = worker_pool.WorkerPool()
  try:
    pool.wait_ready()
    os.kill(pool.pid, signal.SIGSTOP)
    # Stopped for real before the SIGTERM: a pending SIGSTOP would lose the
    # race to it (lower signal numbers are taken first).
    deadline = time.monotonic() + 10
    while _state(pool.pid) != 'T' and time.monotonic() < deadline:
      time.sleep(0.01)
    assert _state(pool.pid) == 'T'
    pool.stop()
    assert not worker_pool._group_alive(pool.pid)  # pylint: disable=protected-access
    assert pool.process.returncode == -signal.SIGKILL
  finally:
    pool.stop()


def test_a_pool_that_cannot_listen_is_a_clear_error(monkeypatch):
  """Another process took the port first: a connection would succeed, but
  the pool never answers; it exits, and that is the error."""
  with socket.socket() as holder:
    holder.bind(('localhost', 0))
    holder.listen()
    monkeypatch.setattr(worker_pool, '_free_port',
                        lambda: holder.getsockname()[1])
    pool = worker_pool.WorkerPool()
    with pytest.raises(RuntimeError, match='exited with code'):
      pool.wait_ready(timeout=60)
  assert not worker_pool._group_alive(pool.pid)  # pylint: disable=protected-access


@pytest.mark.parametrize('text', ['', 'x'])
def test_no_marks_without_the_variable(tmp_path, monkeypatch, text):
  from tfx_e2e.pipeline import worker_marks  # pylint: disable=import-outside-toplevel
  monkeypatch.delenv(worker_marks.ENV, raising=False)
  if text:
    monkeypatch.setenv(worker_marks.ENV, str(tmp_path / 'marks'))
  worker_marks.mark('Job')
  marks = tmp_path / 'marks'
  if text:
    assert worker_marks.read(str(marks)) == {
        'Job': {(os.getpid(), os.getppid())}}
  else:
    assert not marks.exists()


@pytest.mark.e2e  # a Beam job
def test_a_jobs_workers_end_with_it(tmp_path, monkeypatch):
  """A real job on the pool (PortableRunner, embedded job service): it
  runs on beam.workers worker processes of the pool's, which are gone
  (ended and reaped) when the job is, while the pool lives on."""
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  from tfx_e2e.inference import jobs  # pylint: disable=import-outside-toplevel
  from tfx_e2e.pipeline import worker_marks  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv(worker_marks.ENV, str(tmp_path / 'marks'))
  with worker_pool.for_jobs(_portable(workers=2)) as job_config:
    root = jobs.pipeline(job_config.beam_args())
    _ = (root | beam.Create([f'Job-{n}' for n in range(8)], reshuffle=True)
         | beam.Map(worker_marks.mark))
    root.run().wait_until_finish()
    processes = {p for marks in worker_marks.read(
        str(tmp_path / 'marks')).values() for p in marks}
    pools = {ppid for _, ppid in processes}
    assert len(pools) == 1 and os.getpid() not in pools
    (pool,) = pools
    assert len(processes) == 2  # beam.workers
    assert os.getpid() not in {pid for pid, _ in processes}
    assert os.path.exists(f'/proc/{pool}')
    assert [pid for pid, _ in processes
            if os.path.exists(f'/proc/{pid}')] == []
