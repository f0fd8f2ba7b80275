"""Shared fixtures: servers on port 0 in this process, and servers in child processes."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import undertow

READY_TIMEOUT = 20.0


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


class ChildServer:
    """A server script running in a child process, ready once it printed its address."""

    def __init__(self, script: str, tmp_path: Path, args: tuple[str, ...] = ()) -> None:
        path = tmp_path / f"server_{os.getpid()}_{id(self)}.py"
        path.write_text(textwrap.dedent(script))
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.address = self._read_address()

    def _read_address(self) -> str:
        import selectors

        sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(READY_TIMEOUT):
            self.stop()
            raise TimeoutError("child server did not print its address in time")
        line = self.proc.stdout.readline()
        if "serving" not in line:
            self.stop()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"child server failed to start: {line!r} {err}")
        return line.rsplit(" ", 1)[-1].strip()

    def stop(self) -> int:
        """SIGTERM, then wait; a child that needs SIGKILL fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("child server ignored SIGTERM") from None
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


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
) -> Path:
    """Every test gets an undertow home of its own (child processes inherit it) and the
    embedded backend, whatever the environment says."""
    home = tmp_path_factory.mktemp("undertow-home")
    monkeypatch.setenv("UNDERTOW_HOME", str(home))
    monkeypatch.delenv("UNDERTOW_BACKEND", raising=False)
    return home
