"""The data catalog: the same cases on a SQLite file and on a real redis-server."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import msgspec
import pytest

from undertow.cluster import DataRecord, Location, Registry, open_backend
from undertow.data import decode_data, encode_data

from ._threads import run_in_threads

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0
ZMQ = Location(protocol="zmq", host="10.0.0.1", port=5600)
HTTP = Location(protocol="http", host="10.0.0.2", port=8080, path="/data")


def make(**fields: Any) -> DataRecord:
    record: dict[str, Any] = {
        "key": uuid.uuid4().hex,
        "secret": secrets.token_urlsafe(16),
        "type_name": "numpy.ndarray",
        "size": 4096,
        "created": time.time(),
        "owner": "alice",
        "tags": ["raw"],
        "locations": [ZMQ],
    }
    record.update(fields)
    return DataRecord(**record)


async def test_a_recorded_object_comes_back_whole(backend):
    record = make(tags=["raw", "2024"], locations=[ZMQ, HTTP])
    await backend.record_data(record)
    found = await backend.data_record(record.key)
    assert found == msgspec.structs.replace(record, tags=["2024", "raw"])  # tags come sorted
    assert found.secret == record.secret
    assert [location.url for location in found.locations] == [
        "tcp://10.0.0.1:5600",
        "http://10.0.0.2:8080/data",
    ]
    assert await backend.data_record(uuid.uuid4().hex) is None
    assert await backend.data_record("not-a-key") is None


async def test_recording_a_known_key_adds_its_locations_and_tags_once(backend):
    first = make(tags=["raw"], locations=[ZMQ])
    await backend.record_data(first)
    other = Location(protocol="zmq", host="10.0.0.3", port=5600)
    again = make(
        key=first.key,
        secret="another",
        size=1,
        owner="bob",
        tags=["raw", "clean", "clean"],
        locations=[ZMQ, HTTP, other, HTTP],
    )
    await backend.record_data(again)
    await backend.record_data(again)
    found = await backend.data_record(first.key)
    assert found is not None
    assert found.locations == [ZMQ, HTTP, other]  # in the order first recorded
    assert found.tags == ["clean", "raw"]
    assert (found.secret, found.size, found.owner) == (first.secret, first.size, first.owner)
    assert [r.key for r in await backend.find_data(tags=["raw"])] == [first.key]


async def test_find_by_tags_owner_and_type(backend):
    a = make(tags=["raw", "2024"], owner="alice", type_name="numpy.ndarray", created=1.0)
    b = make(tags=["raw", "2025"], owner="bob", type_name="numpy.ndarray", created=2.0)
    c = make(tags=["clean", "2024"], owner="alice", type_name="bytes", created=3.0)
    for record in (a, b, c):
        await backend.record_data(record)

    async def keys(**query: Any) -> list[str]:
        return [record.key for record in await backend.find_data(**query)]

    assert await keys() == [a.key, b.key, c.key]
    assert await keys(tags=["raw"]) == [a.key, b.key]
    assert await keys(tags=["raw", "2024"]) == [a.key]  # every tag, not any
    assert await keys(tags=["2024", "2024"]) == [a.key, c.key]
    assert await keys(tags=["raw", "clean"]) == []
    assert await keys(tags=["unknown"]) == []
    assert await keys(owner="alice") == [a.key, c.key]
    assert await keys(type_name="numpy.ndarray") == [a.key, b.key]
    assert await keys(tags=["2024"], owner="alice", type_name="bytes") == [c.key]
    assert await keys(owner="carol") == []


async def test_found_records_come_oldest_first(backend):
    records = [make(created=created) for created in (300.0, 100.0, 200.0)]
    for record in records:
        await backend.record_data(record)
    by_age = sorted(records, key=lambda r: r.created)
    assert await backend.find_data() == by_age
    assert await backend.find_data(tags=["raw"]) == by_age


async def test_a_record_goes_with_its_last_location(backend):
    record = make(tags=["raw", "2024"], locations=[ZMQ, HTTP])
    await backend.record_data(record)
    await backend.forget_data(record.key, HTTP)
    found = await backend.data_record(record.key)
    assert found is not None
    assert found.locations == [ZMQ]
    await backend.forget_data(record.key, HTTP)  # already gone: nothing changes
    assert await backend.data_record(record.key) == found
    await backend.forget_data(record.key, ZMQ)
    assert await backend.data_record(record.key) is None
    assert await backend.find_data(tags=["raw"]) == []
    assert await backend.find_data(tags=["2024"]) == []
    assert await backend.find_data() == []


async def test_forgetting_without_a_location_removes_the_record(backend):
    kept, gone = make(), make(locations=[ZMQ, HTTP])
    await backend.record_data(kept)
    await backend.record_data(gone)
    await backend.forget_data(gone.key)
    assert await backend.data_record(gone.key) is None
    assert await backend.find_data(tags=["raw"]) == [kept]
    # the key can be used again, and starts afresh
    await backend.record_data(make(key=gone.key, tags=["new"], locations=[HTTP]))
    again = await backend.data_record(gone.key)
    assert again is not None
    assert (again.tags, again.locations) == (["new"], [HTTP])


async def test_forgetting_what_is_unknown_is_fine(backend):
    record = make()
    await backend.record_data(record)
    await backend.forget_data(uuid.uuid4().hex)
    await backend.forget_data(uuid.uuid4().hex, ZMQ)
    await backend.forget_data("not-a-key:tags")
    assert await backend.find_data() == [record]


def test_the_sync_registry_edits_the_catalog(url):
    record = make(tags=["raw", "2024"], locations=[ZMQ, HTTP])
    with Registry(url, timeout=WAIT) as registry:
        registry.record_data(record)
        assert registry.data_record(record.key) == msgspec.structs.replace(
            record, tags=["2024", "raw"]
        )
        assert registry.find_data(tags=["2024"], owner="alice", type_name="numpy.ndarray") == [
            registry.data_record(record.key)
        ]
        registry.forget_data(record.key, ZMQ)
        assert [r.locations for r in registry.find_data()] == [[HTTP]]
        registry.forget_data(record.key)
        assert registry.data_record(record.key) is None


def test_concurrent_merges_into_one_record_lose_no_location(url):
    # Each writer adds a location of its own and one they all share: every own location must
    # land, and the shared one only once (a read-then-write merge without a transaction
    # loses the former or doubles the latter).
    key = uuid.uuid4().hex
    own = [Location(protocol="zmq", host=f"node-{i}", port=5600 + i) for i in range(20)]

    def add(location: Location) -> None:
        with Registry(url, timeout=WAIT) as registry:  # a connection of its own
            registry.record_data(make(key=key, tags=[location.host], locations=[HTTP, location]))

    run_in_threads(add, own, timeout=WAIT)
    with Registry(url, timeout=WAIT) as registry:
        found = registry.data_record(key)
        assert found is not None
        assert found.locations[0] == HTTP  # recorded first, by whichever writer came first
        assert sorted(found.locations[1:], key=lambda loc: loc.port) == own
        assert found.tags == sorted(loc.host for loc in own)
        assert [r.key for r in registry.find_data(tags=["node-7", "node-13"])] == [key]


# -- the records themselves ---------------------------------------------------------------------


def test_the_secret_never_shows_in_a_records_repr():
    record = make(secret="hunter2-capability", locations=[ZMQ, HTTP])
    for shown in (repr(record), str(record), f"{record}", repr([record]), repr({"r": record})):
        assert "hunter2-capability" not in shown
    assert record.key in repr(record)
    assert "tcp://10.0.0.1:5600" in repr(record)
    assert "hunter2-capability" not in repr(record.__rich_repr__())
    assert decode_data(encode_data(record)) == record  # but it is kept


def test_locations_make_urls():
    assert ZMQ.url == "tcp://10.0.0.1:5600"
    assert HTTP.url == "http://10.0.0.2:8080/data"
    assert Location(protocol="http", host="::1", port=80).url == "http://[::1]:80"
    assert Location(protocol="zmq", host="fe80::2", port=5, path="/x").url == "tcp://[fe80::2]:5"
    with pytest.raises(ValueError, match="'ipc'"):
        Location(protocol="ipc", host="h", port=1)


def test_a_data_key_is_a_uuid4_in_hex():
    with pytest.raises(ValueError, match="'abc:tags'"):
        make(key="abc:tags")
    with pytest.raises(msgspec.ValidationError):
        decode_data(encode_data(make()).replace(b'"key":"', b'"key":"X'))


# -- the Redis layout ---------------------------------------------------------------------------


async def test_the_redis_keys_of_a_record(redis_url):
    import redis.asyncio as aioredis

    from undertow.storage import _keys as keys

    backend = open_backend(redis_url)
    raw = aioredis.from_url(redis_url)
    try:
        record = make(size=123, tags=["raw", "2024"], locations=[ZMQ, HTTP])
        await backend.record_data(record)
        key = record.key

        assert await raw.smembers(keys.DATA) == {key.encode()}
        head = await raw.get(keys.data(key))
        assert head is not None
        fields = msgspec.json.decode(head)
        assert fields == {
            "key": key,
            "secret": record.secret,
            "type_name": "numpy.ndarray",
            "size": 123,
            "created": record.created,
            "owner": "alice",
        }  # no tags nor locations: they have keys of their own
        listed = [msgspec.json.decode(x) for x in await raw.lrange(keys.data_locations(key), 0, -1)]
        assert listed == [
            {"protocol": "zmq", "host": "10.0.0.1", "port": 5600, "path": "", "size": 123},
            {"protocol": "http", "host": "10.0.0.2", "port": 8080, "path": "/data", "size": 123},
        ]
        assert await raw.smembers(keys.data_tags(key)) == {b"raw", b"2024"}
        assert await raw.smembers(keys.tag("raw")) == {key.encode()}
        assert await raw.smembers(keys.tag("2024")) == {key.encode()}

        await backend.forget_data(key, ZMQ)
        assert await raw.llen(keys.data_locations(key)) == 1
        await backend.forget_data(key, HTTP)
        names = [keys.data(key), keys.data_locations(key), keys.data_tags(key)]
        assert await raw.exists(*names, keys.tag("raw"), keys.tag("2024"), keys.DATA) == 0
    finally:
        await raw.aclose()
        await backend.close()


def test_the_redis_key_names():
    from undertow.storage import _keys as keys

    key = "0123456789abcdef0123456789abcdef"
    assert keys.DATA == "undertow:data"
    assert keys.data(key) == f"undertow:data:{key}"
    assert keys.data_locations(key) == f"undertow:data:{key}:locations"
    assert keys.data_tags(key) == f"undertow:data:{key}:tags"
    assert keys.tag("raw") == "undertow:tag:raw"


async def test_an_unreadable_redis_record_hides_no_other(redis_url, caplog):
    import redis.asyncio as aioredis

    from undertow.storage import _keys as keys

    backend = open_backend(redis_url)
    raw = aioredis.from_url(redis_url)
    try:
        good, broken = make(created=1.0), make(created=2.0)
        await backend.record_data(good)
        await backend.record_data(broken)
        await raw.set(keys.data(broken.key), b"not json")
        assert await backend.find_data(tags=["raw"]) == [good]
        assert broken.key in caplog.text
        await backend.record_data(broken)  # recording it again repairs it
        assert await backend.find_data(tags=["raw"]) == [good, broken]
    finally:
        await raw.aclose()
        await backend.close()
