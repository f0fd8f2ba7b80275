"""The job queue in the embedded SQLite file (the JobStore half of ``SqliteBackend``).

Jobs are hot where the registry is not, so the job store keeps one connection per backend
object, opened on first use and used only from one thread of its own (a single-thread
executor): no connect per operation, and SQLite's rule of one thread per connection holds.
A forked child opens its own. Every operation is one ``BEGIN IMMEDIATE`` transaction, which
takes the file's write lock first: two processes or threads never both see a job QUEUED and
both claim it, and a process killed in the middle leaves nothing half done (SQLite rolls its
transaction back).

Durability: the file is in WAL mode with ``synchronous=NORMAL`` (the default of
``jobs_synchronous``). A committed operation survives the crash of any process; a power loss
or an OS crash may lose the last few commits, never corrupt the file. Set
``backend.jobs_synchronous = "FULL"`` before the first job operation to sync every commit to
disk too (each commit then waits for an fsync).

The schema and the operations themselves, each a function of the connection run in the jobs
thread, are in storage/_sqlite_jobs_sql.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from undertow.errors import BackendError, BrokerUnavailable
from undertow.storage import _sqlite_jobs_sql as sql
from undertow.storage._jobs import (
    JobRecord,
    JobState,
    JobStore,
    Offer,
    QueueInfo,
    WorkerInfo,
    check_job_id,
    check_queue_name,
    check_worker_name,
)

__all__ = ["SqliteJobs"]

_T = TypeVar("_T")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: what a new job starts with, whatever the record given to enqueue says
_FRESH: dict[str, Any] = {
    "state": JobState.QUEUED, "attempts": 0, "started": 0.0, "finished": 0.0, "worker": "",
    "lease_until": 0.0, "cancel_requested": False, "result": None,
}  # fmt: skip


class SqliteJobs(JobStore):
    """The JobStore operations over the backend's SQLite file (``path``, ``url`` and
    ``busy_timeout`` are the backend's)."""

    path: Path
    url: str
    busy_timeout: float
    #: ``NORMAL`` or ``FULL`` (see the module's docstring), read when the connection opens
    jobs_synchronous: str = "NORMAL"

    _jobs_conn: sqlite3.Connection | None = None
    _jobs_thread: concurrent.futures.ThreadPoolExecutor | None = None
    _jobs_pid: int = 0
    _jobs_lock = threading.Lock()  # guards the lazy opening, shared by every backend

    if TYPE_CHECKING:

        def _use_wal(self, conn: sqlite3.Connection) -> None: ...

    # -- the connection and its thread -------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(conn, *args)`` in the jobs thread; a SQLite error becomes a BackendError."""
        executor = self._jobs_executor()
        call = functools.partial(self._call, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    def _jobs_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._jobs_lock:
            if self._jobs_thread is None or self._jobs_pid != os.getpid():
                # (in a forked child the parent's thread and connection are not ours to use)
                self._jobs_conn = None
                self._jobs_thread = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="undertow-jobs"
                )
                self._jobs_pid = os.getpid()
            return self._jobs_thread

    def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            if self._jobs_conn is None:
                self._jobs_conn = self._open_jobs()
            return fn(self._jobs_conn, *args)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):  # its owner held it too long
                raise BrokerUnavailable(f"job store {self.url} is busy: {exc}") from exc
            raise BackendError(f"job store {self.url}: {exc}") from exc
        except sqlite3.Error as exc:
            raise BackendError(f"job store {self.url}: {exc}") from exc

    def _open_jobs(self) -> sqlite3.Connection:
        mode = self.jobs_synchronous.upper()
        if mode not in _SYNCHRONOUS:
            raise ValueError(f"jobs_synchronous {mode!r} is not one of {_SYNCHRONOUS}")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot open the job store {self.url}: {exc}") from exc
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            self._use_wal(conn)
            conn.execute(f"PRAGMA synchronous={mode}")
            conn.executescript(sql.SCHEMA)
            sql.upgrade(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Close the job store's connection and stop its thread (a later operation opens
        them again)."""
        with self._jobs_lock:
            executor, self._jobs_thread = self._jobs_thread, None
            mine = self._jobs_pid == os.getpid()
        if executor is None or not mine:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close_conn)
        executor.shutdown(wait=False)

    def _close_conn(self) -> None:
        conn, self._jobs_conn = self._jobs_conn, None
        if conn is not None:
            conn.close()

    # -- the operations ----------------------------------------------------------------------

    async def enqueue(self, job: JobRecord, *, now: float | None = None) -> JobRecord:
        return await self._run(sql.enqueue, _fresh(job, _now(now)))

    async def enqueue_many(
        self, jobs: Sequence[JobRecord], *, now: float | None = None
    ) -> list[JobRecord]:
        at = _now(now)
        fresh = [_fresh(job, at) for job in jobs]
        return await self._run(sql.enqueue_many, fresh) if fresh else []

    async def claim(
        self,
        queues: Sequence[str],
        worker: str,
        *,
        lease: float,
        count: int = 1,
        now: float | None = None,
        offer: Offer | None = None,
    ) -> list[JobRecord]:
        # (the file hands no job to idle workers: the offer is not kept)
        names = [check_queue_name(queue) for queue in queues]
        if count < 1:
            return []
        return await self._run(sql.claim, names, worker, lease, count, _now(now))

    async def renew(
        self, job_id: str, attempt: int, *, lease: float, now: float | None = None
    ) -> bool:
        check_job_id(job_id)
        return await self._run(sql.fenced, sql.RENEW, _now(now) + lease, job_id, attempt)

    async def complete(
        self, job_id: str, attempt: int, result: bytes, *, now: float | None = None
    ) -> bool:
        check_job_id(job_id)
        return await self._run(sql.fenced, sql.COMPLETE, bytes(result), _now(now), job_id, attempt)

    async def complete_many(
        self, results: Sequence[tuple[str, int, bytes]], *, now: float | None = None
    ) -> list[bool]:
        checked = [(check_job_id(j), int(a), bytes(r)) for j, a, r in results]
        return await self._run(sql.complete_many, checked, _now(now)) if checked else []

    async def fail(
        self,
        job_id: str,
        attempt: int,
        error: bytes,
        *,
        retry_delay: float | None = None,
        now: float | None = None,
    ) -> JobState | None:
        check_job_id(job_id)
        return await self._run(sql.fail, job_id, attempt, bytes(error), retry_delay, _now(now))

    async def sweep(self, *, now: float | None = None) -> int:
        return await self._run(sql.sweep, _now(now))

    async def cancel(self, job_id: str, *, now: float | None = None) -> JobState | None:
        check_job_id(job_id)
        return await self._run(sql.cancel, job_id, _now(now))

    async def retry(self, job_id: str, *, now: float | None = None) -> JobState | None:
        check_job_id(job_id)
        return await self._run(sql.retry, job_id, _now(now))

    async def queues(self) -> list[QueueInfo]:
        return await self._run(sql.queues)

    async def worker_beat(self, info: WorkerInfo, *, ttl: float, now: float | None = None) -> None:
        check_worker_name(info.name)
        if not ttl > 0:
            raise ValueError(f"worker ttl {ttl!r} must be a positive number of seconds")
        at = _now(now)
        record = msgspec.json.encode(msgspec.structs.replace(info, beat=at, ttl=float(ttl)))
        await self._run(sql.worker_beat, info.name, at + ttl, record, at)

    async def workers(self, *, now: float | None = None) -> list[WorkerInfo]:
        records = await self._run(sql.workers, _now(now))
        return [msgspec.json.decode(record, type=WorkerInfo) for record in records]

    async def worker_gone(self, name: str) -> bool:
        return await self._run(sql.worker_gone, check_worker_name(name))

    async def job(self, job_id: str) -> JobRecord | None:
        check_job_id(job_id)
        found = await self._run(sql.select, "WHERE id = ?", [job_id])
        return found[0] if found else None

    async def jobs_by_id(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        ids = [check_job_id(job_id) for job_id in job_ids]
        found: dict[str, JobRecord] = {}
        for start in range(0, len(ids), 500):  # SQLite's limit on parameters is higher
            part = ids[start : start + 500]
            where = f"WHERE id IN ({', '.join('?' * len(part))})"
            found.update((r.id, r) for r in await self._run(sql.select, where, part))
        return [found.get(job_id) for job_id in ids]

    async def jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        submitter: str | None = None,
        limit: int = 1000,
        after: str | None = None,
        newest_first: bool = False,
    ) -> list[JobRecord]:
        if after is not None:
            check_job_id(after)
        tests = {
            "state = ?": None if state is None else JobState(state).value,
            "EXISTS (SELECT 1 FROM json_each(queues) WHERE value = ?)": (
                None if queue is None else check_queue_name(queue)
            ),
            "submitter = ?": submitter,
        }
        where = ["1"] + [test for test, value in tests.items() if value is not None]
        args = [value for value in tests.values() if value is not None]
        page = (after, newest_first, limit)
        return await self._run(sql.select_page, f"WHERE {' AND '.join(where)}", args, page)

    async def queue_length(self, queue: str) -> int:
        check_queue_name(queue)
        return await self._run(sql.queue_length, queue)

    async def append_output(self, job_id: str, text: str, *, attempt: int | None = None) -> bool:
        check_job_id(job_id)
        return await self._run(sql.append_output, job_id, str(text), attempt)

    async def output(self, job_id: str, start: int = 0) -> list[str]:
        check_job_id(job_id)
        if start < 0:
            raise ValueError(f"output start {start} is negative; pieces are numbered from 0")
        return await self._run(sql.output, job_id, start)


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def _fresh(job: JobRecord, now: float) -> JobRecord:
    """``job`` checked, as it is stored: submitted ``now``, the fields of a run reset."""
    check_job_id(job.id)
    if not job.queues:
        raise ValueError(f"job {job.id} names no queue to push it onto")
    for queue in job.queues:
        check_queue_name(queue)
    return msgspec.structs.replace(job, queues=list(job.queues), submitted=now, **_FRESH)
