"""Workers in their three modes (thread, process, fork) on real child processes, on both
backends: results and output, a job that kills its own process, retries after a crash, a
cancelled job's process killed, payloads unpickled only in the child, and the CLI's --mode.

The job functions are this module's: a "process" child imports it by name to find them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from undertow.errors import (
    FunctionNotFound,
    JobCancelled,
    JobFailed,
    RemoteTraceback,
    SerializationError,
)
from undertow.queue import JobQueue, JobState, Worker
from undertow.security import TokenAuth, new_token

from ._waiting import wait_until

pytestmark = [pytest.mark.multiproc, pytest.mark.timeout(90)]

CHILD_MODES = ["process", "fork"]
UNDERTOW = [str(Path(sys.executable).parent / "undertow")]


# -- the jobs ---------------------------------------------------------------------------------


def double(x: int) -> int:
    print("doubling", x)
    print("to stderr", file=sys.stderr)
    return x * 2


async def double_async(x: int) -> int:
    await asyncio.sleep(0)  # one turn of the loop: a coroutine that suspends, no waiting
    print("async", x)
    return x * 2


def whose() -> int:
    return os.getpid()


def boom() -> None:
    raise ValueError("bad job")


def kill_myself() -> None:
    print("going down", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def leave(code: int) -> None:
    os._exit(code)


def crash_once(marker: str) -> str:
    if not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "second time lucky"


def hold(pidfile: str) -> str:
    """Start a grandchild, say both pids, then wait (30 s at most) to be killed."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    Path(pidfile + ".tmp").write_text(f"{os.getpid()} {sleeper.pid}")
    Path(pidfile + ".tmp").rename(pidfile)
    threading.Event().wait(30)
    sleeper.kill()
    sleeper.wait()
    return "not killed"


def leave_behind() -> int:
    """Start a process that would outlive the job, and return its pid."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid


def chat_then_wait(release: str) -> str:
    print("started", flush=True)
    waited = 0
    while not Path(release).exists() and waited < 3000:  # 30 s at most
        threading.Event().wait(0.01)
        waited += 1
    print("released")
    return "done"


REMEMBERED: list[int] = []


def remember(x: int) -> list[int]:
    REMEMBERED.append(x)
    return list(REMEMBERED)


def record_pid(path: str) -> int:
    """What unpickling a :class:`Trap` calls: writes down the process doing it."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return os.getpid()


