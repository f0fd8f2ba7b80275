"""The job store's operations for people and the shell (storage/_jobs.py), on both backends:
retry by hand, the queues with their counts by state, and the workers' presence. Time is
passed explicitly."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest

from undertow.storage import (
    FINAL_STATES,
    Backend,
    JobRecord,
    JobState,
    QueueInfo,
    WorkerInfo,
)

pytestmark = pytest.mark.timeout(60)

T0 = 1_000_000.0
LEASE = 30.0


def job(queues: list[str] | None = None, **fields) -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, queues=queues or ["default"], function="f", **fields)


async def record(store: Backend, job_id: str) -> JobRecord:
    found = await store.job(job_id)
    assert found is not None
    return found


# -- retry ----------------------------------------------------------------------------------


async def test_a_failed_job_retried_runs_again_with_its_attempts_left(store: Backend):
    j = await store.enqueue(job(max_attempts=3, result_ttl=60), now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    assert await store.fail(j.id, 1, b"bad input", now=T0 + 1) == JobState.FAILED
    assert await store.retry(j.id, now=T0 + 2) == JobState.QUEUED
    again = await record(store, j.id)
    assert (again.state, again.attempts, again.max_attempts) == (JobState.QUEUED, 1, 3)
    assert (again.error, again.result, again.worker) == (None, None, "")
    assert (again.finished, again.lease_until) == (0.0, 0.0)
    assert "retried" in again.reason
    assert await store.sweep(now=T0 + 100) == 0  # no longer final: never purged as one
    (claimed,) = await store.claim(["default"], "w2", lease=LEASE, now=T0 + 101)
    assert claimed.attempts == 2
    assert not await store.complete(j.id, 1, b"stale", now=T0 + 102)  # the old fence
    assert await store.complete(j.id, 2, b"ok", now=T0 + 102)
    assert (await record(store, j.id)).result == b"ok"


async def test_a_dead_job_retried_gets_one_attempt_more(store: Backend):
    j = await store.enqueue(job(max_attempts=2), now=T0)
    for attempt in (1, 2):
        await store.claim(["default"], "w", lease=LEASE, now=T0 + attempt * 10)
        await store.fail(j.id, attempt, b"boom", retry_delay=0, now=T0 + attempt * 10 + 1)
    assert (await record(store, j.id)).state == JobState.DEAD
    assert await store.retry(j.id, now=T0 + 50) == JobState.QUEUED
    assert (await record(store, j.id)).max_attempts == 3
    (claimed,) = await store.claim(["default"], "w", lease=LEASE, now=T0 + 51)
    assert claimed.attempts == 3
    assert await store.fail(j.id, 3, b"boom", retry_delay=0, now=T0 + 52) == JobState.DEAD


async def test_a_cancelled_job_retried_goes_back_on_each_of_its_queues(store: Backend):
    j = await store.enqueue(job(["a", "b"], not_before=T0 + 1000), now=T0)
    assert await store.cancel(j.id, now=T0 + 1) == JobState.CANCELLED
    assert await store.retry(j.id, now=T0 + 2) == JobState.QUEUED  # due now, not at T0+1000
    retried = await record(store, j.id)
    assert (retried.not_before, retried.max_attempts, retried.attempts) == (T0 + 2, 1, 0)
    assert [c.id for c in await store.claim(["b"], "w", lease=LEASE, now=T0 + 3)] == [j.id]
    assert await store.claim(["a"], "w", lease=LEASE, now=T0 + 3) == []


async def test_retry_leaves_queued_running_and_done_jobs_as_they_are(store: Backend):
    done = await store.enqueue(job(), now=T0)
    running = await store.enqueue(job(), now=T0)
    await store.claim(["default"], "w", lease=LEASE, count=2, now=T0)
    await store.complete(done.id, 1, b"r", now=T0 + 1)
    queued = await store.enqueue(job(), now=T0 + 2)
    ids = [done.id, running.id, queued.id]
    before = [await record(store, i) for i in ids]
    assert [await store.retry(i, now=T0 + 3) for i in ids] == [
        JobState.DONE,
        JobState.RUNNING,
        JobState.QUEUED,
    ]
    assert [await record(store, i) for i in ids] == before
    assert await store.queue_length("default") == 1  # queued's entry: none added
    assert await store.retry(uuid.uuid4().hex) is None
    with pytest.raises(ValueError, match="job id"):
        await store.retry("not-an-id")


async def test_a_retried_job_keeps_its_output(store: Backend):
    j = await store.enqueue(job(), now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    await store.append_output(j.id, "first try\n", attempt=1)
    await store.fail(j.id, 1, b"e", now=T0 + 1)
    await store.retry(j.id, now=T0 + 2)
    await store.claim(["default"], "w", lease=LEASE, now=T0 + 3)
    assert await store.append_output(j.id, "second try\n", attempt=2)
    assert await store.output(j.id) == ["first try\n", "second try\n"]


# -- queues ---------------------------------------------------------------------------------


async def test_queues_lists_each_queue_with_its_length_and_jobs_by_state(store: Backend):
    assert await store.queues() == []
    a = await store.enqueue(job(["gpu", "cpu"]), now=T0)
    await store.enqueue(job(["cpu"]), now=T0)
    await store.enqueue(job(["cpu"]), now=T0)
    await store.claim(["gpu"], "w", lease=LEASE, now=T0)
    await store.complete(a.id, 1, b"", now=T0 + 1)
    assert await store.queues() == [
        QueueInfo(name="cpu", length=3, states={"queued": 2, "done": 1}),  # a's entry stays
        QueueInfo(name="gpu", length=0, states={"done": 1}),
    ]
    assert [q.jobs for q in await store.queues()] == [3, 1]


async def test_a_queue_goes_from_the_list_with_its_last_job(store: Backend):
    j = await store.enqueue(job(["once"], result_ttl=10), now=T0)
    await store.cancel(j.id, now=T0)
    assert [q.name for q in await store.queues()] == ["once"]
    await store.sweep(now=T0 + 11)
    assert await store.queues() == []


async def test_the_counts_follow_every_step_of_a_jobs_life(store: Backend):
    """Random steps on three queues; after each, queues() agrees with the records."""
    rng = random.Random(15)
    names = ["a", "b", "c"]
    now, seen = T0, set()
    for _ in range(150):
        now += rng.choice([0.5, 1, 5, LEASE + 1])
        await _random_step(store, rng, names, now)
        seen |= await _assert_counts_match_records(store)
    assert seen == {s.value for s in JobState}  # every state was counted at some point


async def _random_step(store: Backend, rng: random.Random, names: list[str], now: float) -> None:
    step = rng.randrange(8)
    listed = await store.jobs(state=JobState.RUNNING if step in (3, 4) else None)
    some = rng.choice(listed) if listed else None
    if step <= 1 or some is None:
        queues = rng.sample(names, rng.choice([1, 1, 2]))
        await store.enqueue(job(queues, max_attempts=rng.choice([1, 2]), result_ttl=20), now=now)
    elif step == 2:
        await store.claim(rng.sample(names, 2), "w", lease=LEASE, count=2, now=now)
    elif step == 3:
        await store.complete(some.id, some.attempts, b"r", now=now)
    elif step == 4:
        delay = rng.choice([None, 0.0, 2.0])
        await store.fail(some.id, some.attempts, b"e", retry_delay=delay, now=now)
    elif step == 5:
        await store.cancel(some.id, now=now)
    elif step == 6:
        await store.retry(some.id, now=now)
    else:
        await store.sweep(now=now)


async def _assert_counts_match_records(store: Backend) -> set[str]:
    """The states counted."""
    expected: dict[str, Counter[str]] = {}
    for r in await store.jobs(limit=10_000):
        for name in set(r.queues):
            expected.setdefault(name, Counter())[r.state.value] += 1
    got = {q.name: q.states for q in await store.queues()}
    assert got == {name: dict(counts) for name, counts in expected.items()}
    for name in got:
        assert [q.length for q in await store.queues() if q.name == name] == [
            await store.queue_length(name)
        ]
    return {state for states in got.values() for state in states}


async def test_every_state_can_be_counted(store: Backend):
    """One job in each state on one queue."""
    ids = [(await store.enqueue(job(max_attempts=1), now=T0)).id for _ in range(6)]
    await store.claim(["default"], "w", lease=LEASE, count=5, now=T0)
    await store.complete(ids[0], 1, b"", now=T0)
    await store.fail(ids[1], 1, b"", now=T0)
    await store.fail(ids[2], 1, b"", retry_delay=0, now=T0)
    await store.cancel(ids[3], now=T0)  # running: requested
    await store.fail(ids[3], 1, b"", now=T0)
    (info,) = await store.queues()
    assert info.states == {s.value: 1 for s in JobState}
    assert set(info.states) - {s.value for s in FINAL_STATES} == {"queued", "running"}


# -- workers --------------------------------------------------------------------------------


def worker(name: str = "host-1:4242:1f3a9c2e", **fields) -> WorkerInfo:
    return WorkerInfo(
        name=name,
        queues=["gpu", "default"],
        concurrency=4,
        host="host-1",
        pid=4242,
        started=T0,
        **fields,
    )


async def test_a_worker_is_listed_while_it_beats_and_forgotten_after_its_ttl(store: Backend):
    assert await store.workers(now=T0) == []
    await store.worker_beat(worker(running=1), ttl=10, now=T0)
    (seen,) = await store.workers(now=T0 + 10)
    assert seen == worker(running=1, beat=T0, ttl=10.0)
    await store.worker_beat(worker(running=2, done=5, failed=1), ttl=10, now=T0 + 8)
    (seen,) = await store.workers(now=T0 + 17)
    assert (seen.running, seen.done, seen.failed, seen.beat) == (2, 5, 1, T0 + 8)
    assert await store.workers(now=T0 + 18.5) == []
    assert await store.workers(now=T0 + 17) == []  # forgotten, not only hidden


async def test_workers_are_listed_by_name_and_one_that_stops_goes_at_once(store: Backend):
    for name in ("b:2:x", "a:1:x", "c:3:x"):
        await store.worker_beat(worker(name), ttl=30, now=T0)
    assert [w.name for w in await store.workers(now=T0 + 1)] == ["a:1:x", "b:2:x", "c:3:x"]
    assert await store.worker_gone("b:2:x")
    assert not await store.worker_gone("b:2:x")
    assert [w.name for w in await store.workers(now=T0 + 1)] == ["a:1:x", "c:3:x"]


async def test_a_beat_forgets_the_workers_whose_time_ran_out(store: Backend):
    await store.worker_beat(worker("old"), ttl=5, now=T0)
    await store.worker_beat(worker("new"), ttl=5, now=T0 + 10)
    assert not await store.worker_gone("old")  # forgotten by the second beat
    assert [w.name for w in await store.workers(now=T0 + 10)] == ["new"]


async def test_bad_worker_names_and_ttls_are_refused_by_name(store: Backend):
    for bad in ("", "has space", "x" * 201):
        with pytest.raises(ValueError, match="worker name"):
            await store.worker_beat(worker(bad), ttl=10, now=T0)
    with pytest.raises(ValueError, match="worker name"):
        await store.worker_gone("a b")
    for ttl in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="ttl"):
            await store.worker_beat(worker(), ttl=ttl, now=T0)
    assert await store.workers(now=T0) == []
