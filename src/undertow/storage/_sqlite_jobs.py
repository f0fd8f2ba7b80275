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

Tables: ``jobs`` (one row per job, a column per JobRecord field, the queues as JSON text),
``job_queue`` (one row per queue entry; its INTEGER PRIMARY KEY is the FIFO order, and it
repeats the job's ``not_before`` so that a claim passes over a waiting retry from the index)
and ``job_output`` (the pieces a job printed, numbered from 0).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from undertow.errors import BackendError
from undertow.storage._jobs import (
    FINAL_STATES,
    JobRecord,
    JobState,
    JobStore,
    check_job_id,
    check_queue_name,
)

__all__ = ["SqliteJobs"]

_T = TypeVar("_T")

#: the final states as an SQL list
_FINAL = "(" + ", ".join(sorted(f"'{state.value}'" for state in FINAL_STATES)) + ")"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (   -- a column per JobRecord field; times are Unix seconds
    id TEXT PRIMARY KEY, queues TEXT NOT NULL, -- a JSON list
    function TEXT NOT NULL, payload BLOB NOT NULL, codec TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, submitter TEXT NOT NULL,
    idempotency_key TEXT, submitted REAL NOT NULL, not_before REAL NOT NULL,
    started REAL NOT NULL, finished REAL NOT NULL, worker TEXT NOT NULL,
    lease_until REAL NOT NULL, cancel_requested INTEGER NOT NULL, result BLOB, error BLOB,
    reason TEXT NOT NULL, result_ttl REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_lease ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (finished + result_ttl)
    WHERE state IN {_FINAL};
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, submitted);
CREATE INDEX IF NOT EXISTS jobs_by_submitter ON jobs (submitter, submitted);
CREATE INDEX IF NOT EXISTS jobs_by_submitted ON jobs (submitted);
CREATE TABLE IF NOT EXISTS job_queue (
    seq        INTEGER PRIMARY KEY,      -- first in, first out
    queue      TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    not_before REAL NOT NULL             -- the job's, when the entry was pushed
);
CREATE INDEX IF NOT EXISTS job_queue_by_queue ON job_queue (queue, seq, not_before);
CREATE TABLE IF NOT EXISTS job_output (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, text TEXT NOT NULL, PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""

_FIELDS = tuple(JobRecord.__struct_fields__)
_COLUMNS = ", ".join(_FIELDS)
_INSERT = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})"  # noqa: S608 - fixed text
_SELECT = f"SELECT {_COLUMNS} FROM jobs"  # noqa: S608 - fixed text
_PUSH = "INSERT INTO job_queue (queue, job_id, not_before) VALUES (?, ?, ?)"
_TAKE_SET = (
    "UPDATE jobs SET state = 'running', attempts = attempts + 1, worker = ?, started = ?, "
    "lease_until = ? WHERE id = ? AND state = 'queued' AND not_before <= ?"
)
_TAKE = f"{_TAKE_SET} RETURNING {_COLUMNS}"
#: entries a claim reads at a time, beyond the count it still wants
_BATCH = 16
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
            conn.executescript(_SCHEMA)
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
        check_job_id(job.id)
        if not job.queues:
            raise ValueError(f"job {job.id} names no queue to push it onto")
        for queue in job.queues:
            check_queue_name(queue)
        fresh = msgspec.structs.replace(job, queues=list(job.queues), submitted=_now(now), **_FRESH)
        return await self._run(_enqueue, fresh)

    async def claim(
        self,
        queues: Sequence[str],
        worker: str,
        *,
        lease: float,
        count: int = 1,
        now: float | None = None,
    ) -> list[JobRecord]:
        names = [check_queue_name(queue) for queue in queues]
        if count < 1:
            return []
        return await self._run(_claim, names, worker, lease, count, _now(now))

    async def renew(
        self, job_id: str, attempt: int, *, lease: float, now: float | None = None
    ) -> bool:
        check_job_id(job_id)
        return await self._run(_fenced, _RENEW, _now(now) + lease, job_id, attempt)

    async def complete(
        self, job_id: str, attempt: int, result: bytes, *, now: float | None = None
    ) -> bool:
        check_job_id(job_id)
        return await self._run(_fenced, _COMPLETE, bytes(result), _now(now), job_id, attempt)

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
        return await self._run(_fail, job_id, attempt, bytes(error), retry_delay, _now(now))

    async def sweep(self, *, now: float | None = None) -> int:
        return await self._run(_sweep, _now(now))

    async def cancel(self, job_id: str, *, now: float | None = None) -> JobState | None:
        check_job_id(job_id)
        return await self._run(_cancel, job_id, _now(now))

    async def job(self, job_id: str) -> JobRecord | None:
        check_job_id(job_id)
        found = await self._run(_select, "WHERE id = ?", [job_id])
        return found[0] if found else None

    async def jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        submitter: str | None = None,
        limit: int = 1000,
    ) -> list[JobRecord]:
        tests = {
            "state = ?": None if state is None else JobState(state).value,
            "EXISTS (SELECT 1 FROM json_each(queues) WHERE value = ?)": (
                None if queue is None else check_queue_name(queue)
            ),
            "submitter = ?": submitter,
        }
        where = ["1"] + [test for test, value in tests.items() if value is not None]
        args = [value for value in tests.values() if value is not None]
        query = f"WHERE {' AND '.join(where)} ORDER BY submitted, rowid LIMIT ?"
        return await self._run(_select, query, [*args, max(limit, 0)])

    async def queue_length(self, queue: str) -> int:
        check_queue_name(queue)
        return await self._run(_queue_length, queue)

    async def append_output(self, job_id: str, text: str) -> None:
        check_job_id(job_id)
        await self._run(_append_output, job_id, str(text))

    async def output(self, job_id: str, start: int = 0) -> list[str]:
        check_job_id(job_id)
        if start < 0:
            raise ValueError(f"output start {start} is negative; pieces are numbered from 0")
        return await self._run(_output, job_id, start)


