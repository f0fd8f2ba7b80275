"""The job store's contract (storage/_jobs.py), on both backends: what is atomic, what is
refused, and that nothing is lost or done twice by surprise. Time is passed explicitly."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from undertow.storage import Backend, JobRecord, JobState

T0 = 1_000_000.0
LEASE = 30.0


def job(queues: list[str] | None = None, **fields) -> JobRecord:
    return JobRecord(
        id=uuid.uuid4().hex,
        queues=queues or ["default"],
        function="f",
        payload=b"args",
        **fields,
    )


async def test_a_job_is_claimed_once_in_order_and_completed(store: Backend):
    first, second = job(), job()
    stored = await store.enqueue(first, now=T0)
    assert stored.state == JobState.QUEUED
    assert stored.submitted == T0
    await store.enqueue(second, now=T0 + 1)
    assert await store.queue_length("default") == 2
    claimed = await store.claim(["default"], "w1", lease=LEASE, now=T0 + 2)
    assert [c.id for c in claimed] == [first.id]
    running = claimed[0]
    assert (running.state, running.attempts, running.worker) == (JobState.RUNNING, 1, "w1")
    assert running.lease_until == T0 + 2 + LEASE
    assert await store.complete(first.id, 1, b"result", now=T0 + 3)
    done = await store.job(first.id)
    assert done is not None
    assert (done.state, done.result, done.finished) == (JobState.DONE, b"result", T0 + 3)
    assert [c.id for c in await store.claim(["default"], "w2", lease=LEASE, now=T0 + 4)] == [
        second.id
    ]
    assert await store.claim(["default"], "w2", lease=LEASE, now=T0 + 5) == []


async def test_claim_takes_queues_in_the_order_given_and_up_to_count(store: Backend):
    low = [job(["low"]) for _ in range(3)]
    high = [job(["high"]) for _ in range(2)]
    for j in low + high:
        await store.enqueue(j, now=T0)
    claimed = await store.claim(["high", "low"], "w", lease=LEASE, count=4, now=T0)
    assert [c.id for c in claimed] == [high[0].id, high[1].id, low[0].id, low[1].id]


async def test_a_job_on_several_queues_runs_once(store: Backend):
    both = job(["host-a", "host-b"])
    await store.enqueue(both, now=T0)
    assert len(await store.claim(["host-a"], "wa", lease=LEASE, now=T0)) == 1
    assert await store.claim(["host-b"], "wb", lease=LEASE, now=T0) == []  # dropped
    assert await store.queue_length("host-b") == 0


async def test_racing_workers_never_claim_a_job_twice(store: Backend):
    jobs = [job() for _ in range(200)]
    for j in jobs:
        await store.enqueue(j, now=T0)

    async def worker(name: str) -> list[str]:
        taken = []
        while claimed := await store.claim(["default"], name, lease=LEASE, count=3, now=T0):
            taken += [c.id for c in claimed]
        return taken

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(8)))
    every = [i for taken in results for i in taken]
    assert sorted(every) == sorted(j.id for j in jobs)  # each once: none lost, none twice


async def test_a_stale_attempt_cannot_complete_renew_or_fail(store: Backend):
    j = job(max_attempts=3)
    await store.enqueue(j, now=T0)
    await store.claim(["default"], "slow", lease=LEASE, now=T0)
    assert await store.sweep(now=T0 + LEASE + 1) == 1  # its lease ran out: queued again
    again = await store.claim(["default"], "fast", lease=LEASE, now=T0 + LEASE + 2)
    assert again[0].attempts == 2
    assert not await store.renew(j.id, 1, lease=LEASE, now=T0 + LEASE + 3)
    assert not await store.complete(j.id, 1, b"late", now=T0 + LEASE + 3)
    assert await store.fail(j.id, 1, b"late error", now=T0 + LEASE + 3) is None
    assert await store.complete(j.id, 2, b"on time", now=T0 + LEASE + 4)
    final = await store.job(j.id)
    assert final is not None
    assert (final.state, final.result, final.attempts) == (JobState.DONE, b"on time", 2)


async def test_a_renewed_lease_is_never_swept(store: Backend):
    j = job(max_attempts=5)
    await store.enqueue(j, now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    for step in range(1, 10):
        now = T0 + step * LEASE / 2
        assert await store.renew(j.id, 1, lease=LEASE, now=now)
        assert await store.sweep(now=now + LEASE / 3) == 0
    running = await store.job(j.id)
    assert running is not None
    assert (running.state, running.attempts) == (JobState.RUNNING, 1)


async def test_retries_wait_their_delay_then_dead_letter(store: Backend):
    j = job(max_attempts=2)
    await store.enqueue(j, now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    assert await store.fail(j.id, 1, b"boom", retry_delay=10, now=T0 + 1) == JobState.QUEUED
    assert await store.claim(["default"], "w", lease=LEASE, now=T0 + 5) == []  # not yet
    retried = await store.claim(["default"], "w", lease=LEASE, now=T0 + 11)
    assert [r.attempts for r in retried] == [2]
    assert await store.fail(j.id, 2, b"boom again", retry_delay=10, now=T0 + 12) == JobState.DEAD
    dead = await store.job(j.id)
    assert dead is not None
    assert (dead.state, dead.error) == (JobState.DEAD, b"boom again")
    assert dead.reason
    assert [d.id for d in await store.jobs(state=JobState.DEAD)] == [j.id]


async def test_a_failure_without_retry_is_final(store: Backend):
    j = job(max_attempts=5)
    await store.enqueue(j, now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    assert await store.fail(j.id, 1, b"bad input", now=T0 + 1) == JobState.FAILED
    assert await store.claim(["default"], "w", lease=LEASE, now=T0 + 100) == []


async def test_a_worker_that_dies_every_time_dead_letters_its_job(store: Backend):
    j = job(max_attempts=3)
    await store.enqueue(j, now=T0)
    now = T0
    for attempt in (1, 2, 3):
        claimed = await store.claim(["default"], "doomed", lease=LEASE, now=now)
        assert [c.attempts for c in claimed] == [attempt]
        now += LEASE + 1
        assert await store.sweep(now=now) == 1
    dead = await store.job(j.id)
    assert dead is not None
    assert dead.state == JobState.DEAD
    assert "lease" in dead.reason


async def test_cancel_a_queued_job_and_a_running_one(store: Backend):
    queued, running = job(), job()
    await store.enqueue(running, now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    await store.enqueue(queued, now=T0)
    assert await store.cancel(queued.id, now=T0 + 1) == JobState.CANCELLED
    assert await store.claim(["default"], "w", lease=LEASE, now=T0 + 2) == []
    assert await store.cancel(running.id, now=T0 + 1) == JobState.RUNNING
    assert not await store.renew(running.id, 1, lease=LEASE, now=T0 + 2)  # told to stop
    assert await store.fail(running.id, 1, b"cancelled", retry_delay=1, now=T0 + 3) == (
        JobState.CANCELLED
    )
    assert await store.cancel(uuid.uuid4().hex) is None


async def test_an_idempotency_key_makes_one_job(store: Backend):
    first = await store.enqueue(job(idempotency_key="nightly-2026-12-06"), now=T0)
    second = await store.enqueue(job(idempotency_key="nightly-2026-12-06"), now=T0 + 1)
    assert second.id == first.id
    assert await store.queue_length("default") == 1


async def test_final_jobs_are_purged_after_their_ttl(store: Backend):
    j = job(result_ttl=60)
    await store.enqueue(j, now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    await store.complete(j.id, 1, b"r", now=T0 + 1)
    await store.sweep(now=T0 + 30)
    assert await store.job(j.id) is not None
    await store.sweep(now=T0 + 62)
    assert await store.job(j.id) is None


async def test_jobs_are_listed_by_state_queue_and_submitter(store: Backend):
    a = await store.enqueue(job(["q1"], submitter="alice"), now=T0)
    b = await store.enqueue(job(["q2"], submitter="bob"), now=T0 + 1)
    assert [r.id for r in await store.jobs()] == [a.id, b.id]
    assert [r.id for r in await store.jobs(queue="q2")] == [b.id]
    assert [r.id for r in await store.jobs(submitter="alice")] == [a.id]
    assert [r.id for r in await store.jobs(state=JobState.QUEUED, limit=1)] == [a.id]


async def test_output_is_kept_in_order(store: Backend):
    j = await store.enqueue(job(), now=T0)
    for piece in ("epoch 0\n", "epoch 1\n", "done\n"):
        await store.append_output(j.id, piece)
    assert await store.output(j.id) == ["epoch 0\n", "epoch 1\n", "done\n"]
    assert await store.output(j.id, 2) == ["done\n"]


async def test_bad_ids_and_queue_names_are_refused_by_name(store: Backend):
    with pytest.raises(ValueError, match="queue name"):
        await store.enqueue(job(["has space"]), now=T0)
    with pytest.raises(ValueError, match="job id"):
        await store.enqueue(JobRecord(id="../x", queues=["q"], function="f"), now=T0)
    j = await store.enqueue(job(), now=T0)
    with pytest.raises(ValueError, match="exists"):
        await store.enqueue(JobRecord(id=j.id, queues=["q"], function="f"), now=T0)


async def test_a_stale_attempt_prints_into_nothing(store: Backend):
    j = await store.enqueue(job(max_attempts=2), now=T0)
    await store.claim(["default"], "lost", lease=LEASE, now=T0)
    assert await store.append_output(j.id, "first try\n", attempt=1)
    await store.sweep(now=T0 + LEASE + 1)
    await store.claim(["default"], "next", lease=LEASE, now=T0 + LEASE + 2)
    assert not await store.append_output(j.id, "late, from the lost worker\n", attempt=1)
    assert await store.append_output(j.id, "second try\n", attempt=2)
    assert await store.append_output(j.id, "a note from anyone\n")  # no attempt: kept
    assert await store.output(j.id) == ["first try\n", "second try\n", "a note from anyone\n"]
    assert not await store.append_output(uuid.uuid4().hex, "nobody's\n")


async def test_jobs_by_id_reads_many_records_in_their_order(store: Backend):
    stored = [await store.enqueue(job()) for _ in range(3)]
    missing = uuid.uuid4().hex
    ids = [stored[2].id, missing, stored[0].id] * 300  # more than one SQL batch
    found = await store.jobs_by_id(ids)
    assert [r.id if r else None for r in found] == [i if i != missing else None for i in ids]
    assert await store.jobs_by_id([]) == []
    with pytest.raises(ValueError, match="not-an-id"):
        await store.jobs_by_id([stored[0].id, "not-an-id"])


async def test_a_job_waits_on_its_local_queues_alone_until_its_local_wait_ends(store: Backend):
    routed = job(["host:a", "default"], local_queues=1, local_until=T0 + 3)
    await store.enqueue(routed, now=T0)
    assert await store.claim(["default"], "elsewhere", lease=LEASE, now=T0 + 1) == []
    later = await store.claim(["default"], "elsewhere", lease=LEASE, now=T0 + 4)
    assert [c.id for c in later] == [routed.id]  # then any worker of its other queues
    local = job(["host:a", "default"], local_queues=1, local_until=T0 + 3)
    await store.enqueue(local, now=T0)
    taken = await store.claim(["host:a", "default"], "there", lease=LEASE, now=T0 + 1)
    assert [c.id for c in taken] == [local.id]  # at once where its data is
    assert await store.claim(["default"], "elsewhere", lease=LEASE, now=T0 + 5) == []
    record = await store.job(local.id)
    assert record is not None
    assert (record.local_queues, record.local_until) == (1, T0 + 3)
