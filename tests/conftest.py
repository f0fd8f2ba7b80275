"""Shared fixtures: servers on port 0 in this process, and servers in child processes."""

from __future__ import annotations

import itertools
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import undertow
from undertow.cluster import Backend, open_backend
from undertow.data import close_clients
from undertow.patterns import shutdown as shutdown_patterns
from undertow.storage._redis import RedisBackend

from ._processes import ChildServer, ServedProcess


@pytest.fixture
def serve() -> Iterator[Callable[[undertow.Server], str]]:
    """Start servers in background threads on port 0; stop them after the test."""
    started: list[undertow.Server] = []

    def start(server: undertow.Server) -> str:
        started.append(server)
        return server.start("tcp://127.0.0.1:0")

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[..., ChildServer]]:
    """Start server scripts in child processes; stop them after the test."""
    children: list[ChildServer] = []

    def start(script: str, *args: str) -> ChildServer:
        c = ChildServer(script, tmp_path, args)
        children.append(c)
        return c

    yield start
    for c in children:
        c.stop()


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A real redis-server of the test session's own, on a free port."""
    from ._redis import redis_server

    with redis_server() as url:
        yield url


_redis_dbs = itertools.cycle(range(1, 16))


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """A database of the session's redis-server for this test alone, emptied first."""
    import redis

    url = f"{redis_server_url}/{next(_redis_dbs)}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture(autouse=True)
def undertow_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets an undertow home of its own (child processes inherit it) and the
    embedded backend, and no token, whatever the environment says; the clients pointers
    made are closed after it."""
    home = tmp_path_factory.mktemp("undertow-home")
    monkeypatch.setenv("UNDERTOW_HOME", str(home))
    for name in ("UNDERTOW_BACKEND", "UNDERTOW_TOKEN", "UNDERTOW_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    yield home
    close_clients()
    shutdown_patterns()


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry URL: a SQLite file, then a database of the session's redis-server."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'cluster.db'}"
    redis_url: str = request.getfixturevalue("redis_url")
    return redis_url


@pytest.fixture
async def backend(url: str) -> AsyncIterator[Backend]:
    """An open backend of ``url``, closed after the test."""
    b = open_backend(url)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisBackend]:
    """An open Redis backend on the test's database, closed after the test."""
    backend = open_backend(redis_url)
    assert isinstance(backend, RedisBackend)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Any]:
    """A redis-py asyncio client of the test's database, to look at the keys themselves."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(backend: Backend) -> Backend:
    """The backend as the job store tests call it (on both backends)."""
    return backend


@pytest.fixture
def role() -> Iterator[Callable[..., ServedProcess]]:
    """Start a pattern role of tests/pattern_roles.py (master, worker, sink, stage) in a
    process of its own: ``role("master", "squares")``; each is killed when the test ends."""
    started: list[ServedProcess] = []

    def run(kind: str, name: str, *args: object) -> ServedProcess:
        script = str(Path(__file__).parent / "pattern_roles.py")
        proc = ServedProcess([sys.executable, script, kind, name, *map(str, args)])
        started.append(proc)
        return proc

    yield run
    for proc in started:
        proc.stop(signal.SIGKILL)