# -- what runs in the jobs thread, each on the connection ------------------------------------


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One ``BEGIN IMMEDIATE`` transaction: the write lock first (waiting up to the busy
    timeout), so that what it reads cannot change before it writes; rolled back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # (SQLite may have rolled it back already)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


_QUEUES_AT = _FIELDS.index("queues")


def _row(job: JobRecord) -> tuple[Any, ...]:
    values = msgspec.structs.astuple(job)
    queues = msgspec.json.encode(job.queues).decode()
    return (*values[:_QUEUES_AT], queues, *values[_QUEUES_AT + 1 :])


def _record(row: Sequence[Any]) -> JobRecord:
    fields = dict(zip(_FIELDS, row, strict=True))
    fields["queues"] = msgspec.json.decode(fields["queues"])
    fields["state"] = JobState(fields["state"])
    fields["cancel_requested"] = bool(fields["cancel_requested"])
    return JobRecord(**fields)


def _enqueue(conn: sqlite3.Connection, job: JobRecord) -> JobRecord:
    with _write(conn):
        if job.idempotency_key is not None:
            rows = conn.execute(f"{_SELECT} WHERE idempotency_key = ?", (job.idempotency_key,))
            for row in rows.fetchall():
                return _record(row)
        try:
            conn.execute(_INSERT, _row(job))
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"job {job.id} exists already; give a new job a new id") from exc
        _push(conn, job.id, job.queues, job.not_before)
    return job


def _push(conn: sqlite3.Connection, job_id: str, queues: list[str], not_before: float) -> None:
    conn.executemany(_PUSH, [(queue, job_id, not_before) for queue in queues])


def _claim(
    conn: sqlite3.Connection, queues: list[str], worker: str, lease: float, count: int, now: float
) -> list[JobRecord]:
    taken: list[JobRecord] = []
    with _write(conn):
        for queue in queues:
            seq = 0
            while len(taken) < count:
                entries = conn.execute(
                    "SELECT seq, job_id FROM job_queue "
                    "WHERE queue = ? AND seq > ? AND not_before <= ? ORDER BY seq LIMIT ?",
                    (queue, seq, now, count - len(taken) + _BATCH),
                ).fetchall()
                if not entries:
                    break
                for seq, job_id in entries:
                    # every entry that comes up goes: its job is taken now, or was before, or
                    # waits for a retry under the newer entries that the retry pushed
                    conn.execute("DELETE FROM job_queue WHERE seq = ?", (seq,))
                    row = conn.execute(_TAKE, (worker, now, now + lease, job_id, now)).fetchone()
                    if row is not None:
                        taken.append(_record(row))
                        if len(taken) == count:
                            break
    return taken


#: the changes of renew and complete, each followed by "?" for the id and the attempt
_RENEW = "UPDATE jobs SET lease_until = ? WHERE NOT cancel_requested AND id = ?"
_COMPLETE = "UPDATE jobs SET state = 'done', result = ?, finished = ?, lease_until = 0 WHERE id = ?"


def _fenced(conn: sqlite3.Connection, update: str, *args: Any) -> bool:
    """``update`` if the job is RUNNING under the attempt (the last of ``args``)."""
    with _write(conn):
        cursor = conn.execute(f"{update} AND state = 'running' AND attempts = ?", args)
    return cursor.rowcount == 1


