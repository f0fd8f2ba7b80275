"""Workers in child processes that die or freeze mid-job: the job runs again on another
worker after its lease, and exactly one result is accepted."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from undertow.queue import Job, JobQueue, JobState, Worker

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
