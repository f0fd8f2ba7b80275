"""The embedded backend: one SQLite file, shared by every process of the user on this machine.

Nothing to install or start. The file is in WAL mode, so readers never wait for a writer, and
every connection waits up to ``busy_timeout`` for another process's write to finish instead
of failing. A connection is opened per operation, in a worker thread: registry operations
are rare (start, stop, a heartbeat every few seconds, a lookup per discovery), and a fresh
connection is safe across threads and forks.

The data catalog is three tables: ``data`` (one row per record), ``data_tags`` and
``data_locations`` (rows per tag and location, keyed by the record's key). Every write is one
``BEGIN IMMEDIATE`` transaction, so concurrent merges into one record never lose a location.

Host groups are one table, ``host_groups``: a row per group and host, in rowid order (the
order the hosts were added: SQLite gives a new row a rowid above every row's there). A group
is its rows; it goes with its last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from undertow.data import DataRecord, Location
from undertow.errors import BackendError, ConfigError
from undertow.storage._backend import Backend, by_age, check_group_name, check_hosts
from undertow.storage._records import Instance, encode_instance, readable
from undertow.storage._sqlite_jobs import SqliteJobs

__all__ = ["SqliteBackend", "sqlite_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id      TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    expires REAL NOT NULL,   -- Unix time after which the record is dead
    record  TEXT NOT NULL    -- the Instance as JSON
);
CREATE INDEX IF NOT EXISTS instances_by_service ON instances (service, expires);

CREATE TABLE IF NOT EXISTS data (
    key       TEXT PRIMARY KEY,
    secret    TEXT NOT NULL,
    type_name TEXT NOT NULL,
    size      INTEGER NOT NULL,
    created   REAL NOT NULL,   -- Unix time
    owner     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS data_by_created ON data (created, key);   -- pages of the catalog
CREATE TABLE IF NOT EXISTS data_tags (
    key TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (key, tag)
);
CREATE INDEX IF NOT EXISTS data_tags_by_tag ON data_tags (tag);
CREATE TABLE IF NOT EXISTS data_locations (   -- rowid order: the order they were recorded
    key      TEXT NOT NULL,
    protocol TEXT NOT NULL,
    host     TEXT NOT NULL,
    port     INTEGER NOT NULL,
    path     TEXT NOT NULL,
    PRIMARY KEY (key, protocol, host, port, path)
);

CREATE TABLE IF NOT EXISTS host_groups (   -- rowid order: the order the hosts were added
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    PRIMARY KEY (name, host)
);
"""

# each follows a "WITH found AS (SELECT key ...)" naming the records to read
_SELECT_DATA = (
    "SELECT key, secret, type_name, size, created, owner FROM data JOIN found USING (key) "
    "ORDER BY created, key"
)
_SELECT_TAGS = "SELECT key, tag FROM data_tags JOIN found USING (key) ORDER BY tag"
_SELECT_LOCATIONS = (
    "SELECT key, protocol, host, port, path FROM data_locations JOIN found USING (key) "
    "ORDER BY data_locations.rowid"
)

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