class Trap:
    """Unpickling this runs :func:`record_pid`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (record_pid, (str(self.path),))


FUNCTIONS: dict[str, Any] = {
    "double": double,
    "double_async": double_async,
    "whose": whose,
    "boom": boom,
    "kill_myself": kill_myself,
    "leave": leave,
    "crash_once": crash_once,
    "hold": hold,
    "leave_behind": leave_behind,
    "chat_then_wait": chat_then_wait,
    "remember": remember,
}


def worker(url: str, mode: str, **options: Any) -> Worker:
    options.setdefault("functions", FUNCTIONS)
    options.setdefault("poll_max", 0.05)
    return Worker(url, ["default"], mode=mode, **options)


@pytest.fixture
def queue(url: str) -> Iterator[JobQueue]:
    with JobQueue(url, token=False) as q:
        yield q


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def running(w: Worker) -> Iterator[None]:
    """The worker in a thread of its own, drained and joined at the end."""
    thread = threading.Thread(target=w.work, kwargs={"burst": False})
    thread.start()
    try:
        yield
    finally:
        w.drain()
        thread.join(30)
    assert not thread.is_alive()


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["thread", *CHILD_MODES])
def test_results_and_output_in_each_mode(url: str, queue: JobQueue, mode: str):
    doubled = queue.submit("double", 21)
    awaited = queue.submit("double_async", 4)
    pids = [queue.submit("whose") for _ in range(4)]
    failing = queue.submit("boom")
    missing = queue.submit("nope")
    worker(url, mode, concurrency=2).work(burst=True)
    assert doubled.result(timeout=10) == 42
    assert doubled.output() == "doubling 21\nto stderr\n"
    assert awaited.result(timeout=10) == 8
    assert awaited.output() == "async 4\n"
    ran_in = {job.result(timeout=10) for job in pids}
    if mode == "thread":
        assert ran_in == {os.getpid()}
    elif mode == "process":  # a process per slot, the same for each job of the slot
        assert os.getpid() not in ran_in
        assert 1 <= len(ran_in) <= 2
    else:  # a process per job
        assert os.getpid() not in ran_in
        assert len(ran_in) == 4
    with pytest.raises(ValueError, match="bad job") as caught:
        failing.result(timeout=10)
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "boom" in caught.value.__cause__.text
    with pytest.raises(FunctionNotFound, match="nope"):
        missing.result(timeout=10)


@pytest.mark.parametrize("mode", CHILD_MODES)
def test_a_job_that_kills_its_process_fails_alone(url: str, queue: JobQueue, mode: str):
    killed = queue.submit("kill_myself")
    exited = queue.submit("leave", 3)
    after = queue.submit("double", 5)
    worker(url, mode, concurrency=1).work(burst=True)
    pattern = rf"the process running job {killed.id} \(pid \d+\) died with signal 9 \(SIGKILL\)"
    with pytest.raises(JobFailed, match=pattern):
        killed.result(timeout=10)
    record = killed.record()
    assert (record.state, record.attempts) == (JobState.FAILED, 1)
    assert killed.output() == "going down\n"  # what it printed before it died
    with pytest.raises(JobFailed, match=r"\(pid \d+\) exited with code 3 before the job ended"):
        exited.result(timeout=10)
    assert after.result(timeout=10) == 10  # the slot went on, in a new process


@pytest.mark.parametrize("mode", CHILD_MODES)
def test_a_crashed_attempt_is_retried_by_its_policy(
    url: str, queue: JobQueue, mode: str, tmp_path: Path
):
    retried = queue.submit("crash_once", str(tmp_path / "once"), retries=1, backoff=0.01)
    not_retried = queue.submit(
        "crash_once", str(tmp_path / "other"), retries=3, retry_on=[ValueError], backoff=0.01
    )
    worker(url, mode, concurrency=2).work(burst=True)
    assert retried.result(timeout=10) == "second time lucky"
    assert retried.record().attempts == 2
    with pytest.raises(JobFailed, match="died with signal 9"):
        not_retried.result(timeout=10)  # a crash is a JobFailed, not a ValueError
    assert not_retried.record().attempts == 1


@pytest.mark.parametrize("mode", CHILD_MODES)
def test_a_cancelled_running_job_has_its_process_killed(
    url: str, queue: JobQueue, mode: str, tmp_path: Path
):
    pidfile = tmp_path / "pids"
    w = worker(url, mode, concurrency=1, lease=0.3)  # renewed, so told, every 0.1 s
    with running(w):
        held = queue.submit("hold", str(pidfile))
        assert wait_until(pidfile.exists, 30)
        child, grandchild = map(int, pidfile.read_text().split())
        assert child != os.getpid()
        assert held.cancel()
        with pytest.raises(JobCancelled):
            held.result(timeout=20)
        assert wait_until(lambda: not alive(child) and not alive(grandchild), 10)
        assert queue.submit("double", 2).result(timeout=20) == 4  # a new process took over


@pytest.mark.parametrize("mode", CHILD_MODES)
def test_a_worker_stopped_at_once_kills_the_jobs_it_runs(mode: str, tmp_path: Path):
    url = f"sqlite://{tmp_path / 'jobs.db'}"
    pidfile = tmp_path / "pids"
    w = worker(url, mode)

    async def stop_during_the_job() -> None:
        task = asyncio.create_task(w.run())
        assert await asyncio.to_thread(wait_until, pidfile.exists, 30)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with JobQueue(url, token=False) as jobs:
        held = jobs.submit("hold", str(pidfile))
        asyncio.run(stop_during_the_job())
        child, _ = map(int, pidfile.read_text().split())
        assert not alive(child)  # killed and reaped before run() returned
        assert held.record().state is JobState.RUNNING  # left to its lease, as in threads


@pytest.mark.parametrize("mode", CHILD_MODES)
def test_output_reaches_the_job_while_it_runs(url: str, queue: JobQueue, mode: str, tmp_path):
    release = tmp_path / "release"
    with running(worker(url, mode)):
        job = queue.submit("chat_then_wait", str(release))
        assert wait_until(lambda: job.output() == "started\n", 20)
        release.touch()
        assert job.result(timeout=20) == "done"
    assert job.output() == "started\nreleased\n"


@pytest.mark.parametrize("mode", ["thread", *CHILD_MODES])
def test_the_worker_never_unpickles_a_payload(url: str, mode: str, tmp_path: Path):
    trap = tmp_path / "unpickled-by"
    token = new_token("me")
    with JobQueue(url, token=token) as jobs:
        job = jobs.submit(lambda x: x, Trap(trap))  # the lambda travels by value
        worker(url, mode, auth=TokenAuth([token])).work(burst=True)
        unpickled_in = job.result(timeout=10)
    assert trap.read_text().split() == [str(unpickled_in)]
    if mode == "thread":
        assert unpickled_in == os.getpid()  # what the other modes keep out of the worker
    else:
        assert unpickled_in != os.getpid()


def test_a_fork_starts_each_job_afresh_and_a_process_keeps_its_state(tmp_path: Path):
    url = f"sqlite://{tmp_path / 'jobs.db'}"
    with JobQueue(url, token=False) as jobs:
        for mode, expected in (("fork", [[1], [2]]), ("process", [[1], [1, 2]])):
            first, second = jobs.submit("remember", 1), jobs.submit("remember", 2)
            worker(url, mode, concurrency=1, prefetch=0).work(burst=True)
            assert [first.result(timeout=10), second.result(timeout=10)] == expected, mode
    assert REMEMBERED == []  # the worker's own module was never touched


def test_modes_are_checked():
    with pytest.raises(ValueError, match=r"mode='fast': use 'thread'.*'process'.*'fork'"):
        Worker(None, mode="fast")
    lock = threading.Lock()

    def locked() -> None:
        with lock:
            pass

    w = Worker(None, functions={"locked": locked}, mode="process")
    with pytest.raises(SerializationError, match="lock"):
        w.work(burst=True)


def test_the_cli_refuses_an_unknown_mode():
    from undertow.cli import main

    result = CliRunner().invoke(main, ["worker", "--mode", "fast", "--module", "x"])
    assert result.exit_code == 2
    assert "Invalid value for '--mode'" in result.output
    assert "'thread', 'process', 'fork'" in result.output


JOBFNS = """
import os

def double(x):
    print("doubling", x)
    return x * 2

def whose():
    return os.getpid()
"""


@pytest.mark.parametrize("mode", CHILD_MODES)
def test_undertow_worker_runs_jobs_in_child_processes(url: str, mode: str, tmp_path: Path):
    (tmp_path / "jobfns.py").write_text(JOBFNS)
    with JobQueue(url, token=False) as jobs:
        doubled, pid = jobs.submit("double", 21), jobs.submit("whose")
        args = ["--burst", "--backend", url, "--module", "jobfns", "--mode", mode]
        done = subprocess.run(
            [*UNDERTOW, "worker", *args, "--concurrency", "2"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert doubled.result(timeout=10) == 42
        assert doubled.output() == "doubling 21\n"
        worker_pid = int(doubled.record().worker.split(":")[-2])  # host:pid:nonce
        assert pid.result(timeout=10) != worker_pid


def test_a_forked_job_leaves_no_process_behind(url: str, queue: JobQueue):
    job = queue.submit("leave_behind")
    worker(url, "fork").work(burst=True)
    left = job.result(timeout=10)
    assert wait_until(lambda: not alive(left), 10)  # its process group went with the job
