"""The job queues the benchmark compares, behind one small interface: start N workers, pause
and resume them, submit a batch of no-op jobs, wait for every result, time one job's
enqueue-to-start.

- undertow: ``undertow worker`` processes (``--concurrency 4`` each) on Redis or on a SQLite
  file; ``JobQueue.map`` submits (500 jobs a round trip), ``job.result()`` waits for each.
- Celery: ``celery worker --pool threads --concurrency 4`` processes on the same
  redis-server (broker and result backend, ``task_acks_late``; gossip, mingle and heartbeat
  off); ``send_task`` one by one, ``AsyncResult.get()`` for each.
- RQ: ``rq worker --worker-class rq.worker.SimpleWorker`` processes (one job at a time, no
  fork per job: RQ's fastest); ``enqueue_many`` 500 a pipeline, ``latest_result(timeout)``.
- Dask: a ``LocalCluster`` of N worker processes, 4 threads each, its scheduler in this
  process; ``client.map``, ``wait`` then ``gather``. Not durable: the scheduler holds the
  tasks in memory.
"""

from __future__ import annotations

import abc
import importlib
import logging
import math
import os
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import _jobs_tasks
from bench._jobs_procs import Child, Children

QUEUE = "bench"
CONCURRENCY = 4
BATCH = 500
#: how often the drained() checks ask the store
POLL = 0.005
#: names of the systems, in the order of the tables
SYSTEMS = ("undertow-redis", "undertow-sqlite", "celery", "rq", "dask")
LABELS = {
    "undertow-redis": "undertow (Redis)",
    "undertow-sqlite": "undertow (SQLite)",
    "celery": "Celery (Redis)",
    "rq": "RQ (Redis)",
    "dask": "Dask distributed",
}
PEER_MODULES = {"celery": "celery", "rq": "rq", "dask": "distributed"}


def nap(deadline: float) -> None:
    """Wait a poll interval (not past the deadline: TimeoutError once it passed)."""
    time.sleep(min(POLL, left(deadline)))


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (monotonic); TimeoutError once it passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the measurement's deadline passed")
    return remaining


def worker_env(extra: dict[str, str], home: Path) -> dict[str, str]:
    """The environment of worker processes: ours, without any undertow setting of the user's
    (a home of the run's own), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERTOW_")}
    return {**env, "UNDERTOW_HOME": str(home), **extra}


class System(abc.ABC):
    """One queue with ``workers`` worker processes; :meth:`start` returns once they are ready."""

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = workers

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def pause(self) -> None:
        """Freeze the workers (SIGSTOP), so that jobs pile up on the queue."""

    @abc.abstractmethod
    def resume(self) -> None: ...

    @abc.abstractmethod
    def submit_many(self, n: int) -> Sequence[Any]:
        """Queue ``n`` no-op jobs; their handles."""

    @abc.abstractmethod
    def collect(self, handles: Sequence[Any], deadline: float) -> None:
        """Wait until every job's result is seen, each through the system's own API."""

    def drained(self, handles: Sequence[Any], deadline: float) -> None:
        """Wait until the queue is empty and every result is stored, as the store tells it
        in a few cheap requests (default: :meth:`collect`)."""
        self.collect(handles, deadline)

    @abc.abstractmethod
    def latency(self, deadline: float) -> float:
        """Submit one job that reports when it starts; seconds from the submit to its start."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the workers and clear what the system stored."""