class SqliteBackend(SqliteJobs, Backend):
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
            self._use_wal(conn)
            conn.executescript(_SCHEMA)
            yield conn
        except sqlite3.Error as exc:
            raise BackendError(f"registry {self.url}: {exc}") from exc
        finally:
            conn.close()

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to write-ahead logging (it stays so). The switch needs the file to
        itself and SQLite does not wait for that, so a busy file is tried again until the
        busy timeout."""
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        deadline = time.monotonic() + self.busy_timeout
        pause = threading.Event()  # never set: its wait() is the pause between tries
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            pause.wait(0.005)

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

    # -- the data catalog --------------------------------------------------------------------

    async def record_data(self, record: DataRecord) -> None:
        await asyncio.to_thread(self._record_data, record)

    def _record_data(self, record: DataRecord) -> None:
        key = record.key
        with self._connect() as conn, _transaction(conn):
            # OR IGNORE: an existing record keeps its fields; new tags and locations are added
            conn.execute(
                "INSERT OR IGNORE INTO data (key, secret, type_name, size, created, owner) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, record.secret, record.type_name, record.size, record.created, record.owner),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO data_tags (key, tag) VALUES (?, ?)",
                [(key, tag) for tag in record.tags],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO data_locations (key, protocol, host, port, path) "
                "VALUES (?, ?, ?, ?, ?)",
                [(key, at.protocol, at.host, at.port, at.path) for at in record.locations],
            )

    async def forget_data(self, key: str, location: Location | None = None) -> None:
        await asyncio.to_thread(self._forget_data, key, location)

    def _forget_data(self, key: str, location: Location | None) -> None:
        with self._connect() as conn, _transaction(conn):
            if location is not None:
                conn.execute(
                    "DELETE FROM data_locations "
                    "WHERE key = ? AND protocol = ? AND host = ? AND port = ? AND path = ?",
                    (key, location.protocol, location.host, location.port, location.path),
                )
                left = conn.execute("SELECT 1 FROM data_locations WHERE key = ? LIMIT 1", (key,))
                if left.fetchone() is not None:
                    return
            conn.execute("DELETE FROM data WHERE key = ?", (key,))
            conn.execute("DELETE FROM data_tags WHERE key = ?", (key,))
            conn.execute("DELETE FROM data_locations WHERE key = ?", (key,))

    async def data_record(self, key: str) -> DataRecord | None:
        found = await asyncio.to_thread(self._select_data, "key = ?", [key])
        return found[0] if found else None

    async def find_data(
        self,
        *,
        tags: Sequence[str] = (),
        owner: str | None = None,
        type_name: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        newest_first: bool = False,
    ) -> list[DataRecord]:
        where: list[str] = ["1"]
        args: list[str | int] = []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if type_name is not None:
            where.append("type_name = ?")
            args.append(type_name)
        wanted = sorted(set(tags))
        if wanted:  # the keys with every wanted tag have as many matching rows as there are tags
            marks = ", ".join("?" * len(wanted))
            where.append(
                f"key IN (SELECT key FROM data_tags WHERE tag IN ({marks}) "  # noqa: S608 - fixed text
                "GROUP BY key HAVING COUNT(*) = ?)"
            )
            args += [*wanted, len(wanted)]
        page = (after, newest_first, limit)
        records = await asyncio.to_thread(self._select_data, " AND ".join(where), args, page)
        return records[::-1] if newest_first else records

    def _select_data(
        self,
        where: str,
        args: list[str | int],
        page: tuple[str | None, bool, int | None] = (None, False, None),
    ) -> list[DataRecord]:
        """The records whose row in ``data`` matches ``where``, read in one transaction;
        ``page`` is (the key before the page, newest first?, the page's size or None), and
        the page is chosen in the query, by the index on (created, key)."""
        after, newest_first, limit = page
        order, beyond = ("DESC", "<") if newest_first else ("ASC", ">")
        with self._connect() as conn, _transaction(conn, "BEGIN"):
            if after is not None:
                row = conn.execute("SELECT created FROM data WHERE key = ?", (after,)).fetchone()
                if row is None:
                    raise LookupError(
                        f"data record {after!r} is not in the catalog (forgotten?): it cannot "
                        "mark where a page starts; ask for the first page again (after=None)"
                    )
                where += f" AND (created, key) {beyond} (?, ?)"
                args = [*args, row[0], after]
            if limit is not None:
                where += f" ORDER BY created {order}, key {order} LIMIT {max(int(limit), 0)}"
            found = f"WITH found AS (SELECT key FROM data WHERE {where}) "  # noqa: S608 - fixed text
            rows, tags, locations = (
                conn.execute(found + query, args).fetchall()
                for query in (_SELECT_DATA, _SELECT_TAGS, _SELECT_LOCATIONS)
            )
        return _assemble(rows, tags, locations)

    # -- host groups -------------------------------------------------------------------------

    async def set_group(self, name: str, hosts: Sequence[str]) -> None:
        await asyncio.to_thread(self._put_group, check_group_name(name), check_hosts(hosts), True)

    async def add_to_group(self, name: str, hosts: Sequence[str]) -> None:
        await asyncio.to_thread(self._put_group, check_group_name(name), check_hosts(hosts), False)

    def _put_group(self, name: str, hosts: list[str], replace: bool) -> None:
        with self._connect() as conn, _transaction(conn):
            if replace:
                conn.execute("DELETE FROM host_groups WHERE name = ?", (name,))
            # OR IGNORE: a host the group has keeps its row, so its place
            conn.executemany(
                "INSERT OR IGNORE INTO host_groups (name, host) VALUES (?, ?)",
                [(name, host) for host in hosts],
            )

    async def remove_from_group(self, name: str, hosts: Sequence[str]) -> bool:
        return await asyncio.to_thread(
            self._remove_from_group, check_group_name(name), check_hosts(hosts)
        )

    def _remove_from_group(self, name: str, hosts: list[str]) -> bool:
        with self._connect() as conn, _transaction(conn):
            found = conn.execute("SELECT 1 FROM host_groups WHERE name = ? LIMIT 1", (name,))
            if found.fetchone() is None:
                return False
            conn.executemany(
                "DELETE FROM host_groups WHERE name = ? AND host = ?",
                [(name, host) for host in hosts],
            )
            return True

    async def group(self, name: str) -> list[str] | None:
        found = await asyncio.to_thread(self._select_groups, check_group_name(name))
        return found.get(name)

    async def groups(self) -> dict[str, list[str]]:
        return await asyncio.to_thread(self._select_groups, None)

    def _select_groups(self, name: str | None) -> dict[str, list[str]]:
        """The hosts of group ``name`` (of every group if None), by group name."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT name, host FROM host_groups WHERE ? IS NULL OR name = ? "
                "ORDER BY name, rowid",
                (name, name),
            ).fetchall()
        found: dict[str, list[str]] = {}
        for group, host in rows:
            found.setdefault(group, []).append(host)
        return found

    async def drop_group(self, name: str) -> bool:
        return await asyncio.to_thread(self._drop_group, check_group_name(name))

    def _drop_group(self, name: str) -> bool:
        with self._connect() as conn:
            return conn.execute("DELETE FROM host_groups WHERE name = ?", (name,)).rowcount > 0

    async def close(self) -> None:
        """Close the job store's connection (the registry's live for one operation)."""
        await super().close()


def _expires(instance: Instance) -> float:
    return instance.heartbeat + instance.ttl


def _text(instance: Instance) -> str:
    return encode_instance(instance).decode()


def _assemble(rows: list[Any], tags: list[Any], locations: list[Any]) -> list[DataRecord]:
    """Records from the rows of ``data`` and those of their tags and locations."""
    tags_of: dict[str, list[str]] = {}
    for key, tag in tags:
        tags_of.setdefault(key, []).append(tag)
    at: dict[str, list[Location]] = {}
    for key, protocol, host, port, path in locations:
        at.setdefault(key, []).append(Location(protocol=protocol, host=host, port=port, path=path))
    return [
        DataRecord(
            key=key,
            secret=secret,
            type_name=type_name,
            size=size,
            created=created,
            owner=owner,
            tags=tags_of.get(key, []),
            locations=at.get(key, []),
        )
        for key, secret, type_name, size, created, owner in rows
    ]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """One transaction; IMMEDIATE (the default) takes the write lock at once, so that what it
    reads cannot change before it writes."""
    conn.execute(begin)
    try:
        yield
    except BaseException:  # re-raised: a failed or cancelled write leaves nothing behind
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
