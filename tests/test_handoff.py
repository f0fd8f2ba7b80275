"""Jobs handed to idle workers (Redis): a worker offers its free slots with each claim, and a
job enqueued meanwhile starts for it at once and goes into its inbox, read by a thread of the
worker's own. What must hold: a handed job is RUNNING under attempt 1 and runs once; offers
count down and lapse; a worker that does not read its inbox swallows at most one job, which
comes back after its lease; a worker that stops ends its offer and runs what it was handed;
a submit from sync code on Redis goes straight from the calling thread. The SQLite store
hands nothing (its workers claim every job)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from undertow.errors import BrokerUnavailable
from undertow.queue import JobQueue, JobState, Worker
from undertow.storage import JobRecord, Offer, open_backend
from undertow.storage import _keys as keys
from undertow.storage._redis import RedisBackend
from undertow.storage._redis_sync import RedisSubmitter

from ._processes import free_port
from ._redis import redis_server
from ._waiting import wait_until

pytestmark = pytest.mark.timeout(60)

T0 = 1_000_000.0


@pytest.fixture
def store(redis_store: RedisBackend) -> RedisBackend:
    return redis_store


def job(queues: list[str] | None = None, **fields: Any) -> JobRecord:
    return JobRecord(
        id=uuid.uuid4().hex, queues=queues or ["q"], function="f", payload=b"\x00\xffargs", **fields
    )


async def test_a_job_enqueued_while_a_worker_offers_starts_for_it_at_once(store: RedisBackend):
    assert await store.claim(["q"], "w1", lease=30, now=T0, offer=Offer(2, T0 + 5, 4.0)) == []
    sent = job(max_attempts=3)
    stored = await store.enqueue(sent, now=T0 + 1)
    assert (stored.state, stored.attempts) == (JobState.RUNNING, 1)
    inbox = store.inbox("w1")
    try:
        [got] = inbox.take(5.0)
    finally:
        inbox.close()
    kept = await store.job(sent.id)
    assert got == kept  # the inbox's copy is the stored record, payload's bytes and all
    assert kept is not None
    assert (kept.state, kept.attempts, kept.worker) == (JobState.RUNNING, 1, "w1")
    assert (kept.started, kept.lease_until, kept.payload) == (T0 + 1, T0 + 5, b"\x00\xffargs")
    assert await store.queue_length("q") == 0
    [info] = await store.queues()
    assert info.states == {"running": 1}
    # the attempt is fenced as a claimed one is: renewed, then completed once
    assert await store.renew(sent.id, 1, lease=30, now=T0 + 2)
    assert await store.complete(sent.id, 1, b"r", now=T0 + 3)
    assert not await store.complete(sent.id, 1, b"again", now=T0 + 3)


async def test_offers_count_down_then_jobs_queue_as_before(store: RedisBackend, raw: Any):
    await store.claim(["q"], "w1", lease=30, now=T0, offer=Offer(2, T0 + 5, 4.0))
    first = await store.enqueue(job(), now=T0)
    assert await raw.hget(keys.IDLE_OFFERS, "w1") == b"1 4.0 q"
    await raw.delete(keys.inbox("w1"))  # (as the worker's thread takes it)
    second = await store.enqueue(job(), now=T0)
    third = await store.enqueue(job(), now=T0)
    assert [first.state, second.state, third.state] == ["running", "running", "queued"]
    assert await raw.hget(keys.IDLE_OFFERS, "w1") is None
    assert await raw.zcard(keys.idle("q")) == 0
    assert await store.queue_length("q") == 1


async def test_a_claim_that_takes_jobs_offers_only_the_slots_left(store: RedisBackend, raw: Any):
    for _ in range(3):
        await store.enqueue(job(), now=T0)
    taken = await store.claim(["q"], "w1", lease=30, count=2, now=T0, offer=Offer(4, T0 + 5, 4))
    assert len(taken) == 2
    assert await raw.hget(keys.IDLE_OFFERS, "w1") == b"2 4 q"
    # a claim without an offer (a worker that drains) withdraws it
    await store.claim(["q"], "w1", lease=30, count=2, now=T0)
    assert await raw.hget(keys.IDLE_OFFERS, "w1") is None


async def test_a_lapsed_offer_and_a_delayed_job_are_not_handed(store: RedisBackend, raw: Any):
    await store.claim(["q"], "w1", lease=30, now=T0, offer=Offer(3, T0 + 5, 4.0))
    later = await store.enqueue(job(not_before=T0 + 60), now=T0)
    assert later.state == "queued"
    lapsed = await store.enqueue(job(), now=T0 + 6)
    assert lapsed.state == "queued"
    assert await raw.zcard(keys.idle("q")) == 0
    assert await store.queue_length("q") == 1


async def test_a_job_goes_to_its_first_queue_with_an_idle_worker(store: RedisBackend):
    await store.claim(["central"], "w-central", lease=30, now=T0, offer=Offer(1, T0 + 5, 4))
    await store.claim(["host:a"], "w-a", lease=30, now=T0, offer=Offer(1, T0 + 5, 4))
    stored = await store.enqueue(job(["host:a", "central"]), now=T0)
    kept = await store.job(stored.id)
    assert kept is not None
    assert kept.worker == "w-a"


async def test_a_worker_that_never_reads_swallows_one_job_which_comes_back(
    store: RedisBackend, raw: Any
):
    await store.claim(["q"], "ghost", lease=30, now=T0, offer=Offer(4, T0 + 5, 2.0))
    swallowed = await store.enqueue(job(max_attempts=2), now=T0)
    assert swallowed.state == "running"
    passed_over = await store.enqueue(job(), now=T0 + 0.5)
    assert passed_over.state == "queued"  # its inbox still held the first: no more for it
    assert await raw.hget(keys.IDLE_OFFERS, "ghost") is None
    await store.sweep(now=T0 + 3)  # the handed lease (2 s) ran out
    back = await store.job(swallowed.id)
    assert back is not None
    assert (back.state, back.attempts) == (JobState.QUEUED, 1)
    assert "lease expired" in back.reason
    assert 0 < await raw.pttl(keys.inbox("ghost")) <= 2000  # and the inbox goes too


async def test_withdraw_ends_the_offer_and_the_inbox_keeps_what_it_holds(
    store: RedisBackend, raw: Any
):
    await store.claim(["q", "r"], "w1", lease=30, now=T0, offer=Offer(2, T0 + 5, 4))
    handed = await store.enqueue(job(), now=T0)
    await store.withdraw("w1")
    assert await store.enqueue(job(["r"]), now=T0) is not None
    assert await raw.zcard(keys.idle("q")) + await raw.zcard(keys.idle("r")) == 0
    inbox = store.inbox("w1")
    try:
        assert [r.id for r in inbox.take(0)] == [handed.id]
        assert inbox.take(0) == []
    finally:
        inbox.close()


async def test_batches_are_queued_not_handed(store: RedisBackend):
    await store.claim(["q"], "w1", lease=30, now=T0, offer=Offer(4, T0 + 5, 4))
    stored = await store.enqueue_many([job(), job()], now=T0)
    assert [r.state for r in stored] == ["queued", "queued"]


async def test_the_sqlite_store_hands_nothing(tmp_path: Any):
    backend = open_backend(f"sqlite://{tmp_path / 'x.db'}")
    try:
        assert backend.inbox("w1") is None
        await backend.claim(["q"], "w1", lease=30, now=T0, offer=Offer(2, T0 + 5, 4))
        assert (await backend.enqueue(job(), now=T0)).state == "queued"
        await backend.withdraw("w1")
    finally:
        await backend.close()


# -- workers and submitters ---------------------------------------------------------------------


def add(x: int, y: int) -> int:
    return x + y


class Gate:
    """A job that waits for the test to open it."""

    def __init__(self) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()

    def __call__(self) -> str:
        self.entered.set()
        assert self.opened.wait(30)
        return "through"


@pytest.fixture
def running(redis_url: str) -> Iterator[tuple[Worker, Gate]]:
    gate = Gate()
    w = Worker(redis_url, ["q"], functions={"add": add, "gate": gate}, concurrency=2)
    thread = threading.Thread(target=w.work, kwargs={"burst": False})
    thread.start()
    try:
        assert wait_until(lambda: _offers(redis_url).get(w.name, "").startswith("2 "), 20)
        yield w, gate
    finally:
        gate.opened.set()
        w.drain()
        thread.join(20)
        assert not thread.is_alive()


def _offers(url: str) -> dict[str, str]:
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {str(k): str(v) for k, v in client.hgetall(keys.IDLE_OFFERS).items()}
    finally:
        client.close()


def test_an_idle_worker_runs_a_handed_job_and_stops_clean(
    redis_url: str, running: tuple[Worker, Gate]
):
    w, _ = running
    with JobQueue(redis_url, token=False, queue="q") as q:
        q.submit("add", 0, 0).result(timeout=10)  # (the first opens the store)
        job_ = q.submit("add", 2, 3)
        assert isinstance(q._handle._submitter, RedisSubmitter)  # sent from this thread
        assert job_.result(timeout=10) == 5
        record = asyncio.run(_record(redis_url, job_.id))
        assert (record.worker, record.attempts) == (w.name, 1)
        assert record.started == record.submitted  # started by the enqueue: handed
    w.drain()
    assert wait_until(lambda: w.name not in _offers(redis_url), 20)


def test_a_worker_that_drains_runs_the_job_it_was_handed_first(
    redis_url: str, running: tuple[Worker, Gate]
):
    w, gate = running
    with JobQueue(redis_url, token=False, queue="q") as q:
        held = q.submit("gate")
        assert gate.entered.wait(10)
        w.drain()  # while the job runs: it ends first, and is stored
        gate.opened.set()
        assert held.result(timeout=10) == "through"
        assert held.state == JobState.DONE


async def _record(url: str, job_id: str) -> JobRecord:
    backend = open_backend(url)
    try:
        record = await backend.job(job_id)
    finally:
        await backend.close()
    assert record is not None
    return record


def test_a_submit_from_sync_code_to_a_redis_that_went_away_is_broker_unavailable():
    with redis_server() as base:
        q = JobQueue(f"{base}/0", token=False, queue="q", timeout=2.0)
        q.submit("add", 1, 2)
        q.submit("add", 1, 2)
        assert isinstance(q._handle._submitter, RedisSubmitter)
    try:  # (the server is gone)
        with pytest.raises(BrokerUnavailable, match="idempotency_key"):
            q.submit("add", 1, 2)
    finally:
        q.close()


def test_a_submit_to_no_redis_at_all_is_broker_unavailable():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with JobQueue(url, token=False, queue="q", timeout=2.0) as q:
        with pytest.raises(BrokerUnavailable):
            q.submit("add", 1, 2)
