"""The embedded backend: one SQLite file, shared by every process of the user on this machine.

Nothing to install or start. The file is in WAL mode, so readers never wait for a writer, and
every connection waits up to ``busy_timeout`` for another process's write to finish instead
of failing. A connection is opened per operation, in a worker thread: registry operations
are rare (start, stop, a heartbeat every few seconds, a lookup per discovery), and a fresh
connection is safe across threads and forks.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from undertow.cluster._backend import Backend, by_age
from undertow.cluster._records import Instance, encode_instance, readable
from undertow.errors import BackendError, ConfigError

__all__ = ["SqliteBackend", "sqlite_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id      TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    expires REAL NOT NULL,   -- Unix time after which the record is dead
    record  TEXT NOT NULL    -- the Instance as JSON
);
CREATE INDEX IF NOT EXISTS instances_by_service ON instances (service, expires);
"""

#: rows dead for longer than this are deleted when a new instance registers
_KEEP_DEAD = 3600.0


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///absolute/path`` URL (a relative path is not allowed)."""
    rest = url.partition("://")[2]
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(
            f"backend {url!r} does not name a file by its absolute path; "
            "use e.g. 'sqlite:///home/me/.undertow/cluster.db'"
        )
    return Path("/" + rest.lstrip("/"))


class SqliteBackend(Backend):
    """Cluster state in a SQLite file.

    Args:
        url: ``sqlite:///absolute/path.db``; the directory is made if needed.
        busy_timeout: seconds a write waits for another process's write.
    """

    def __init__(self, url: str, *, busy_timeout: float = 10.0) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout

    def __repr__(self) -> str:
        return f"<SqliteBackend {self.path}>"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(f"cannot open the registry {self.url}: {exc}") from exc
        try:
            # Every time (both cost microseconds): a file deleted to reset the registry is
            # made again by the next heartbeat, and services register themselves again.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            yield conn
        except sqlite3.Error as exc:
            raise BackendError(f"registry {self.url}: {exc}") from exc
        finally:
            conn.close()

    # Each public coroutine runs its blocking part in a worker thread.

    async def register(self, instance: Instance) -> None:
        await asyncio.to_thread(self._register, instance)

    def _register(self, instance: Instance) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO instances (id, service, expires, record) "
                "VALUES (?, ?, ?, ?)",
                (instance.id, instance.service, _expires(instance), _text(instance)),
            )
            conn.execute("DELETE FROM instances WHERE expires < ?", (time.time() - _KEEP_DEAD,))

    async def heartbeat(self, instance: Instance) -> bool:
        return await asyncio.to_thread(self._heartbeat, instance)

    def _heartbeat(self, instance: Instance) -> bool:
        with self._connect() as conn:
            cursor = conn.execute(
                "UPDATE instances SET expires = ?, record = ? "
                "WHERE id = ? AND service = ? AND expires > ?",
                (_expires(instance), _text(instance), instance.id, instance.service, time.time()),
            )
            return cursor.rowcount == 1

    async def deregister(self, service: str, instance_id: str) -> None:
        await asyncio.to_thread(self._deregister, service, instance_id)

    def _deregister(self, service: str, instance_id: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "DELETE FROM instances WHERE id = ? AND service = ?", (instance_id, service)
            )

    async def instances(self, service: str) -> list[Instance]:
        return await asyncio.to_thread(self._select, "service = ? AND", (service,))

    async def all_instances(self) -> list[Instance]:
        return await asyncio.to_thread(self._select, "", ())

    def _select(self, where: str, args: tuple[str, ...]) -> list[Instance]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT id, record FROM instances WHERE {where} expires > ?",  # noqa: S608 - fixed text
                (*args, time.time()),
            ).fetchall()
        found = [readable(record, instance_id, self.url) for instance_id, record in rows]
        return by_age([instance for instance in found if instance is not None])

    async def close(self) -> None:
        """Nothing to release: connections live for one operation."""


def _expires(instance: Instance) -> float:
    return instance.heartbeat + instance.ttl


def _text(instance: Instance) -> str:
    return encode_instance(instance).decode()
