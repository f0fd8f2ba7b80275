"""The job store's batches (enqueue_many, complete_many), on both backends: each gives what the
single operations give, whether the backend's own batch or the interface's default (a loop of
the single ones); and JobQueue.map, which stores its jobs in batches, end to end."""

from __future__ import annotations

import functools
import threading
import uuid
from typing import Any

import msgspec
import pytest

from undertow.queue import JobQueue, Worker
from undertow.storage import Backend, JobRecord, JobState, JobStore

pytestmark = pytest.mark.timeout(60)

T0 = 1_000_000.0
LEASE = 30.0


class Batches:
    """The two batch operations of ``store``: its own, or the interface's default."""

    def __init__(self, store: Backend, own: bool) -> None:
        if own:
            self.enqueue_many: Any = store.enqueue_many
            self.complete_many: Any = store.complete_many
        else:
            self.enqueue_many = functools.partial(JobStore.enqueue_many, store)
            self.complete_many = functools.partial(JobStore.complete_many, store)


@pytest.fixture(params=["own", "default"])
def batch(request: pytest.FixtureRequest, store: Backend) -> Batches:
    return Batches(store, own=request.param == "own")


def job(queue: str = "default", **fields: Any) -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, queues=[queue], function="f", payload=b"args", **fields)


def twin(record: JobRecord, queue: str) -> JobRecord:
    """The same job under a new id, on ``queue``."""
    return msgspec.structs.replace(record, id=uuid.uuid4().hex, queues=[queue])


def alike(record: JobRecord | None) -> JobRecord:
    """``record`` without what tells twins apart (its id and queues)."""
    assert record is not None
    return msgspec.structs.replace(record, id="", queues=[])


async def test_enqueue_many_stores_what_enqueue_stores(store: Backend, batch: Batches):
    jobs = [job("b"), job("b", not_before=T0 + 60), job("b", max_attempts=3, codec="pickle")]
    singles = [twin(j, "s") for j in jobs]
    stored = await batch.enqueue_many(jobs, now=T0)
    one_by_one = [await store.enqueue(j, now=T0) for j in singles]
    assert [s.id for s in stored] == [j.id for j in jobs]
    assert [alike(s) for s in stored] == [alike(s) for s in one_by_one]
    assert [alike(await store.job(j.id)) for j in jobs] == [
        alike(await store.job(j.id)) for j in singles
    ]
    assert await store.queue_length("b") == await store.queue_length("s")
    claimed = await store.claim(["b"], "w", lease=LEASE, count=10, now=T0 + 1)
    assert [c.id for c in claimed] == [jobs[0].id, jobs[2].id]
    claimed = await store.claim(["s"], "w", lease=LEASE, count=10, now=T0 + 1)
    assert [c.id for c in claimed] == [singles[0].id, singles[2].id]
    later = await store.claim(["b", "s"], "w", lease=LEASE, count=10, now=T0 + 61)
    assert [c.id for c in later] == [jobs[1].id, singles[1].id]


async def test_idempotency_keys_inside_a_batch_and_against_stored_jobs(
    store: Backend, batch: Batches
):
    kept = await store.enqueue(job(idempotency_key="k1"), now=T0)
    jobs = [
        job(idempotency_key="k1"),
        job(idempotency_key="k2"),
        job(idempotency_key="k2"),
        job(),
    ]
    stored = await batch.enqueue_many(jobs, now=T0 + 1)
    assert [s.id for s in stored] == [kept.id, jobs[1].id, jobs[1].id, jobs[3].id]
    assert stored[0].submitted == T0
    assert await store.job(jobs[0].id) is None
    assert await store.job(jobs[2].id) is None
    assert await store.queue_length("default") == 3


