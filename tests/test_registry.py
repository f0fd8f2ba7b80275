"""The cluster registry: the same cases on a SQLite file and on a real redis-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from undertow.cluster import Instance, Registry, open_backend
from undertow.config import backend_url
from undertow.errors import BackendError, ConfigError
from undertow.rpc._calls import FunctionInfo

from ._waiting import wait_until

WAIT = 10.0


def make(service: str = "Svc", *, ttl: float = 10.0, started: float | None = None) -> Instance:
    now = time.time()
    return Instance(
        service=service,
        id=uuid.uuid4().hex,
        addresses=["tcp://127.0.0.1:5555", "tcp://10.0.0.2:5555"],
        methods=[FunctionInfo("put", doc="Store a value.", params=[("key", 1, None, "str")])],
        host="node-1",
        pid=os.getpid(),
        started=now if started is None else started,
        heartbeat=now,
        ttl=ttl,
    )


async def test_a_registered_instance_is_found_with_its_whole_record(backend):
    instance = make()
    await backend.register(instance)
    assert await backend.instances("Svc") == [instance]
    assert await backend.all_instances() == [instance]
    found = (await backend.instances("Svc"))[0]
    assert found.address == "tcp://127.0.0.1:5555"
    assert found.methods[0].doc == "Store a value."
    assert await backend.instances("Other") == []


async def test_instances_of_one_name_come_oldest_first_and_services_by_name(backend):
    late, early = make(started=2000.0), make(started=1000.0)
    other = make("Another")
    for instance in (late, other, early):
        await backend.register(instance)
    assert await backend.instances("Svc") == [early, late]
    assert [i.service for i in await backend.all_instances()] == ["Another", "Svc", "Svc"]


async def test_a_clean_stop_deregisters_at_once(backend):
    kept, stopped = make(), make()
    await backend.register(kept)
    await backend.register(stopped)
    await backend.deregister("Svc", stopped.id)
    assert await backend.instances("Svc") == [kept]


def test_an_instance_without_heartbeats_disappears_within_its_ttl(url):
    instance = make(ttl=0.5)
    with Registry(url) as registry:
        registry.register(instance)
        registered = time.monotonic()
        assert wait_until(lambda: registry.instances("Svc") == [], 0.5 + WAIT, interval=0.02)
        assert time.monotonic() - registered < 0.5 + 1.0  # gone within its TTL (plus slack)
        assert registry.all_instances() == []

    async def late_heartbeat() -> bool:
        backend = open_backend(url)
        try:
            return await backend.heartbeat(instance.beat())
        finally:
            await backend.close()

    # a late heartbeat finds it gone, so its owner knows to register again
    assert asyncio.run(late_heartbeat()) is False


async def test_heartbeats_keep_an_instance_alive_past_its_ttl(backend):
    instance = make(ttl=2.0)
    await backend.register(instance)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        instance = instance.beat()
        assert await backend.heartbeat(instance) is True
        assert await backend.instances("Svc") == [instance]


def test_the_sync_registry_sees_what_was_registered(url):
    with Registry(url) as registry:
        instance = make()
        registry.register(instance)
        assert registry.instances("Svc") == [instance]
        assert registry.all_instances() == [instance]
        registry.deregister("Svc", instance.id)
        assert registry.instances("Svc") == []


# -- the embedded default -----------------------------------------------------------------------


def test_the_default_backend_is_a_file_in_the_undertow_home(undertow_home, monkeypatch):
    assert backend_url() == f"sqlite://{undertow_home / 'cluster.db'}"  # sqlite:///abs/path
    monkeypatch.setenv("UNDERTOW_BACKEND", "redis://somewhere:6379/0")
    assert backend_url() == "redis://somewhere:6379/0"
    assert backend_url("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"  # an explicit one wins


def test_bad_backend_urls_say_what_to_use(monkeypatch):
    with pytest.raises(ConfigError, match="sqlite:///path"):
        backend_url("postgres://db/x")
    monkeypatch.setenv("UNDERTOW_BACKEND", "nonsense")
    with pytest.raises(ConfigError, match="UNDERTOW_BACKEND 'nonsense'"):
        backend_url()
    with pytest.raises(ConfigError, match="absolute path"):
        open_backend("sqlite://relative.db")


def test_an_unreachable_redis_is_reported_without_its_password():
    with socket_closed_port() as port:
        registry = Registry(f"redis://user:hunter2@127.0.0.1:{port}/0", timeout=WAIT)
        with pytest.raises(BackendError) as failure:
            registry.all_instances()
        registry.close()
    assert f"redis://user:***@127.0.0.1:{port}/0" in str(failure.value)
    assert "hunter2" not in str(failure.value)
    assert "hunter2" not in repr(registry)


def socket_closed_port():  # a port nothing listens on, held by us so nothing will
    import contextlib
    import socket

    @contextlib.contextmanager
    def held():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
            yield sock.getsockname()[1]

    return held()


WRITER = textwrap.dedent(
    """
    import sys, time, uuid
    from undertow.cluster import Instance, Registry

    url, worker, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Registry(url, timeout=60) as registry:
        mine = []
        for i in range(n):
            now = time.time()
            instance = Instance(service=f"S{i % 3}", id=uuid.uuid4().hex,
                                addresses=[f"tcp://h:{i}"], host=worker, started=now,
                                heartbeat=now, ttl=60)
            registry.register(instance)
            mine.append(instance)
            registry.instances(instance.service)
        for instance in mine[::2]:
            registry.deregister(instance.service, instance.id)
    print("done", flush=True)
    """
)


@pytest.mark.multiproc
def test_sqlite_takes_several_processes_writing_at_once(tmp_path):
    url = f"sqlite://{tmp_path / 'shared.db'}"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    workers, n = 4, 40
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, f"w{w}", str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    with Registry(url) as registry:
        left = registry.all_instances()
    assert len(left) == workers * n // 2  # every write landed; every other one was removed
    assert {i.host for i in left} == {f"w{w}" for w in range(workers)}


async def test_a_heartbeat_puts_back_an_id_a_lookup_removed(redis_url):
    # A lookup that saw the record expire just before its owner registered it again removes
    # the id from the service's set; the owner's next heartbeat must put it back.
    import redis.asyncio as aioredis

    from undertow.storage import _keys as keys

    backend = open_backend(redis_url)
    instance = make()
    await backend.register(instance)
    raw = aioredis.from_url(redis_url)
    await raw.srem(keys.service_instances("Svc"), instance.id)
    await raw.aclose()
    assert await backend.instances("Svc") == []
    assert await backend.heartbeat(instance.beat()) is True
    assert [i.id for i in await backend.instances("Svc")] == [instance.id]
    await backend.close()


async def test_a_deleted_registry_file_is_made_again(tmp_path):
    url = f"sqlite://{tmp_path / 'cluster.db'}"
    backend = open_backend(url)
    instance = make()
    await backend.register(instance)
    for suffix in ("", "-wal", "-shm"):  # someone resets the registry
        (tmp_path / f"cluster.db{suffix}").unlink(missing_ok=True)
    assert await backend.heartbeat(instance.beat()) is False  # gone: its owner registers again
    await backend.register(instance.beat())
    assert [i.id for i in await backend.instances("Svc")] == [instance.id]


async def test_an_unreadable_record_hides_no_other(url, caplog):
    backend = open_backend(url)
    good = make()
    await backend.register(good)
    broken = make()
    await backend.register(broken)
    await _corrupt(url, broken.id)
    assert await backend.instances("Svc") == [good]
    assert broken.id in caplog.text
    await backend.close()


async def _corrupt(url: str, instance_id: str) -> None:
    if url.startswith("sqlite"):
        import sqlite3

        from undertow.storage._sqlite import sqlite_path

        with sqlite3.connect(sqlite_path(url)) as conn:
            conn.execute("UPDATE instances SET record = '{}' WHERE id = ?", (instance_id,))
        return
    import redis.asyncio as aioredis

    from undertow.storage import _keys as keys

    raw = aioredis.from_url(url)
    await raw.set(keys.instance(instance_id), b"not json", px=10_000)
    await raw.aclose()


def test_urls_in_messages_never_show_a_password():
    from undertow.config import redact_url

    assert redact_url("redis://u:hunter2@h:6379/0") == "redis://u:***@h:6379/0"
    assert redact_url("redis://:pw@[::1]:6379/0?password=x&db=1") == (
        "redis://:***@[::1]:6379/0?password=***&db=1"
    )
    assert redact_url("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"
    with pytest.raises(ConfigError) as failure:
        backend_url("redis+tls://u:s3cret@h:6379/0")
    assert "s3cret" not in str(failure.value)


def test_a_closed_registry_says_so():
    registry = Registry()
    registry.close()
    with pytest.raises(BackendError, match="closed"):
        registry.all_instances()
