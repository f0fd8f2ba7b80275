"""Workers in child processes that die or freeze mid-job: the job runs again on another
worker after its lease, and exactly one result is accepted."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from undertow.errors import BrokerUnavailable
from undertow.queue import Job, JobQueue, JobState, Worker

from ._processes import free_port
from ._redis import _wait_ready
from ._waiting import wait_until

pytestmark = pytest.mark.timeout(60)

LEASE = 0.5

CHILD = """
import sys, threading
from pathlib import Path
from undertow.queue import Worker

url, started, release = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def slow():
    started.touch()
    idle = threading.Event()
    while not release.exists():
        idle.wait(0.01)
    print("first attempt finishing")
    return "first"

Worker(url, ["default"], functions={"slow": slow}, lease=%r).work(burst=True)
"""


def test_a_job_whose_worker_is_killed_runs_again_elsewhere(url: str, tmp_path: Path):
    _lose_a_worker(url, tmp_path, signal.SIGKILL)


def test_the_late_result_of_a_frozen_worker_is_refused(redis_url: str, tmp_path: Path):
    # Redis only: a process frozen while it holds the SQLite file's write lock (a renewal
    # in flight) would block every other writer until it wakes
    _lose_a_worker(redis_url, tmp_path, signal.SIGSTOP)


def _lose_a_worker(url: str, tmp_path: Path, how: signal.Signals) -> None:
    """A child worker starts the job, then is killed or frozen; another worker runs it after
    the lease; a frozen one is then woken, and its late result must be refused."""
    started, release = tmp_path / "started", tmp_path / "release"
    script = tmp_path / "child_worker.py"
    script.write_text(CHILD % LEASE)
    with JobQueue(url, token=False) as queue:
        job = queue.submit("slow", max_attempts=2)
        child = subprocess.Popen([sys.executable, str(script), url, str(started), str(release)])
        try:
            assert wait_until(started.exists, 30), "the child worker never started the job"
            child.send_signal(how)
            assert _run_elsewhere(url, job) == "second"
            if how == signal.SIGSTOP:
                release.touch()
                child.send_signal(signal.SIGCONT)
                assert child.wait(30) == 0  # it woke, finished its attempt and found no job
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(10)
        record = job.record()
        assert (record.state, record.attempts) == (JobState.DONE, 2)
        assert job.result() == "second"


def _run_elsewhere(url: str, job: Job) -> object:
    second = Worker(
        url, functions={"slow": lambda: "second"}, lease=LEASE, sweep_every=0.05, poll_max=0.05
    )
    thread = threading.Thread(target=second.work, kwargs={"burst": False})
    thread.start()
    try:
        return job.result(timeout=20)
    finally:
        second.drain()
        thread.join(10)


def _redis_on(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed; run .ci/system-deps"
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert _wait_ready(proc, time.monotonic() + 20) == "", "redis-server did not start"
    assert proc.stdout is not None
    reader = threading.Thread(target=proc.stdout.read, daemon=True)  # never a full pipe
    reader.start()
    _readers[proc.pid] = reader
    return proc


_readers: dict[int, threading.Thread] = {}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)
    _readers.pop(proc.pid).join(10)  # it reads to the end of the log, then returns
    assert proc.stdout is not None
    proc.stdout.close()


class _Failures(logging.Handler):
    """Sets ``seen`` once the worker logs that the backend failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "backend failed" in record.getMessage():
            self.seen.set()


def test_a_backend_outage_is_waited_out(tmp_path: Path):
    port = free_port()
    server = _redis_on(port)
    url = f"redis://127.0.0.1:{port}/0"
    failures = _Failures()
    logging.getLogger("undertow.queue").addHandler(failures)
    worker = Worker(url, functions={"add": lambda x, y: x + y}, poll_max=0.05)
    thread = threading.Thread(target=worker.work, kwargs={"burst": False})
    thread.start()
    try:
        with JobQueue(url, token=False) as queue:
            assert queue.submit("add", 1, 2).result(timeout=10) == 3
            _stop(server)
            assert failures.seen.wait(20)
            assert thread.is_alive()
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="unreachable"):
                queue.submit("add", 0, 0)  # refused at once: a typed error, within the timeout
            assert time.monotonic() - started < queue._handle.timeout
            server = _redis_on(port)  # back, empty (nothing was kept on disk)
            assert queue.submit("add", 2, 3).result(timeout=20) == 5
    finally:
        worker.drain()
        thread.join(10)
        logging.getLogger("undertow.queue").removeHandler(failures)
        if server.poll() is None:
            _stop(server)
    assert not thread.is_alive()


def test_a_frozen_broker_is_a_typed_error_within_the_deadline(tmp_path: Path):
    port = free_port()
    server = _redis_on(port)
    try:
        with JobQueue(f"redis://127.0.0.1:{port}/0", token=False, timeout=1.0) as queue:
            queue.submit("add", 1, 2)  # connected
            server.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                queue.submit("add", 1, 2)
            assert time.monotonic() - started < 5.0
    finally:
        server.send_signal(signal.SIGCONT)
        _stop(server)
