"""The SQLite job store across processes: racing claims from several processes, a process
killed inside a write transaction, and a file that outlives its backend object."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from undertow.storage import JobRecord, JobState
from undertow.storage._sqlite import SqliteBackend
from undertow.storage._sqlite_jobs_sql import _COUNT_BY_QUEUES

LEASE = 30.0

# A claiming process: waits for "go" on stdin, then claims (count 1 to 5 in turn) and
# completes until the queue is empty, and prints the ids it completed.
_CLAIMER = """
import asyncio, sys
from undertow.storage import open_backend

async def main(url, name):
    store = open_backend(url)
    print("READY", flush=True)
    sys.stdin.readline()
    taken, count = [], 0
    while claimed := await store.claim(["default"], name, lease=30.0, count=count % 5 + 1):
        count += 1
        for job in claimed:
            assert await store.complete(job.id, job.attempts, name.encode())
            taken.append(job.id)
    await store.close()
    print("\\n".join(taken), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""

# A process that opens the store's file, starts a write transaction, writes into it, says so
# and waits (to be killed).
_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")  # spill the uncommitted pages into the WAL file
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE jobs SET state = 'running', worker = 'killed'")
conn.executemany(
    "INSERT INTO job_queue (queue, job_id, not_before) VALUES ('default', ?, 0)",
    [(str(i) * 32,) for i in range(2000)],
)
print("READY", flush=True)
sys.stdin.readline()
"""


def _job() -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, queues=["default"], function="f")


def _store(path: Path) -> SqliteBackend:
    return SqliteBackend(f"sqlite://{path}")


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "READY"
    return child


async def test_processes_claiming_from_one_file_take_each_job_once(tmp_path: Path):
    path = tmp_path / "jobs.db"
    store = _store(path)
    jobs = [_job() for _ in range(2000)]
    for job in jobs:
        await store.enqueue(job)
    children = [_start(_CLAIMER, f"sqlite://{path}", f"w{i}") for i in range(4)]
    for child in children:  # all start together
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    taken: dict[str, list[str]] = {}
    for i, child in enumerate(children):
        out, _ = await asyncio.to_thread(child.communicate, timeout=60)
        assert child.returncode == 0
        taken[f"w{i}"] = out.split()
    every = [job_id for ids in taken.values() for job_id in ids]
    assert sorted(every) == sorted(job.id for job in jobs)  # none lost, none twice
    for name, ids in taken.items():
        for job_id in ids[:20]:
            record = await store.job(job_id)
            assert record is not None
            assert (record.state, record.attempts, record.result) == (
                JobState.DONE,
                1,
                name.encode(),
            )
    assert await store.queue_length("default") == 0
    await store.close()


async def test_a_process_killed_inside_a_write_leaves_the_file_whole(tmp_path: Path):
    path = tmp_path / "jobs.db"
    store = _store(path)
    kept = [_job() for _ in range(3)]
    for job in kept:
        await store.enqueue(job)
    holder = _start(_HOLDER, str(path))
    holder.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(holder.wait, 10) == -signal.SIGKILL
    assert holder.stdout is not None
    assert holder.stdin is not None
    holder.stdout.close()
    holder.stdin.close()

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    # its writes are gone, ours are all there, and the write lock is free again
    assert await store.queue_length("default") == 3
    claimed = await store.claim(["default"], "w", lease=LEASE, count=5)
    assert [job.id for job in claimed] == [job.id for job in kept]
    assert all(job.worker == "w" for job in claimed)
    await store.close()


async def test_the_file_survives_reopening(tmp_path: Path):
    path = tmp_path / "jobs.db"
    first = _store(path)
    waiting, running = _job(), _job()
    await first.enqueue(running)
    await first.enqueue(waiting)
    [claimed] = await first.claim(["default"], "w", lease=LEASE)
    await first.append_output(claimed.id, "half way\n")
    await first.close()

    again = _store(path)
    assert await again.output(running.id) == ["half way\n"]
    assert await again.complete(running.id, 1, b"done")
    [next_one] = await again.claim(["default"], "w", lease=LEASE)
    assert next_one.id == waiting.id
    record = await again.job(running.id)
    assert record is not None
    assert (record.state, record.result) == (JobState.DONE, b"done")
    await again.close()
    await again.close()  # closing twice is harmless


async def test_a_job_on_two_queues_waits_out_its_retry_on_both(tmp_path: Path):
    store = _store(tmp_path / "jobs.db")
    job = JobRecord(id=uuid.uuid4().hex, queues=["a", "b"], function="f", max_attempts=2)
    await store.enqueue(job, now=0)
    assert len(await store.claim(["a"], "w", lease=LEASE, now=0)) == 1
    assert await store.fail(job.id, 1, b"boom", retry_delay=10, now=1) == JobState.QUEUED
    # the entry left on "b" from the first push must not run it before its retry time
    assert await store.claim(["b", "a"], "w", lease=LEASE, now=2) == []
    [again] = await store.claim(["b"], "w", lease=LEASE, now=11)
    assert (again.id, again.attempts) == (job.id, 2)
    await store.close()


def _recount(path: Path) -> dict[tuple[str, str], int]:
    """Jobs by queue and state, counted from every job (what the kept counts must say)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT q.value, jobs.state, COUNT(DISTINCT jobs.id) FROM jobs, "
            "json_each(jobs.queues) AS q GROUP BY q.value, jobs.state"
        ).fetchall()
    return {(q, s): n for q, s, n in rows}


