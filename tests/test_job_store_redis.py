"""The job store on Redis beyond the shared contract (tests/test_job_store.py): its key layout,
several processes claiming from one server, and what the Lua scripts must get right (times and
bytes kept exactly, delayed jobs, stale entries, batched sweeps, purging every key)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest

from undertow.errors import BackendError
from undertow.storage import JobRecord, JobState, open_backend
from undertow.storage import _keys as keys
from undertow.storage._redis import RedisBackend

from ._processes import free_port

T0 = 1_000_000.0
LEASE = 30.0


@pytest.fixture
def store(redis_store: RedisBackend) -> RedisBackend:
    return redis_store


def job(queues: list[str] | None = None, **fields: Any) -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, queues=queues or ["default"], function="f", **fields)


def test_the_job_keys_are_spelled_out():
    j = "0" * 32
    assert keys.job(j) == f"undertow:job:{j}"
    assert keys.job_output(j) == f"undertow:job:{j}:output"
    assert keys.queue("gpu") == "undertow:queue:gpu"
    assert keys.JOBS == "undertow:jobs"
    assert keys.JOBS_RUNNING == "undertow:jobs:running"
    assert keys.JOBS_DELAYED == "undertow:jobs:delayed"
    assert keys.JOBS_FINAL == "undertow:jobs:final"
    assert keys.idempotency("nightly") == "undertow:jobs:idempotency:nightly"
    assert keys.job(j) == keys.JOB_PREFIX + j
    assert keys.job_output(j) == keys.job(j) + keys.OUTPUT_SUFFIX
    assert keys.queue("gpu") == keys.QUEUE_PREFIX + "gpu"
    assert keys.idempotency("nightly") == keys.IDEMPOTENCY_PREFIX + "nightly"
    assert keys.JOB_COUNTS == "undertow:jobs:counts"
    assert keys.WORKERS == "undertow:workers"
    assert keys.WORKERS_INFO == "undertow:workers:info"


async def test_the_redis_keys_of_a_job_through_its_life(store, raw):
    j = job(["a", "b"], idempotency_key="k1", result_ttl=60.0, payload=b"\x00\xff")
    await store.enqueue(j, now=T0)
    fields = await raw.hgetall(keys.job(j.id))
    assert (fields[b"state"], fields[b"queues"], fields[b"payload"]) == (
        b"queued",
        b"a b",
        b"\x00\xff",
    )
    assert b"result" not in fields  # None fields are left out
    assert await raw.lrange(keys.queue("a"), 0, -1) == [j.id.encode()]
    assert await raw.lrange(keys.queue("b"), 0, -1) == [j.id.encode()]
    assert await raw.zrange(keys.JOBS, 0, -1, withscores=True) == [(j.id.encode(), T0)]
    assert await raw.get(keys.idempotency("k1")) == j.id.encode()
    assert await raw.hgetall(keys.JOB_COUNTS) == {b"a queued": b"1", b"b queued": b"1"}

    await store.claim(["a"], "w", lease=LEASE, now=T0)
    assert await raw.zrange(keys.JOBS_RUNNING, 0, -1, withscores=True) == [
        (j.id.encode(), T0 + LEASE)
    ]
    await store.append_output(j.id, "hello\n")
    assert await store.complete(j.id, 1, b"r", now=T0 + 1)
    assert await raw.zcard(keys.JOBS_RUNNING) == 0
    assert await raw.zrange(keys.JOBS_FINAL, 0, -1, withscores=True) == [
        (j.id.encode(), T0 + 1 + 60)
    ]
    assert await store.sweep(now=T0 + 62) == 1
    names = [keys.job(j.id), keys.job_output(j.id), keys.idempotency("k1"), keys.queue("a")]
    assert await raw.exists(*names, keys.JOBS, keys.JOBS_FINAL, keys.JOB_COUNTS) == 0
    assert await raw.lrange(keys.queue("b"), 0, -1) == [j.id.encode()]  # until it comes up
    assert await store.claim(["b"], "w", lease=LEASE, now=T0 + 63) == []
    assert await raw.exists(keys.queue("b")) == 0


async def test_the_redis_keys_of_a_worker(store, raw):
    from undertow.storage import WorkerInfo

    await store.worker_beat(WorkerInfo(name="h:1:x", queues=["a"]), ttl=10, now=T0)
    assert await raw.zrange(keys.WORKERS, 0, -1, withscores=True) == [(b"h:1:x", T0 + 10)]
    assert json.loads(await raw.hget(keys.WORKERS_INFO, "h:1:x"))["queues"] == ["a"]
    assert await store.workers(now=T0 + 11) == []
    assert await raw.exists(keys.WORKERS, keys.WORKERS_INFO) == 0


async def test_times_and_bytes_come_back_exactly(store):
    now = 1717000000.1234567
    payload = bytes(range(256))
    await store.enqueue(job(payload=payload), now=now)
    (claimed,) = await store.claim(["default"], "w", lease=0.1, now=now + 1e-6)
    assert (claimed.submitted, claimed.started, claimed.lease_until) == (
        now,
        now + 1e-6,
        now + 1e-6 + 0.1,
    )
    assert claimed.payload == payload
    assert await store.complete(claimed.id, 1, payload[::-1], now=now + 0.5)
    done = await store.job(claimed.id)
    assert done is not None
    assert (done.result, done.finished) == (payload[::-1], now + 0.5)


async def test_a_job_not_due_at_enqueue_waits(store):
    j = job(not_before=T0 + 10)
    await store.enqueue(j, now=T0)
    assert await store.claim(["default"], "w", lease=LEASE, now=T0 + 9) == []
    assert [c.id for c in await store.claim(["default"], "w", lease=LEASE, now=T0 + 10)] == [j.id]


async def test_a_retried_job_on_two_queues_waits_its_delay_on_both(store):
    j = job(["a", "b"], max_attempts=3)
    await store.enqueue(j, now=T0)
    await store.claim(["a"], "w", lease=LEASE, now=T0)
    assert await store.fail(j.id, 1, b"e", retry_delay=10, now=T0 + 1) == JobState.QUEUED
    # b still holds the first entry: it must not run the job before its delay
    assert await store.claim(["b"], "w", lease=LEASE, now=T0 + 5) == []
    again = await store.claim(["b"], "w", lease=LEASE, now=T0 + 11)
    assert [(c.id, c.attempts) for c in again] == [(j.id, 2)]
    assert await store.claim(["a", "b"], "w", lease=LEASE, now=T0 + 12) == []


async def test_a_delayed_retry_can_be_cancelled(store):
    j = job(max_attempts=3)
    await store.enqueue(j, now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    await store.fail(j.id, 1, b"e", retry_delay=10, now=T0 + 1)
    assert await store.cancel(j.id, now=T0 + 2) == JobState.CANCELLED
    assert await store.claim(["default"], "w", lease=LEASE, now=T0 + 20) == []
    assert await store.sweep(now=T0 + 20) == 0
    cancelled = await store.job(j.id)
    assert cancelled is not None
    assert cancelled.state == JobState.CANCELLED


async def test_a_cancelled_job_whose_worker_vanished_is_not_run_again(store):
    j = job(max_attempts=3)
    await store.enqueue(j, now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    assert await store.cancel(j.id, now=T0 + 1) == JobState.RUNNING
    assert await store.sweep(now=T0 + LEASE + 1) == 1
    swept = await store.job(j.id)
    assert swept is not None
    assert swept.state == JobState.CANCELLED
    assert "lease" in swept.reason


async def test_a_sweep_handles_more_than_one_batch(store, monkeypatch):
    from undertow.storage import _redis_jobs

    monkeypatch.setattr(_redis_jobs, "_SWEEP_BATCH", 2)
    jobs = [job(max_attempts=2) for _ in range(5)]
    for j in jobs:
        await store.enqueue(j, now=T0)
    assert len(await store.claim(["default"], "w", lease=LEASE, count=5, now=T0)) == 5
    assert await store.sweep(now=T0 + LEASE + 1) == 5
    assert await store.queue_length("default") == 5


async def test_an_idempotency_key_is_free_again_once_its_job_is_purged(store):
    first = await store.enqueue(job(idempotency_key="once", result_ttl=1.0), now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    await store.complete(first.id, 1, b"", now=T0)
    await store.sweep(now=T0 + 2)
    second = await store.enqueue(job(idempotency_key="once"), now=T0 + 3)
    assert second.id != first.id
    assert (await store.enqueue(job(idempotency_key="once"), now=T0 + 4)).id == second.id


async def test_output_of_an_unknown_job_is_not_kept(store, raw):
    unknown = uuid.uuid4().hex
    await store.append_output(unknown, "lost\n")
    assert await raw.exists(keys.job_output(unknown)) == 0
    assert await store.output(unknown) == []


async def test_the_scripts_are_loaded_again_after_a_script_flush(store, raw):
    await store.enqueue(job(), now=T0)
    await raw.script_flush()
    assert len(await store.claim(["default"], "w", lease=LEASE, now=T0)) == 1


async def test_an_unreachable_redis_is_a_backend_error_naming_it():
    backend = open_backend(f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(backend, RedisBackend)
    try:
        with pytest.raises(BackendError, match=r"127\.0\.0\.1"):
            await backend.claim(["default"], "w", lease=LEASE)
        with pytest.raises(BackendError, match=r"127\.0\.0\.1"):
            await backend.job(uuid.uuid4().hex)
    finally:
        await backend.close()


_CLAIMER = textwrap.dedent(
    """
    import asyncio, json, sys
    from undertow.storage import open_backend

    async def main(url, name):
        store = open_backend(url)
        await store.queue_length("default")  # connected
        print("ready", flush=True)
        sys.stdin.readline()  # go
        taken = []
        while claimed := await store.claim(["default"], name, lease=30.0, count=2):
            taken += [c.id for c in claimed]
        await store.close()
        print(json.dumps(taken), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def _race(url: str, workers: int) -> list[list[str]]:
    """The ids each of ``workers`` processes claimed, all told to start at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, url, f"w{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    try:
        for proc in procs:  # each connected before any starts
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return [json.loads(proc.communicate(timeout=30)[0]) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


async def test_processes_claiming_at_once_take_every_job_once(store, redis_url):
    jobs = [job() for _ in range(1500)]
    for j in jobs:
        await store.enqueue(j)
    taken = await asyncio.to_thread(_race, redis_url, 4)
    every = [i for ids in taken for i in ids]
    assert sorted(every) == sorted(j.id for j in jobs)  # none lost, none twice
    assert sum(1 for ids in taken if ids) >= 2  # they did race
    by_worker = {r.worker for r in await store.jobs(state=JobState.RUNNING, limit=2000)}
    assert by_worker == {f"w{i}" for i, ids in enumerate(taken) if ids}


async def test_a_redis_without_an_append_only_file_is_named_as_losing_jobs(redis_url: str):
    import redis.asyncio as aioredis

    store = open_backend(redis_url)
    admin = aioredis.from_url(redis_url)
    try:
        await admin.config_set("appendonly", "no")
        why = await store.durability()
        assert why is not None
        assert "--appendonly yes" in why
        await admin.config_set("appendonly", "yes")
        assert await store.durability() is None
    finally:
        await admin.config_set("appendonly", "no")
        await admin.aclose()
        await store.close()


async def test_the_embedded_store_has_nothing_to_warn_about(tmp_path):
    store = open_backend(f"sqlite://{tmp_path / 'q.db'}")
    try:
        assert await store.durability() is None
    finally:
        await store.close()


def test_a_worker_warns_once_about_a_store_that_can_lose_jobs(redis_url, caplog, monkeypatch):
    import undertow.queue._handle as handle
    from undertow.queue import Worker

    monkeypatch.setattr(handle, "_warned", set())
    Worker(redis_url, functions={"f": abs}).work(burst=True)
    Worker(redis_url, functions={"f": abs}).work(burst=True)
    warnings = [r for r in caplog.records if "append-only file" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelname == "WARNING"
