"""The SQL of the job store in SQLite (storage/_sqlite_jobs.py): the schema, and each operation
as a function of the connection, run in the store's jobs thread. Every write is one ``BEGIN
IMMEDIATE`` transaction (``_write``); a batch is one transaction too.

Tables: ``jobs`` (one row per job, a column per JobRecord field, the queues as JSON text),
``job_queue`` (one row per queue entry; its INTEGER PRIMARY KEY is the FIFO order, and it
repeats the job's ``not_before`` so that a claim passes over a waiting retry from the index)
``job_output`` (the pieces a job printed, numbered from 0) and ``job_workers`` (each worker's
record until its time runs out).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from undertow.storage._jobs import FINAL_STATES, JobRecord, JobState, QueueInfo

__all__ = [
    "COMPLETE",
    "RENEW",
    "SCHEMA",
    "append_output",
    "cancel",
    "claim",
    "complete_many",
    "enqueue",
    "enqueue_many",
    "fail",
    "fenced",
    "output",
    "queue_length",
    "queues",
    "retry",
    "select",
    "sweep",
    "upgrade",
    "worker_beat",
    "worker_gone",
    "workers",
]

#: the final states as an SQL list
_FINAL = "(" + ", ".join(sorted(f"'{state.value}'" for state in FINAL_STATES)) + ")"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (   -- a column per JobRecord field; times are Unix seconds
    id TEXT PRIMARY KEY, queues TEXT NOT NULL, -- a JSON list
    function TEXT NOT NULL, payload BLOB NOT NULL, codec TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, submitter TEXT NOT NULL,
    idempotency_key TEXT, submitted REAL NOT NULL, not_before REAL NOT NULL,
    started REAL NOT NULL, finished REAL NOT NULL, worker TEXT NOT NULL,
    lease_until REAL NOT NULL, cancel_requested INTEGER NOT NULL, result BLOB, error BLOB,
    reason TEXT NOT NULL, result_ttl REAL NOT NULL, route TEXT NOT NULL DEFAULT '',
    local_queues INTEGER NOT NULL DEFAULT 0, local_until REAL NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_lease ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (finished + result_ttl)
    WHERE state IN {_FINAL};
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, submitted);
CREATE INDEX IF NOT EXISTS jobs_by_queues ON jobs (state, queues);  -- counts by queue, state
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
CREATE TABLE IF NOT EXISTS job_workers (
    name TEXT PRIMARY KEY,
    until REAL NOT NULL,                  -- live until then (its last beat + its ttl)
    info BLOB NOT NULL                    -- its WorkerInfo in JSON
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


def enqueue(conn: sqlite3.Connection, job: JobRecord) -> JobRecord:
    with _write(conn):
        return _insert(conn, job)


def enqueue_many(conn: sqlite3.Connection, jobs: list[JobRecord]) -> list[JobRecord]:
    """Every job in one transaction (an id that exists already rolls the batch back)."""
    with _write(conn):
        return [_insert(conn, job) for job in jobs]


def _insert(conn: sqlite3.Connection, job: JobRecord) -> JobRecord:
    """Store ``job`` and push it onto its queues (within the caller's transaction); the job
    its idempotency key names instead, if one does."""
    if job.idempotency_key is not None:
        rows = conn.execute(f"{_SELECT} WHERE idempotency_key = ?", (job.idempotency_key,))
        for row in rows.fetchall():
            return _record(row)
    try:
        conn.execute(_INSERT, _row(job))
    except sqlite3.IntegrityError as exc:
        raise ValueError(f"job {job.id} exists already; give a new job a new id") from exc
    if 0 < job.local_queues < len(job.queues):  # the others' entries wait for the local wait
        _push(conn, job.id, job.queues[: job.local_queues], job.not_before)
        rest = job.queues[job.local_queues :]
        _push(conn, job.id, rest, max(job.not_before, job.local_until))
    else:
        _push(conn, job.id, job.queues, job.not_before)
    return job


def _push(conn: sqlite3.Connection, job_id: str, queues: list[str], not_before: float) -> None:
    conn.executemany(_PUSH, [(queue, job_id, not_before) for queue in queues])


def claim(
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
RENEW = "UPDATE jobs SET lease_until = ? WHERE NOT cancel_requested AND id = ?"
COMPLETE = "UPDATE jobs SET state = 'done', result = ?, finished = ?, lease_until = 0 WHERE id = ?"


def fenced(conn: sqlite3.Connection, update: str, *args: Any) -> bool:
    """``update`` if the job is RUNNING under the attempt (the last of ``args``)."""
    with _write(conn):
        cursor = conn.execute(f"{update} AND state = 'running' AND attempts = ?", args)
    return cursor.rowcount == 1


def complete_many(
    conn: sqlite3.Connection, results: list[tuple[str, int, bytes]], now: float
) -> list[bool]:
    """Each ``(job id, attempt, result)`` completed if fenced, in one transaction."""
    update = f"{COMPLETE} AND state = 'running' AND attempts = ?"
    with _write(conn):
        return [
            conn.execute(update, (result, now, job_id, attempt)).rowcount == 1
            for job_id, attempt, result in results
        ]


def fail(
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


def sweep(conn: sqlite3.Connection, now: float) -> int:
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


def cancel(conn: sqlite3.Connection, job_id: str, now: float) -> JobState | None:
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


#: the states a job is retried from
_RETRIED = frozenset({JobState.FAILED, JobState.DEAD, JobState.CANCELLED})


def retry(conn: sqlite3.Connection, job_id: str, now: float) -> JobState | None:
    with _write(conn):
        row = conn.execute("SELECT state, queues FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        state = JobState(row[0])
        if state not in _RETRIED:
            return state
        conn.execute(
            "UPDATE jobs SET state = 'queued', max_attempts = MAX(max_attempts, attempts + 1), "
            "not_before = ?, started = 0, finished = 0, worker = '', lease_until = 0, "
            "cancel_requested = 0, result = NULL, error = NULL, reason = ? WHERE id = ?",
            (now, f"retried by hand (it was {state.value})", job_id),
        )
        _push(conn, job_id, msgspec.json.decode(row[1]), now)
    return JobState.QUEUED


def queues(conn: sqlite3.Connection) -> list[QueueInfo]:
    """Counted in one read transaction, so that lengths and states agree."""
    conn.execute("BEGIN")
    try:
        # from the index alone (jobs_by_queues): ~10 ms for 100,000 jobs, where reading each
        # job's queues out of its JSON took 113 ms; jobs with the same queues come as one row
        lists = conn.execute(_COUNT_BY_QUEUES).fetchall()
        lengths = dict(conn.execute("SELECT queue, COUNT(*) FROM job_queue GROUP BY queue"))
    finally:
        conn.execute("COMMIT")
    found: dict[str, QueueInfo] = {}
    for state, names, number in lists:
        for name in set(msgspec.json.decode(names, type=list[str])):
            info = found.setdefault(name, QueueInfo(name=name, length=lengths.get(name, 0)))
            info.states[state] = info.states.get(state, 0) + number
    return [found[name] for name in sorted(found)]


_COUNT_BY_QUEUES = "SELECT state, queues, COUNT(*) FROM jobs GROUP BY state, queues"


def worker_beat(conn: sqlite3.Connection, name: str, until: float, info: bytes, now: float) -> None:
    with _write(conn):
        conn.execute("DELETE FROM job_workers WHERE until < ?", (now,))
        conn.execute(
            "INSERT OR REPLACE INTO job_workers (name, until, info) VALUES (?, ?, ?)",
            (name, until, info),
        )


def workers(conn: sqlite3.Connection, now: float) -> list[bytes]:
    """The records of the live workers, by name (the others deleted)."""
    with _write(conn):
        conn.execute("DELETE FROM job_workers WHERE until < ?", (now,))
        rows = conn.execute("SELECT info FROM job_workers ORDER BY name").fetchall()
    return [info for (info,) in rows]


def worker_gone(conn: sqlite3.Connection, name: str) -> bool:
    with _write(conn):
        cursor = conn.execute("DELETE FROM job_workers WHERE name = ?", (name,))
    return cursor.rowcount > 0


def upgrade(conn: sqlite3.Connection) -> None:
    """Add the columns a file made by an earlier version lacks (each with its default)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "route" not in have:
        conn.execute("ALTER TABLE jobs ADD COLUMN route TEXT NOT NULL DEFAULT ''")
    if "local_queues" not in have:
        conn.execute("ALTER TABLE jobs ADD COLUMN local_queues INTEGER NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE jobs ADD COLUMN local_until REAL NOT NULL DEFAULT 0")


def select(conn: sqlite3.Connection, where: str, args: list[Any]) -> list[JobRecord]:
    return [_record(row) for row in conn.execute(f"{_SELECT} {where}", args).fetchall()]


def select_page(
    conn: sqlite3.Connection, where: str, args: list[Any], page: tuple[str | None, bool, int]
) -> list[JobRecord]:
    """The jobs matching ``where``, a page of them: ``page`` is (the id of the job before
    the page or None, newest first?, the page's size), in submission order (the rowid
    breaks ties). The index by submission (and by state) serves it without a full scan."""
    after, newest_first, limit = page
    order, beyond = ("DESC", "<") if newest_first else ("ASC", ">")
    if after is not None:
        row = conn.execute("SELECT submitted, rowid FROM jobs WHERE id = ?", (after,)).fetchone()
        if row is None:
            raise LookupError(
                f"job {after} is not stored (purged?): it cannot mark where a page starts; "
                "ask for the first page again (after=None)"
            )
        where += f" AND (submitted, rowid) {beyond} (?, ?)"
        args = [*args, *row]
    query = f"{where} ORDER BY submitted {order}, rowid {order} LIMIT ?"
    return select(conn, query, [*args, max(limit, 0)])


def queue_length(conn: sqlite3.Connection, queue: str) -> int:
    row = conn.execute("SELECT COUNT(*) FROM job_queue WHERE queue = ?", (queue,)).fetchone()
    return int(row[0])


def append_output(conn: sqlite3.Connection, job_id: str, text: str, attempt: int | None) -> bool:
    """Kept only while the job is (the output of a purged job would never go), and with an
    ``attempt``, only while the job runs under it."""
    with _write(conn):
        cursor = conn.execute(
            "INSERT INTO job_output (job_id, seq, text) "
            "SELECT ?, (SELECT COALESCE(MAX(seq) + 1, 0) FROM job_output WHERE job_id = ?), ? "
            "WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ? "
            "AND (? IS NULL OR (state = 'running' AND attempts = ?)))",
            (job_id, job_id, text, job_id, attempt, attempt),
        )
    return cursor.rowcount > 0


def output(conn: sqlite3.Connection, job_id: str, start: int) -> list[str]:
    rows = conn.execute(
        "SELECT text FROM job_output WHERE job_id = ? AND seq >= ? ORDER BY seq",
        (job_id, start),
    ).fetchall()
    return [text for (text,) in rows]