def _fail(
    conn: sqlite3.Connection,
    job_id: str,
    attempt: int,
    error: bytes,
    retry_delay: float | None,
    now: float,
) -> JobState | None:
    with _write(conn):
        row = conn.execute(
            "SELECT attempts, max_attempts, cancel_requested, queues FROM jobs "
            "WHERE id = ? AND state = 'running' AND attempts = ?",
            (job_id, attempt),
        ).fetchone()
        if row is None:
            return None
        attempts, max_attempts, cancel_requested, queues = row
        if cancel_requested:
            state, reason = JobState.CANCELLED, "cancelled while it ran"
        elif retry_delay is None:
            state, reason = JobState.FAILED, "failed"
        elif attempts < max_attempts:
            _requeue(conn, job_id, queues, now + retry_delay)
            conn.execute("UPDATE jobs SET error = ? WHERE id = ?", (error, job_id))
            return JobState.QUEUED
        else:
            state, reason = JobState.DEAD, f"failed on each of its {max_attempts} attempts"
        _finish(conn, job_id, state, reason, now, error)
        return state


def _requeue(conn: sqlite3.Connection, job_id: str, queues: str, not_before: float) -> None:
    conn.execute(
        "UPDATE jobs SET state = 'queued', not_before = ?, worker = '', lease_until = 0 "
        "WHERE id = ?",
        (not_before, job_id),
    )
    _push(conn, job_id, msgspec.json.decode(queues), not_before)


def _finish(
    conn: sqlite3.Connection,
    job_id: str,
    state: JobState,
    reason: str,
    now: float,
    error: Any = None,
) -> None:
    conn.execute(
        "UPDATE jobs SET state = ?, reason = ?, finished = ?, lease_until = 0, "
        "error = COALESCE(?, error) WHERE id = ?",
        (state.value, reason, now, error, job_id),
    )


def _sweep(conn: sqlite3.Connection, now: float) -> int:
    with _write(conn):
        expired = conn.execute(
            "SELECT id, attempts, max_attempts, cancel_requested, queues FROM jobs "
            "WHERE state = 'running' AND lease_until < ?",
            (now,),
        ).fetchall()
        for job_id, attempts, max_attempts, cancel_requested, queues in expired:
            if cancel_requested:
                _finish(conn, job_id, JobState.CANCELLED, "cancelled; its lease expired", now)
            elif attempts < max_attempts:
                _requeue(conn, job_id, queues, now)
            else:
                reason = f"lease expired on each of its {max_attempts} attempts"
                _finish(conn, job_id, JobState.DEAD, reason, now)
        old = conn.execute(
            f"SELECT id FROM jobs WHERE state IN {_FINAL} AND finished + result_ttl < ?",  # noqa: S608 - fixed text
            (now,),
        ).fetchall()
        conn.executemany("DELETE FROM jobs WHERE id = ?", old)
        conn.executemany("DELETE FROM job_output WHERE job_id = ?", old)
    return len(expired) + len(old)


def _cancel(conn: sqlite3.Connection, job_id: str, now: float) -> JobState | None:
    with _write(conn):
        row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        state = JobState(row[0])
        if state == JobState.QUEUED:
            _finish(conn, job_id, JobState.CANCELLED, "cancelled before it ran", now)
            return JobState.CANCELLED
        if state == JobState.RUNNING:
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return state


def _select(conn: sqlite3.Connection, where: str, args: list[Any]) -> list[JobRecord]:
    return [_record(row) for row in conn.execute(f"{_SELECT} {where}", args).fetchall()]


def _queue_length(conn: sqlite3.Connection, queue: str) -> int:
    row = conn.execute("SELECT COUNT(*) FROM job_queue WHERE queue = ?", (queue,)).fetchone()
    return int(row[0])


def _append_output(conn: sqlite3.Connection, job_id: str, text: str) -> None:
    """Kept only while the job is (the output of a purged job would never go)."""
    with _write(conn):
        conn.execute(
            "INSERT INTO job_output (job_id, seq, text) "
            "SELECT ?, (SELECT COALESCE(MAX(seq) + 1, 0) FROM job_output WHERE job_id = ?), ? "
            "WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?)",
            (job_id, job_id, text, job_id),
        )


def _output(conn: sqlite3.Connection, job_id: str, start: int) -> list[str]:
    rows = conn.execute(
        "SELECT text FROM job_output WHERE job_id = ? AND seq >= ? ORDER BY seq",
        (job_id, start),
    ).fetchall()
    return [text for (text,) in rows]
