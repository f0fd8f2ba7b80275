"""Jobs whose results stay where they were computed (``return_pointer``): the worker leaves
the result on its host's data server and the job answers with a pointer, which the next job
(or the notebook) slices without moving the value."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import undertow
from undertow.errors import ConfigError
from undertow.queue import JobQueue, Worker
from undertow.queue._payload import Call
from undertow.queue._runner import kept
from undertow.storage import JobRecord

from ._processes import ServedProcess, data_node

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster() -> Iterator[undertow.Cluster]:
    with undertow.Cluster(workers=1, concurrency=2, modules=["tests._cluster_jobs"]) as c:
        yield c


def test_a_notebook_function_leaves_its_result_on_the_data_server(cluster: undertow.Cluster):
    job = cluster.submit(lambda n: list(range(n)), 1000, return_pointer=True)
    pointer = job.result(timeout=60)
    assert isinstance(pointer, undertow.Pointer)
    assert pointer.address == cluster.put([0]).address  # the cluster's data server
    assert pointer[10] == 10  # sliced there: only the item travels
    assert pointer.fetch() == list(range(1000))


def test_a_pointer_result_feeds_the_next_job(cluster: undertow.Cluster):
    first = cluster.submit(lambda: list(range(50)), return_pointer=True)
    second = cluster.submit(lambda p: p[7] + len(p), first.result(timeout=60))
    assert second.result(timeout=60) == 57


def test_a_job_by_name_returns_a_pointer_too(cluster: undertow.Cluster):
    job = cluster.submit("shout", "hi", return_pointer=True)
    pointer = job.result(timeout=60)
    assert isinstance(pointer, undertow.Pointer)
    assert pointer.fetch() == "HI"


def test_without_return_pointer_the_value_itself_comes_back(cluster: undertow.Cluster):
    assert cluster.submit("shout", "hi").result(timeout=60) == "HI"


def square(x: int) -> int:
    return x * x


def test_a_worker_with_no_data_server_fails_the_job_saying_how_to_get_one(url: str):
    with JobQueue(url, token=False, queue="q") as q:
        job = q.submit("square", 3, return_pointer=True)
        w = Worker(url, ["q"], functions={"square": square}, poll_max=0.05)
        thread = threading.Thread(target=w.work, kwargs={"burst": True})
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
        with pytest.raises(ConfigError, match="undertow data serve"):
            job.result(timeout=10)


def test_slots_without_a_keeper_say_so():
    record = JobRecord(id="0" * 32, queues=["q"], function="f")
    with pytest.raises(ConfigError, match="return_pointer"):
        kept(None, Call([], keep=True), 42, record)
    assert kept(None, Call([]), 42, record) == 42  # nothing asked: the value itself


def numbers(n: int) -> list[int]:
    return list(range(n))


@pytest.fixture
def data_server(url: str, tmp_path: Path) -> Iterator[ServedProcess]:
    """A data server registered in ``url`` (the service "data" of this host)."""
    node = data_node(url, tmp_path / "data")
    try:
        yield node
    finally:
        node.stop()


@pytest.mark.parametrize("mode", ["thread", "process", "fork"])
def test_every_worker_mode_leaves_results_on_this_hosts_data_server(
    url: str, data_server: ServedProcess, mode: str
):
    with JobQueue(url, token=False, queue="q") as q:
        jobs = q.map("numbers", [30, 40], return_pointer=True)
        w = Worker(url, ["q"], functions={"numbers": numbers}, mode=mode, poll_max=0.05)
        thread = threading.Thread(target=w.work, kwargs={"burst": True})
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
        first, second = (job.result(timeout=10) for job in jobs)
    assert isinstance(first, undertow.Pointer)
    assert (first[29], len(second)) == (29, 40)
    assert first.address == second.address  # both on the one data server of this host
