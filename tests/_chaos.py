"""Helpers of the queue's chaos tests (tests/test_queue_chaos.py): ``undertow worker``
processes to kill and restart, the effect log their jobs write (tests/_chaos_jobs.py), a
submitter process to kill, a redis-server that keeps an append-only file on disk, and the
store read whole."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import redis

from undertow.storage import JobRecord, JobState, open_backend

from ._processes import free_port, read_line
from ._redis import _wait_ready
from ._waiting import wait_until

#: the repository: the workers start here, so that ``tests._chaos_jobs`` imports
ROOT = Path(__file__).resolve().parent.parent
#: the console script, as a user runs it
UNDERTOW = str(Path(sys.executable).parent / "undertow")
JOBS_MODULE = "tests._chaos_jobs"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_serial = itertools.count()


class WorkerProcess:
    """``undertow worker`` running the chaos jobs in a child process, ready (:meth:`ready`)
    once it printed the line that names it (``undertow: worker HOST:PID:ID on queues ...``).
    Its stderr goes to a file of ``logs``."""

    def __init__(self, url: str, logs: Path, *, lease: float, concurrency: int) -> None:
        serial = next(_serial)
        self.log = logs / f"worker-{serial}.err"
        #: the name of its Redis connections (see :func:`held_by`)
        self.client_name = f"chaos-{os.getpid()}-{serial}"
        if url.startswith("redis"):
            url += f"{'&' if '?' in url else '?'}client_name={self.client_name}"
        args = [UNDERTOW, "worker", "--backend", url, "--module", JOBS_MODULE]
        args += ["--lease", repr(lease), "--concurrency", str(concurrency)]
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
        self.pid = self.proc.pid
        self.name = ""

    def ready(self) -> WorkerProcess:
        """Wait for the line that says the worker runs; itself."""
        line = read_line(self.proc, f"worker {self.pid}", self.log)
        assert line.startswith("undertow: worker "), line
        self.name = line.split()[2]
        assert pid_of(self.name) == self.pid, line
        return self

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.pid} {self.proc.returncode}>"

    def kill(self) -> None:
        """SIGKILL, and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)
        self._close()

    def stop(self) -> int:
        """SIGTERM (the worker drains) and its exit status; one that does not exit in time is
        killed and fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"worker {self.pid} ignored SIGTERM") from None
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def pid_of(worker_name: str) -> int:
    """The process id in a worker's name (``HOST:PID:ID``)."""
    return int(worker_name.split(":")[-2])


class WorkerPool:
    """``size`` worker processes, some of which the test kills and replaces. As a context
    manager it kills whatever still runs when the block is left."""

    def __init__(self, url: str, logs: Path, *, size: int, lease: float, concurrency: int):
        self.url, self.logs, self.size = url, logs, size
        self.lease, self.concurrency = lease, concurrency
        self.live: list[WorkerProcess] = []
        self.every: list[WorkerProcess] = []
        #: the workers killed by the test, by pid
        self.killed: set[int] = set()
        #: the workers that died on their own, by pid: their exit status
        self.died: dict[int, int] = {}

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.live:
            worker.kill()

    def start(self) -> None:
        """Start workers until ``size`` run (all at once), and wait until each is ready."""
        started = [self._spawn() for _ in range(self.size - len(self.live))]
        for worker in started:
            worker.ready()

    def _spawn(self) -> WorkerProcess:
        worker = WorkerProcess(self.url, self.logs, lease=self.lease, concurrency=self.concurrency)
        self.live.append(worker)
        self.every.append(worker)
        return worker

    def kill(self, victim: WorkerProcess, *, replace: bool = True) -> None:
        """SIGKILL ``victim`` and (unless not to ``replace`` it) start another in its place."""
        victim.kill()
        self.live.remove(victim)
        self.killed.add(victim.pid)
        if replace:
            self._spawn().ready()

    def replace_dead(self) -> int:
        """Start another worker in place of each that died on its own; how many died."""
        dead = [w for w in self.live if w.proc.poll() is not None]
        for worker in dead:
            worker.kill()  # (waits and closes)
            self.live.remove(worker)
            self.died[worker.pid] = worker.proc.returncode
            self._spawn().ready()
        return len(dead)

    def stop(self) -> None:
        """SIGTERM each worker: each must drain and exit 0, and none may have printed a
        traceback, those killed included."""
        statuses = {w.pid: w.stop() for w in self.live}
        self.live.clear()
        assert all(code == 0 for code in statuses.values()), (statuses, self.stderr())
        assert "Traceback" not in self.stderr(), self.stderr()

    def stderr(self) -> str:
        """What every worker started so far wrote to stderr."""
        return "\n".join(f"--- worker {w.pid}:\n{w.stderr()}" for w in self.every)