async def _states(store: SqliteBackend) -> dict[tuple[str, str], int]:
    return {(q.name, s): n for q in await store.queues() for s, n in q.states.items()}


async def test_jobs_by_queue_and_state_stay_counted_through_every_change(tmp_path: Path):
    path = tmp_path / "jobs.db"
    store = _store(path)
    jobs = [
        JobRecord(id=uuid.uuid4().hex, queues=q, function="f", max_attempts=2, result_ttl=5)
        for q in (["a"], ["a", "b"], ["b"], ["a", "a"], ["c"], ["a"])
    ]
    await store.enqueue_many(jobs, now=0)
    assert await _states(store) == _recount(path) == {
        ("a", "queued"): 4, ("b", "queued"): 2, ("c", "queued"): 1,
    }  # fmt: skip
    claimed = await store.claim(["a", "b", "c"], "w", lease=LEASE, count=4, now=0)
    assert len(claimed) == 4
    first, second, third, fourth = claimed
    assert await store.complete(first.id, 1, b"ok", now=1)
    assert await store.fail(second.id, 1, b"boom", retry_delay=1, now=1) == JobState.QUEUED
    assert await store.fail(third.id, 1, b"boom", now=1) == JobState.FAILED
    waiting = [j for j in await store.jobs(state=JobState.QUEUED) if j.id != second.id]
    assert await store.cancel(waiting[0].id, now=1) == JobState.CANCELLED
    assert await _states(store) == _recount(path)
    assert await store.retry(third.id, now=2) == JobState.QUEUED
    await store.sweep(now=LEASE + 10)  # fourth's lease ran out; old finished jobs purged
    assert fourth.id not in {j.id for j in await store.jobs(state=JobState.RUNNING)}
    assert await _states(store) == _recount(path)
    await store.sweep(now=LEASE + 100)
    assert await _states(store) == _recount(path)
    await store.close()


def test_jobs_are_counted_by_queue_and_state_from_an_index_alone(tmp_path: Path):
    # /metrics and the dashboard count them every few seconds: never a read of every job
    store = _store(tmp_path / "jobs.db")
    asyncio.run(store.enqueue(_job()))
    with contextlib.closing(sqlite3.connect(tmp_path / "jobs.db")) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {_COUNT_BY_QUEUES}").fetchall()
    assert "COVERING INDEX jobs_by_queues" in " ".join(str(row[-1]) for row in plan)
    asyncio.run(store.close())
