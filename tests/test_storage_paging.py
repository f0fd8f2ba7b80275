"""Pages of the job list and of the data catalog, on both backends: a page is at most its
size, the next one continues right after the last record of the one before, in either
order, with the filters kept; a cursor that is gone is named."""

from __future__ import annotations

import uuid

import pytest

from undertow.data import DataRecord, Location
from undertow.storage import Backend, JobRecord, JobState

pytestmark = pytest.mark.timeout(60)

T0 = 1_000_000.0
HERE = Location(protocol="zmq", host="10.0.0.1", port=5600)


def job(queue: str = "default") -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, queues=[queue], function="f")


def record(created: float, owner: str = "alice", tags: list[str] | None = None) -> DataRecord:
    return DataRecord(
        key=uuid.uuid4().hex,
        secret="s3cret",
        type_name="bytes",
        size=10,
        created=created,
        owner=owner,
        tags=tags or ["raw"],
        locations=[HERE],
    )


async def test_jobs_come_a_page_at_a_time_in_either_order(store: Backend):
    jobs = [job() for _ in range(7)]
    for i, j in enumerate(jobs):
        await store.enqueue(j, now=T0 + i // 2)  # ties in submission time, broken by order
    ids = [r.id for r in await store.jobs()]  # ties: in each backend's own order
    assert sorted(ids) == sorted(j.id for j in jobs)
    seen: list[str] = []
    after = None
    while page := await store.jobs(limit=3, after=after):
        assert len(page) <= 3
        seen += [r.id for r in page]
        after = page[-1].id
    assert seen == ids
    first = await store.jobs(limit=3, newest_first=True)
    rest = await store.jobs(limit=10, after=first[-1].id, newest_first=True)
    assert [r.id for r in first + rest] == ids[::-1]


async def test_a_page_of_jobs_keeps_its_filters(store: Backend):
    mixed = [job("a" if i % 2 else "b") for i in range(10)]
    for i, j in enumerate(mixed):
        await store.enqueue(j, now=T0 + i)
    claimed = await store.claim(["a"], "w", lease=30.0, count=5, now=T0 + 20)
    for c in claimed[:3]:
        assert await store.complete(c.id, 1, b"", now=T0 + 21)
    done = [c.id for c in claimed[:3]]
    page = await store.jobs(state=JobState.DONE, limit=2, newest_first=True)
    assert [r.id for r in page] == done[::-1][:2]
    more = await store.jobs(state=JobState.DONE, limit=2, after=page[-1].id, newest_first=True)
    assert [r.id for r in more] == done[:1]
    on_b = await store.jobs(queue="b", limit=2, after=mixed[0].id)
    assert [r.id for r in on_b] == [mixed[2].id, mixed[4].id]


async def test_a_job_page_after_an_unknown_job_is_refused_by_name(store: Backend):
    gone = uuid.uuid4().hex
    with pytest.raises(LookupError, match=gone):
        await store.jobs(after=gone)
    with pytest.raises(ValueError, match="not-an-id"):
        await store.jobs(after="not-an-id")


async def test_the_catalog_comes_a_page_at_a_time_in_either_order(backend: Backend):
    made = [record(T0 + i // 2) for i in range(9)]
    for r in made:
        await backend.record_data(r)
    expected = [r.key for r in sorted(made, key=lambda r: (r.created, r.key))]
    seen: list[str] = []
    after = None
    while page := await backend.find_data(limit=4, after=after):
        assert len(page) <= 4
        seen += [r.key for r in page]
        after = page[-1].key
    assert seen == expected
    newest = await backend.find_data(limit=4, newest_first=True)
    rest = await backend.find_data(after=newest[-1].key, newest_first=True)
    assert [r.key for r in newest + rest] == expected[::-1]
    assert [r.key for r in await backend.find_data()] == expected
    assert newest[0].locations == [HERE]
    assert newest[0].tags == ["raw"]


async def test_a_catalog_page_keeps_its_filters(backend: Backend):
    made = [record(T0 + i, owner="bob" if i % 3 else "alice") for i in range(9)]
    for r in made:
        await backend.record_data(r)
    bobs = [r.key for r in made if r.owner == "bob"]
    page = await backend.find_data(owner="bob", limit=2)
    more = await backend.find_data(owner="bob", limit=10, after=page[-1].key)
    assert [r.key for r in page + more] == bobs
    tagged = await backend.find_data(tags=["raw"], limit=1, after=made[7].key)
    assert [r.key for r in tagged] == [made[8].key]


async def test_a_catalog_page_after_an_unknown_key_is_refused_by_name(backend: Backend):
    gone = uuid.uuid4().hex
    with pytest.raises(LookupError, match=gone):
        await backend.find_data(limit=5, after=gone)


async def test_running_jobs_page_like_the_others(store: Backend):
    jobs = [job("a" if i % 2 else "b") for i in range(6)]
    for i, j in enumerate(jobs):
        await store.enqueue(j, now=T0 + i)
    claimed = await store.claim(["a", "b"], "w", lease=30.0, count=4, now=T0 + 10)
    running = sorted(claimed, key=lambda r: r.submitted)
    listed = await store.jobs(state=JobState.RUNNING)
    assert [r.id for r in listed] == [r.id for r in running]
    newest = await store.jobs(state=JobState.RUNNING, limit=2, newest_first=True)
    assert [r.id for r in newest] == [r.id for r in running[::-1][:2]]
    rest = await store.jobs(state=JobState.RUNNING, after=newest[-1].id, newest_first=True)
    assert [r.id for r in rest] == [r.id for r in running[::-1][2:]]
    on_a = await store.jobs(state=JobState.RUNNING, queue="a")
    assert [r.id for r in on_a] == [r.id for r in running if r.queues == ["a"]]
    assert await store.complete(running[0].id, 1, b"", now=T0 + 11)
    assert running[0].id not in [r.id for r in await store.jobs(state=JobState.RUNNING)]
    with pytest.raises(LookupError):
        await store.jobs(state=JobState.RUNNING, after=uuid.uuid4().hex)
