"""Where jobs go (queue/_route.py): the plan from pointer sizes and hosts, without I/O, and
jobs routed through a real store to the queue of the host that holds their data."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import msgspec
import pytest

from undertow.cluster import Registry
from undertow.data import Pointer
from undertow.queue import JobQueue, JobState, Worker
from undertow.queue._route import Held, Route, find_pointers, host_queue, plan
from undertow.storage import WorkerInfo, open_backend
from undertow.wire import POINTER_TYPE

pytestmark = pytest.mark.timeout(60)

MiB = 2**20
HERE = socket.gethostname()


def held(size_mib: float, *hosts: str) -> Held:
    return Held(uuid.uuid4().hex, int(size_mib * MiB), list(hosts))


@pytest.mark.parametrize(
    ("items", "groups", "queues", "why"),
    [
        ([], {}, ["default"], "given"),
        ([held(10, "a"), held(20, "a")], {}, ["default"], "central"),  # 30 MiB < 64
        ([held(100, "a")], {}, ["host:a"], "data"),
        ([held(100, "a"), held(50, "b")], {}, ["host:a"], "data"),
        ([held(100, "a"), held(100, "b")], {}, ["host:a", "host:b"], "data"),  # a tie
        ([held(100, "a", "b"), held(10, "b")], {}, ["host:b"], "data"),  # b holds both
        ([held(100, "a", "b")], {"gpu": ["b", "a"]}, ["group:gpu"], "group"),
        ([held(100, "a", "b")], {"big": ["a", "b", "c"]}, ["host:a", "host:b"], "data"),
        ([held(100, "127.0.0.1")], {}, [f"host:{HERE}"], "data"),  # loopback: this host
        ([held(100, "weird host!")], {}, ["host:weird-host-"], "data"),
        ([held(100)], {}, ["default"], "central"),  # the catalog knows no host of it
    ],
)
def test_the_plan(items: list[Held], groups: dict[str, list[str]], queues: list[str], why: str):
    route = plan(items, ["default"], threshold=64 * MiB, groups=groups)
    if why in ("data", "group"):  # and its own queue after: any worker runs it if none there
        queues = [*queues, "default"]
    assert (route.queues, route.why) == (queues, why)
    assert route.explain().startswith(f"sent to {', '.join(queues)}")


def test_the_same_pointer_twice_counts_once():
    one = held(40, "a")
    route = plan([one, one], ["default"], threshold=64 * MiB)
    assert (route.why, route.total) == ("central", 40 * MiB)


def _pointer(host: str, size: int) -> Pointer:
    form = {
        "type": POINTER_TYPE,
        "key": uuid.uuid4().hex,
        "host": host,
        "protocol": "zmq",
        "port": 5555,
        "path": "",
        "secret_key": "s" * 32,
        "size": size,
        "type_name": "bytes",
    }
    return Pointer(form)


def test_pointers_are_found_a_few_levels_deep():
    a, b, c = (_pointer("h", 1) for _ in range(3))
    found = find_pointers([a, [b, {"x": (c, a)}]], {"k": {"deep": [b]}})
    assert {p.key for p in found} == {a.key, b.key, c.key}


def size_of(pointer: object) -> int:
    return 7


def test_a_job_with_much_data_goes_to_the_queue_of_its_host(url: str, tmp_path: Path):
    here, far = _pointer("127.0.0.1", 5000), _pointer("10.9.9.9", 9000)
    with JobQueue(url, token=False, threshold=4096) as queue:
        small = queue.submit("size_of", _pointer("127.0.0.1", 100))
        local = queue.submit("size_of", here)
        remote = queue.submit("size_of", [here, far])
        given = queue.submit("size_of", far, queue="default")  # a queue named: no routing
        assert small.record().queues == ["default"]
        assert local.record().queues == [host_queue(HERE), "default"]
        assert remote.record().queues == ["host:10.9.9.9", "default"]
        assert given.record().queues == ["default"]
        assert "below the threshold" in small.explain()
        assert f"host:{HERE}, default (the hosts holding most" in local.explain()
        assert "10.9.9.9 holds" in remote.explain()
        assert "waits for a worker of host:10.9.9.9, default" in remote.explain()
        route = msgspec.json.decode(remote.record().route, type=Route)
        assert route.by_host == {HERE: 5000, "10.9.9.9": 9000}
        worker = Worker(url, ["default"], functions={"size_of": size_of}, hosts=[HERE])
        worker.work()
        assert local.result(timeout=10) == 7
        assert local.record().worker == worker.name
        assert "done" in local.explain()
        assert remote.result(timeout=10) == 7  # nobody works on 10.9.9.9: its queue ran it


def test_map_routes_each_job(url: str):
    with JobQueue(url, token=False, threshold=4096) as queue:
        jobs = queue.map("size_of", [_pointer("10.1.1.1", 5000), 3])
        assert [j.record().queues for j in jobs] == [["host:10.1.1.1", "default"], ["default"]]


def test_the_catalog_knows_every_copy(url: str):
    from undertow.data import DataRecord, Location

    pointer = _pointer("10.1.1.1", 5000)
    record = DataRecord(
        key=pointer.key,
        secret="x" * 32,
        type_name="bytes",
        size=5000,
        created=0.0,
        owner="",
        locations=[Location(protocol="zmq", host=h, port=1) for h in ("10.1.1.1", "10.2.2.2")],
    )

    async def remember() -> None:
        backend = open_backend(url)
        try:
            await backend.record_data(record)
        finally:
            await backend.close()

    asyncio.run(remember())
    with JobQueue(url, token=False, threshold=4096) as queue:
        job = queue.submit("size_of", pointer)
        assert job.record().queues == ["host:10.1.1.1", "host:10.2.2.2", "default"]
        with Registry(url) as registry:
            registry.set_group("pair", ["10.2.2.2", "10.1.1.1"])
        job = queue.submit("size_of", pointer)
        assert job.record().queues == ["group:pair", "default"]
        assert "group pair, exactly those hosts" in job.explain()


def test_long_host_names_keep_distinct_queues():
    a, b = "h" * 70 + "a", "h" * 70 + "b"
    qa, qb = host_queue(a), host_queue(b)
    assert qa != qb
    assert len(qa) == len(qb) == 64


def test_a_worker_takes_the_jobs_of_its_host_and_its_groups_first(url: str):
    with Registry(url) as registry:
        registry.set_group("mine", ["10.3.3.3", HERE])
        registry.set_group("theirs", ["10.4.4.4"])
    with JobQueue(url, token=False) as queue:
        here = queue.submit("size_of", 1, queue=host_queue(HERE))
        ours = queue.submit("size_of", 2, queue="group:mine")
        theirs = queue.submit("size_of", 3, queue="group:theirs")
        worker = Worker(url, ["default"], functions={"size_of": size_of})
        worker.work(burst=True)
        assert worker.queues[0] == host_queue(HERE)
        assert worker.queues[-2:] == ["group:mine", "default"]
        assert (here.result(timeout=10), ours.result(timeout=10)) == (7, 7)
        assert theirs.state is JobState.QUEUED
        Worker(url, ["default"], functions={"size_of": size_of}, hosts=[]).work(burst=True)
        assert theirs.state is JobState.QUEUED


def _beat(url: str, name: str, queues: list[str]) -> None:
    """A live worker taking ``queues`` (as a worker busy elsewhere says it is)."""

    async def beat() -> None:
        backend = open_backend(url)
        try:
            await backend.worker_beat(WorkerInfo(name=name, queues=queues), ttl=60)
        finally:
            await backend.close()

    asyncio.run(beat())


def test_a_job_waits_for_the_workers_where_its_data_is_then_runs_anywhere(url: str):
    _beat(url, "far:1:busy", ["host:10.9.9.9", "default"])  # busy: it takes nothing now
    with JobQueue(url, token=False, threshold=4096, locality_wait=1.5) as queue:
        routed = queue.submit("size_of", _pointer("10.9.9.9", 5000))
        record = routed.record()
        assert (record.local_queues, record.queues) == (1, ["host:10.9.9.9", "default"])
        assert "theirs alone for up to 1.5 s, then also default's" in routed.explain()
        elsewhere = Worker(url, ["default"], functions={"size_of": size_of}, hosts=[])
        elsewhere.work(burst=True)  # it waits for the job: counted on its queue, not there yet
        assert routed.result(timeout=10) == 7
        record = routed.record()
        assert record.worker == elsewhere.name
        assert record.started - record.submitted >= 1.5 - 0.05  # (clocks: the same machine's)


def test_a_job_does_not_wait_for_a_host_without_workers(url: str):
    with JobQueue(url, token=False, threshold=4096, locality_wait=30) as queue:
        routed = queue.submit("size_of", _pointer("10.8.8.8", 5000))
        assert routed.record().local_queues == 0
        assert "alone" not in routed.explain()
        Worker(url, ["default"], functions={"size_of": size_of}, hosts=[]).work(burst=True)
        assert routed.result(timeout=10) == 7


def test_a_negative_locality_wait_is_refused_by_name(url: str):
    with pytest.raises(ValueError, match="locality_wait=-1"):
        JobQueue(url, token=False, locality_wait=-1)


def kind_of(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [type(item).__name__ for item in items]


def test_a_job_by_name_gets_its_pointer_arguments_as_pointers(url: str):
    one, two = _pointer("10.7.7.7", 10), _pointer("10.7.7.7", 10)
    with JobQueue(url, token=False) as queue:
        job = queue.submit("kind_of", [one, {"x": 1}, two])
        Worker(url, ["default"], functions={"kind_of": kind_of}, hosts=[]).work(burst=True)
        assert job.result(timeout=10) == ["Pointer", "dict", "Pointer"]