class ProcessWorkers(System):
    """Workers that are processes of their own, each ready when it prints ``ready``."""

    ready: bytes = b""

    def __init__(self, name: str, workers: int, children: Children) -> None:
        super().__init__(name, workers)
        self.children = children
        self.procs: list[Child] = []

    @abc.abstractmethod
    def worker_args(self, i: int) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of worker ``i``."""

    def start(self) -> None:
        for i in range(self.workers):
            args, env = self.worker_args(i)
            self.procs.append(
                self.children.start(f"{self.name}-worker-{i}", args, ready=self.ready, env=env)
            )

    def pause(self) -> None:
        for proc in self.procs:
            proc.pause()

    def resume(self) -> None:
        for proc in self.procs:
            proc.resume()

    def stop_workers(self) -> None:
        while self.procs:
            self.children.stop(self.procs.pop())


# -- undertow ------------------------------------------------------------------------------------


class Undertow(ProcessWorkers):
    ready = rb"undertow: worker \S+ on queues"

    def __init__(self, name: str, workers: int, children: Children, url: str, home: Path):
        from undertow.queue import JobQueue

        super().__init__(name, workers, children)
        self.url, self.home = url, home
        self.queue = JobQueue(url, token=False, queue=QUEUE, timeout=30.0)

    def worker_args(self, i: int) -> tuple[list[str], dict[str, str]]:
        args = [sys.executable, "-m", "undertow.cli", "worker", "--queue", QUEUE]
        args += ["--concurrency", str(CONCURRENCY)]
        for fn in ("noop", "started_at"):
            args += ["--function", f"{fn}=bench._jobs_tasks:{fn}"]
        return args, worker_env({"UNDERTOW_BACKEND": self.url}, self.home)

    def pause(self) -> None:
        """Freeze the workers; on SQLite, never while one holds the file's write lock (the
        submits would wait for it): resume and try again until none does."""
        deadline = time.monotonic() + 30.0
        while True:
            super().pause()
            if not self.url.startswith("sqlite") or _unlocked(self.url):
                return
            super().resume()
            time.sleep(min(0.05, left(deadline)))

    def submit_many(self, n: int) -> Sequence[Any]:
        return self.queue.map("noop", range(n))

    def collect(self, handles: Sequence[Any], deadline: float) -> None:
        # the batch API, as Dask's wait + gather and Celery's join_native: one look at all
        # the jobs per poll, each ended job's record kept, so result() fetches nothing more
        undertow = importlib.import_module("undertow")
        undertow.wait(handles, timeout=left(deadline))
        for job in handles:
            job.result(timeout=left(deadline), output=False)

    def drained(self, handles: Sequence[Any], deadline: float) -> None:
        """Nothing queued and nothing running: a claim takes a job off its queue and marks it
        running in one step, and a job runs until its result is stored."""
        while self.queue.queue_length() or self.queue.jobs(state="running", limit=1):
            nap(deadline)

    def latency(self, deadline: float) -> float:
        submitted = time.time()
        job = self.queue.submit("started_at")
        return float(job.result(timeout=left(deadline))) - submitted

    def close(self) -> None:
        self.stop_workers()
        self.queue.close()
        if self.url.startswith("sqlite"):
            path = self.url.removeprefix("sqlite://")
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
        else:
            flush_redis(self.url)


def _unlocked(url: str) -> bool:
    """Whether the SQLite file's write lock is free (taken and given back at once)."""
    conn = sqlite3.connect(url.removeprefix("sqlite://"), timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def flush_redis(url: str) -> None:
    import redis

    with redis.Redis.from_url(url, socket_timeout=30) as conn:
        conn.flushall()


# -- Celery --------------------------------------------------------------------------------------


class CelerySystem(ProcessWorkers):
    def __init__(self, name: str, workers: int, children: Children, url: str, home: Path):
        from bench import _jobs_celery_app

        super().__init__(name, workers, children)
        self.url, self.home = url, home
        self.ready = _jobs_celery_app.READY_LINE.encode()
        self.app = _jobs_celery_app.make_app(url)

    def worker_args(self, i: int) -> tuple[list[str], dict[str, str]]:
        args = [sys.executable, "-m", "celery", "-A", "bench._jobs_celery_app", "worker"]
        args += ["--pool", "threads", "--concurrency", str(CONCURRENCY), "--queues", QUEUE]
        args += ["--hostname", f"bench{i}-{uuid.uuid4().hex[:6]}@127.0.0.1", "--loglevel"]
        args += ["WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        return args, worker_env({"BENCH_JOBS_REDIS": self.url}, self.home)

    def submit_many(self, n: int) -> Sequence[Any]:
        return [self.app.send_task("noop", args=[i], queue=QUEUE) for i in range(n)]

    def collect(self, handles: Sequence[Any], deadline: float) -> None:
        result_set = importlib.import_module("celery.result").ResultSet(list(handles))
        result_set.join_native(timeout=left(deadline))  # the Redis backend's batch read

    def drained(self, handles: Sequence[Any], deadline: float) -> None:
        """The queue's list empty, then every task's result key stored."""
        keys = [self.app.backend.get_key_for_task(r.id) for r in handles]
        _await_keys(self.url, QUEUE, keys, deadline)

    def latency(self, deadline: float) -> float:
        submitted = time.time()
        result = self.app.send_task("started_at", queue=QUEUE)
        return float(result.get(timeout=left(deadline))) - submitted

    def close(self) -> None:
        self.stop_workers()
        self.app.close()
        flush_redis(self.url)


# -- RQ ------------------------------------------------------------------------------------------


class RqSystem(ProcessWorkers):
    ready = rb"Listening on"

    def __init__(self, name: str, workers: int, children: Children, url: str, home: Path):
        import redis

        super().__init__(name, workers, children)
        self.url, self.home = url, home
        self.rq = importlib.import_module("rq")  # optional: by name, so mypy needs it not
        self.rq_results = importlib.import_module("rq.results")
        self.conn = redis.Redis.from_url(url, socket_timeout=60)
        self.queue = self.rq.Queue(QUEUE, connection=self.conn)

    def worker_args(self, i: int) -> tuple[list[str], dict[str, str]]:
        args = [sys.executable, "-m", "rq.cli", "worker", "--url", self.url]
        args += ["--worker-class", "rq.worker.SimpleWorker", "--name"]
        args += [f"bench{i}-{uuid.uuid4().hex[:6]}", QUEUE]
        return args, worker_env({}, self.home)

    def submit_many(self, n: int) -> Sequence[Any]:
        jobs: list[Any] = []
        for start in range(0, n, BATCH):
            batch = [
                self.rq.Queue.prepare_data("bench._jobs_tasks.noop", (i,))
                for i in range(start, min(start + BATCH, n))
            ]
            jobs += self.queue.enqueue_many(batch)
        return jobs

    def collect(self, handles: Sequence[Any], deadline: float) -> None:
        for job in handles:
            _rq_value(job, deadline)

    def drained(self, handles: Sequence[Any], deadline: float) -> None:
        """The queue's list empty, then every job's result stream stored."""
        keys = [self.rq_results.Result.get_key(job.id) for job in handles]
        _await_keys(self.url, self.queue.key, keys, deadline)

    def latency(self, deadline: float) -> float:
        submitted = time.time()
        job = self.queue.enqueue("bench._jobs_tasks.started_at")
        return float(_rq_value(job, deadline)) - submitted

    def close(self) -> None:
        self.stop_workers()
        self.conn.close()
        flush_redis(self.url)


def _await_keys(url: str, queue_key: str, keys: list[Any], deadline: float) -> None:
    """Wait until the list ``queue_key`` is empty, then until all ``keys`` exist."""
    import redis

    with redis.Redis.from_url(url, socket_timeout=30) as conn:
        while conn.llen(queue_key):
            nap(deadline)
        while conn.exists(*keys) < len(keys):
            nap(deadline)


def _rq_value(job: Any, deadline: float) -> Any:
    """A job's return value, waiting (XREAD, whole seconds) up to the deadline."""
    result = job.latest_result(timeout=max(1, math.ceil(left(deadline))))
    if result is None:
        raise TimeoutError(f"RQ job {job.id} gave no result in time")
    if result.type != result.Type.SUCCESSFUL:
        raise RuntimeError(f"RQ job {job.id} failed: {result.exc_string}")
    return result.return_value


# -- Dask ----------------------------------------------------------------------------------------


class DaskSystem(System):
    def __init__(self, name: str, workers: int) -> None:
        super().__init__(name, workers)
        self.cluster: Any = None
        self.client: Any = None
        self.pids: list[int] = []

    def start(self) -> None:
        distributed = importlib.import_module("distributed")  # optional: by name
        self.cluster = distributed.LocalCluster(
            n_workers=self.workers,
            threads_per_worker=CONCURRENCY,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = distributed.Client(self.cluster, timeout=60)
        self.client.wait_for_workers(self.workers, timeout=60)
        self.pids = list(self.client.run(os.getpid).values())

    def _signal(self, sig: signal.Signals) -> None:
        for pid in self.pids:
            os.kill(pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def submit_many(self, n: int) -> Sequence[Any]:
        return list(self.client.map(_jobs_tasks.noop, range(n), pure=False))

    def collect(self, handles: Sequence[Any], deadline: float) -> None:
        wait = importlib.import_module("distributed").wait
        wait(list(handles), timeout=left(deadline))
        self.client.gather(list(handles))

    def latency(self, deadline: float) -> float:
        submitted = time.time()
        future = self.client.submit(_jobs_tasks.started_at, pure=False)
        return float(future.result(timeout=left(deadline))) - submitted

    def close(self) -> None:
        try:
            if self.pids:
                self.resume()
        finally:
            if self.client is not None:
                self.client.close(timeout=10)
            if self.cluster is not None:
                self.cluster.close(timeout=10)


def make_system(
    name: str, workers: int, children: Children, *, redis_url: str, tmp: Path
) -> System:
    """The system ``name`` with ``workers`` workers (not started), on a store of its own."""
    home = tmp / "home"
    if name == "undertow-redis":
        return Undertow(name, workers, children, redis_url, home)
    if name == "undertow-sqlite":
        url = f"sqlite://{tmp / f'jobs-{uuid.uuid4().hex[:8]}.db'}"
        return Undertow(name, workers, children, url, home)
    if name == "celery":
        return CelerySystem(name, workers, children, redis_url, home)
    if name == "rq":
        return RqSystem(name, workers, children, redis_url, home)
    if name == "dask":
        return DaskSystem(name, workers)
    raise ValueError(f"unknown system {name!r}; one of {SYSTEMS}")
