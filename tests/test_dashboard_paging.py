"""The dashboard under a big cluster: 100,000 finished jobs and 10,000 catalog records in a
real SQLite backend. The lists come a page at a time (the backend's query picks the page),
each next page continuing where the last one stopped; many open pages share one poll loop;
and the answers stay fast (p99 under 200 ms)."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from undertow.dashboard import Dashboard, serve
from undertow.data import DataRecord, Location
from undertow.storage import JobRecord, open_backend

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOKEN = "t0ken-for-the-paging-tests"
JOBS = 100_000
RECORDS = 10_000
BATCH = 10_000
#: the answer time the issue asks for, at the 99th percentile
P99 = 0.200


async def fill(url: str) -> None:
    """JOBS finished jobs and RECORDS catalog records, written in bulk through the backend."""
    backend = open_backend(url)
    try:
        for start in range(0, JOBS, BATCH):
            batch = [
                JobRecord(id=uuid.uuid4().hex, queues=["bulk"], function="f") for _ in range(BATCH)
            ]
            await backend.enqueue_many(batch, now=1_000_000.0 + start)
        while claimed := await backend.claim(["bulk"], "w", lease=600, count=BATCH):
            await backend.complete_many([(job.id, job.attempts, b"") for job in claimed])
        here = [Location(protocol="zmq", host="node-1", port=5600)]
        for i in range(RECORDS):
            await backend.record_data(
                DataRecord(
                    key=uuid.uuid4().hex, secret="s", type_name="bytes", size=i,
                    created=1_000_000.0 + i, owner="bulk", tags=["bulk"], locations=here,
                )
            )  # fmt: skip
    finally:
        await backend.close()


@pytest.fixture(scope="module")
def big_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite://{tmp_path_factory.mktemp('big') / 'cluster.db'}"
    asyncio.run(fill(url))
    return url


@pytest.fixture
def dashboard(big_url: str) -> Iterator[Dashboard]:
    with serve(big_url, port=0, token=TOKEN, interval=0.2) as handle:
        yield handle


@pytest.fixture
def http(dashboard: Dashboard) -> Iterator[httpx.Client]:
    auth = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=dashboard.address, headers=auth, timeout=30) as client:
        yield client


def timed(http: httpx.Client, path: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    answer = http.get(path)
    took = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    return took, answer.json()


def p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100)[98]


def test_finished_jobs_come_a_page_at_a_time(http):
    _, first = timed(http, "/api/jobs?state=done&limit=50")
    assert len(first["jobs"]) == 50
    assert first["next"] == first["jobs"][-1]["id"]
    _, second = timed(http, f"/api/jobs?state=done&limit=50&after={first['next']}")
    assert len(second["jobs"]) == 50
    ids = [job["id"] for job in first["jobs"] + second["jobs"]]
    assert len(set(ids)) == 100  # no job twice
    submitted = [job["submitted"] for job in first["jobs"] + second["jobs"]]
    assert submitted == sorted(submitted, reverse=True)  # newest first, across the pages
    times = [
        timed(http, f"/api/jobs?state=done&limit=50&after={ids[i % 100]}")[0] for i in range(200)
    ]
    assert p99(times) < P99, f"p99 of a page of jobs: {p99(times) * 1000:.0f} ms"


def test_the_catalog_comes_a_page_at_a_time(http):
    _, first = timed(http, "/api/data?limit=200")
    assert len(first["data"]) == 200
    _, second = timed(http, f"/api/data?limit=200&after={first['next']}")
    keys = [d["key"] for d in first["data"] + second["data"]]
    assert len(set(keys)) == 400
    sizes = [d["size"] for d in first["data"] + second["data"]]
    assert sizes == list(range(RECORDS - 1, RECORDS - 401, -1))  # created in that order
    times = [timed(http, f"/api/data?limit=50&after={keys[i]}")[0] for i in range(200)]
    assert p99(times) < P99, f"p99 of a page of the catalog: {p99(times) * 1000:.0f} ms"


def test_open_pages_share_one_poll_loop_and_answers_stay_fast(dashboard, http):
    stop = threading.Event()
    received = [0] * 10

    def watch(i: int) -> None:
        auth = {"authorization": f"Bearer {TOKEN}"}
        with (
            httpx.Client(base_url=dashboard.address, headers=auth, timeout=30) as client,
            client.stream("GET", "/api/events") as events,
        ):
            for line in events.iter_lines():
                received[i] += line.startswith("data:")
                if stop.is_set():
                    return

    watchers = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(10)]
    for watcher in watchers:
        watcher.start()
    try:
        started, (_, before) = time.monotonic(), timed(http, "/api/snapshot")
        times = [timed(http, "/api/snapshot")[0] for _ in range(150)]
        times += [timed(http, "/api/jobs?limit=50")[0] for _ in range(50)]
        elapsed, (_, after) = time.monotonic() - started, timed(http, "/api/snapshot")
    finally:
        stop.set()
    for watcher in watchers:
        watcher.join(30)
    assert p99(times) < P99, f"p99 under 10 open pages: {p99(times) * 1000:.0f} ms"
    polls = after["version"] - before["version"]
    assert polls <= elapsed / 0.2 + 2, f"{polls} polls in {elapsed:.1f} s: one loop, not one a page"
    assert all(received), received
    assert after["queues"][0]["states"]["done"] == JOBS