@dataclass(frozen=True)
class Effect:
    """One line of the effect log: ``TAG PID EVENT TIME``."""

    tag: int
    pid: int
    event: str
    at: float


def read_effects(path: Path) -> list[Effect]:
    """The effect log's lines, in the order written."""
    if not path.exists():
        return []
    effects = []
    for line in path.read_text().splitlines():
        tag, pid, event, at = line.split()
        effects.append(Effect(int(tag), int(pid), event, float(at)))
    return effects


def by_tag(effects: Iterable[Effect]) -> dict[int, list[Effect]]:
    found: dict[int, list[Effect]] = defaultdict(list)
    for effect in effects:
        found[effect.tag].append(effect)
    return found


def busy_pids(effects: Iterable[Effect]) -> set[int]:
    """The processes running a job now: a start with no done after it."""
    running: set[tuple[int, int]] = set()
    for e in effects:
        if e.event == "start":
            running.add((e.tag, e.pid))
        else:
            running.discard((e.tag, e.pid))
    return {pid for _, pid in running}


def held_by(url: str, worker: WorkerProcess) -> set[tuple[str, int]]:
    """The attempts ``worker``, killed, held: ``(job id, attempt)`` of the jobs still
    RUNNING under its name. Call it before their leases run out (a sweep then queues them
    again). On Redis, it waits first until the server has dropped the worker's connections,
    so that a claim the worker sent just before it died has been run (or not) by then."""
    if url.startswith("redis"):
        client = redis.Redis.from_url(url)
        try:
            gone = wait_until(
                lambda: all(c.get("name") != worker.client_name for c in client.client_list()),
                READY_TIMEOUT,
            )
        finally:
            client.close()
        assert gone, f"redis still serves the connections of worker {worker.pid}"
    return {
        (r.id, r.attempts)
        for r in all_records(url)
        if r.state is JobState.RUNNING and r.worker == worker.name
    }


def all_records(url: str) -> list[JobRecord]:
    """Every job the store of ``url`` keeps, oldest first."""

    async def read() -> list[JobRecord]:
        backend = open_backend(url)
        try:
            return await backend.jobs(limit=10**7)
        finally:
            await backend.close()

    return asyncio.run(read())


class Submitter:
    """The submitter of tests/_chaos_jobs.py in a child process: it submits jobs until it is
    killed, and writes the id of each acknowledged one to ``acks``."""

    def __init__(self, url: str, acks: Path, effects: Path, first_tag: int) -> None:
        args = [sys.executable, "-m", JOBS_MODULE, url, str(acks), str(effects), str(first_tag)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE)

    def kill(self) -> str:
        """SIGKILL, and what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        _, err = self.proc.communicate(timeout=STOP_TIMEOUT)
        return err.decode(errors="replace")


class DurableRedis:
    """A redis-server of its own keeping an append-only file in ``workdir``, synced before
    every reply, which can be SIGKILLed and started again on the same port and file."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed; run .ci/system-deps"
        self.port = free_port()
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir)]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        """Start the server (loading its file) and wait until it accepts connections."""
        proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.proc = proc
        log = _wait_ready(proc, time.monotonic() + READY_TIMEOUT)
        assert log == "", f"redis-server did not start on port {self.port}:\n{log}"
        assert proc.stdout is not None
        self._reader = threading.Thread(target=proc.stdout.read, daemon=True)  # never full
        self._reader.start()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop the server with ``sig`` and wait for it."""
        proc, reader = self.proc, self._reader
        assert proc is not None
        assert reader is not None
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(STOP_TIMEOUT)
        reader.join(STOP_TIMEOUT)  # it reads to the end of the log, then returns
        assert proc.stdout is not None
        proc.stdout.close()

    def __enter__(self) -> DurableRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)