async def test_complete_many_refuses_a_stale_attempt_and_passes_the_others(
    store: Backend, batch: Batches
):
    a, b, c = jobs = [job(max_attempts=2) for _ in range(3)]
    await batch.enqueue_many(jobs, now=T0)
    assert len(await store.claim(["default"], "w1", lease=LEASE, count=3, now=T0)) == 3
    assert await store.complete(b.id, 1, b"first", now=T0 + 1)
    # c's lease ends (a's is renewed) and another worker takes attempt 2: attempt 1 is stale
    assert await store.renew(a.id, 1, lease=LEASE, now=T0 + 20)
    assert await store.sweep(now=T0 + LEASE + 1) == 1
    assert [r.id for r in await store.claim(["default"], "w2", lease=LEASE, now=T0 + 40)] == [c.id]
    unknown = uuid.uuid4().hex
    results = [(a.id, 1, b"a"), (b.id, 1, b"again"), (c.id, 1, b"late"), (unknown, 1, b"x")]
    assert await batch.complete_many(results, now=T0 + 50) == [True, False, False, False]
    done_a, done_b, running_c = [await store.job(j.id) for j in jobs]
    assert done_a is not None
    assert done_b is not None
    assert running_c is not None
    assert (done_a.state, done_a.result, done_a.finished) == (JobState.DONE, b"a", T0 + 50)
    assert (done_b.result, done_b.finished) == (b"first", T0 + 1)
    assert (running_c.state, running_c.attempts, running_c.result) == (JobState.RUNNING, 2, None)
    assert await batch.complete_many([(c.id, 2, b"c")], now=T0 + 51) == [True]
    assert await store.complete(c.id, 2, b"c", now=T0 + 52) is False


async def test_bad_ids_and_queue_names_are_refused_by_name_before_anything_changes(
    store: Backend, batch: Batches
):
    good = job()
    bad = msgspec.structs.replace(job(), id="not-an-id")
    with pytest.raises(ValueError, match="not-an-id"):
        await batch.enqueue_many([good, bad], now=T0)
    with pytest.raises(ValueError, match="no queue"):
        await batch.enqueue_many([good, msgspec.structs.replace(job(), queues=[])], now=T0)
    with pytest.raises(ValueError, match="bad queue!"):
        await batch.enqueue_many([good, job("bad queue!")], now=T0)
    assert await store.job(good.id) is None
    await store.enqueue(good, now=T0)
    await store.claim(["default"], "w", lease=LEASE, now=T0)
    with pytest.raises(ValueError, match="NOT-HEX"):
        await batch.complete_many([(good.id, 1, b"r"), ("NOT-HEX", 1, b"r")], now=T0)
    record = await store.job(good.id)
    assert record is not None
    assert record.state == JobState.RUNNING


async def test_an_id_that_exists_stops_the_batch_naming_it(store: Backend, batch: Batches):
    first = await store.enqueue(job(), now=T0)
    again = msgspec.structs.replace(job(), id=first.id, function="other")
    after = job()
    with pytest.raises(ValueError, match=first.id):
        await batch.enqueue_many([job(), again, after], now=T0 + 1)
    assert await store.job(after.id) is None
    kept = await store.job(first.id)
    assert kept is not None
    assert (kept.function, kept.submitted) == ("f", T0)


async def test_empty_batches(store: Backend, batch: Batches):
    assert await batch.enqueue_many([], now=T0) == []
    assert await batch.complete_many([], now=T0) == []


def test_map_of_1000_jobs_runs_each_once_through_a_burst_worker(url: str):
    calls: list[int] = []
    lock = threading.Lock()

    def counted(x: int) -> int:
        with lock:
            calls.append(x)
        return x * 3

    with JobQueue(url, token=False) as queue:
        jobs = queue.map("counted", range(1000))
        assert len({j.id for j in jobs}) == 1000
        assert queue.queue_length() == 1000
        worker = Worker(url, ["default"], functions={"counted": counted}, concurrency=4)
        worker.work(burst=True)
        assert [j.result(timeout=10) for j in jobs] == [x * 3 for x in range(1000)]
    assert sorted(calls) == list(range(1000))


def double(x: int) -> int:
    return 2 * x


def test_a_burst_workers_exit_does_not_read_the_jobs_kept(redis_url: str):
    import redis

    with JobQueue(redis_url, token=False) as queue:
        queue.map("double", range(500))
        Worker(redis_url, ["default"], functions={"double": double}).work(burst=True)
        client = redis.Redis.from_url(redis_url)
        try:
            before = client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)
            Worker(redis_url, ["default"], functions={"double": double}).work(burst=True)
            after = client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)
        finally:
            client.close()
    assert after - before < 10  # (it read all 500 finished jobs' hashes to see none waited)
