"""The SQLite job store across processes: racing claims from several processes, a process
killed inside a write transaction, and a file that outlives its backend object."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from undertow.storage import JobRecord, JobState
from undertow.storage._sqlite import SqliteBackend

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
