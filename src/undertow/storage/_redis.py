"""The backend for several machines: a Redis server (``redis://host:port/db``).

Records expire in Redis itself (``PX`` on every write), so a dead instance disappears on the
server's clock and no client clock matters. Key names are in :mod:`undertow.storage._keys`.

A data record is several keys (its fields, its locations, its tags, the tag index). Writes to
them are optimistic transactions: WATCH the record's keys, read them, then MULTI/EXEC the
writes; EXEC fails, and the whole step is tried again, if another client changed the record in
between. So concurrent merges into one record never lose a location.

Host groups are in storage/_redis_groups.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from undertow.config import redact_url
from undertow.data import DataRecord, Location, is_data_key
from undertow.errors import BackendError, BrokerUnavailable
from undertow.storage import _keys as keys
from undertow.storage._backend import Backend, by_age, by_creation
from undertow.storage._jobs import check_worker_name
from undertow.storage._records import Instance, encode_instance, readable
from undertow.storage._redis_groups import RedisGroups
from undertow.storage._redis_jobs import RedisJobs
from undertow.storage._redis_sync import RedisInbox

__all__ = ["RedisBackend"]

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError, WatchError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError:  # pragma: no cover - exercised only without the extra installed
    aioredis = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: times an optimistic transaction is tried while other clients keep changing its keys
_TRIES = 100


class _Fields(msgspec.Struct, frozen=True, kw_only=True):
    """What ``undertow:data:{key}`` holds: a record without its tags and locations."""

    key: str
    secret: str
    type_name: str
    size: int
    created: float
    owner: str


class _Listed(Location, frozen=True, kw_only=True):
    """A location as ``undertow:data:{key}:locations`` lists it: with the object's size, so
    that whoever reads a location knows how much it would fetch."""

    size: int


_encoder = msgspec.json.Encoder()
_fields_decoder = msgspec.json.Decoder(_Fields)
_listed_decoder = msgspec.json.Decoder(_Listed)


class RedisBackend(RedisJobs, RedisGroups, Backend):
    """Cluster state in Redis.

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``rediss://`` for TLS).
        timeout: seconds to wait for a connection or an answer.
    """

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if aioredis is None:
            raise BackendError(
                f"backend {redact_url(url)} needs the Redis client; "
                "install it with: pip install 'undertow[redis]'"
            )
        self.url = redact_url(url)
        self._secret_url, self._timeout = url, timeout
        self._redis: Any = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url}>"

    def inbox(self, worker: str) -> RedisInbox:
        return RedisInbox(self._secret_url, check_worker_name(worker), timeout=self._timeout)

    def _failed(self, exc: Exception) -> BackendError:
        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            return BrokerUnavailable(f"{self.url} is unreachable: {exc}")
        return BackendError(f"registry {self.url}: {exc}")

    async def register(self, instance: Instance) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(
                    keys.instance(instance.id), encode_instance(instance), px=_ttl_ms(instance)
                )
                pipe.sadd(keys.service_instances(instance.service), instance.id)
                pipe.sadd(keys.SERVICES, instance.service)
                await pipe.execute()
        except RedisError as exc:
            raise self._failed(exc) from exc

    async def heartbeat(self, instance: Instance) -> bool:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                # XX: only while the record exists; an expired one is registered again
                record = encode_instance(instance)
                pipe.set(keys.instance(instance.id), record, px=_ttl_ms(instance), xx=True)
                # both sets again: a lookup that saw the record just expire may have removed
                # the id meanwhile (an id without its record is removed by the next lookup)
                pipe.sadd(keys.service_instances(instance.service), instance.id)
                pipe.sadd(keys.SERVICES, instance.service)
                renewed, _, _ = await pipe.execute()
        except RedisError as exc:
            raise self._failed(exc) from exc
        return bool(renewed)

    async def deregister(self, service: str, instance_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.instance(instance_id))
                pipe.srem(keys.service_instances(service), instance_id)
                await pipe.execute()
        except RedisError as exc:
            raise self._failed(exc) from exc

    async def instances(self, service: str) -> list[Instance]:
        try:
            return by_age(await self._live(service))
        except RedisError as exc:
            raise self._failed(exc) from exc

    async def all_instances(self) -> list[Instance]:
        try:
            names = sorted(n.decode() for n in await self._redis.smembers(keys.SERVICES))
            found: list[Instance] = []
            for name in names:
                found += await self._live(name)
            return by_age(found)
        except RedisError as exc:
            raise self._failed(exc) from exc

    async def _live(self, service: str) -> list[Instance]:
        ids = sorted(
            i.decode() for i in await self._redis.smembers(keys.service_instances(service))
        )
        if not ids:
            return []
        records = await self._redis.mget([keys.instance(i) for i in ids])
        dead = [i for i, record in zip(ids, records, strict=True) if record is None]
        if dead:  # expired without deregistering: forget them
            await self._redis.srem(keys.service_instances(service), *dead)
        return [
            found
            for i, record in zip(ids, records, strict=True)
            if record is not None and (found := readable(record, i, self.url)) is not None
        ]

    # -- the data catalog --------------------------------------------------------------------

    async def record_data(self, record: DataRecord) -> None:
        async def merge(pipe: Any) -> bool:
            key = record.key
            head = await pipe.get(keys.data(key))
            listed = await pipe.lrange(keys.data_locations(key), 0, -1)
            kept = None if head is None else self._fields(key, head)
            size = record.size if kept is None else kept.size
            known = {self._location(key, raw) for raw in listed}
            new = [loc for loc in dict.fromkeys(record.locations) if loc not in known]
            pipe.multi()
            if kept is None:  # new (or unreadable, and replaced)
                pipe.set(keys.data(key), _encoder.encode(_fields_of(record)))
            if new:
                pipe.rpush(keys.data_locations(key), *[_listed(loc, size) for loc in new])
            if record.tags:
                pipe.sadd(keys.data_tags(key), *record.tags)
            for tag in set(record.tags):
                pipe.sadd(keys.tag(tag), key)
            pipe.sadd(keys.DATA, key)
            return True

        await self._optimistic(record.key, merge)

    async def forget_data(self, key: str, location: Location | None = None) -> None:
        if not is_data_key(key):  # unknown, and it must not name other keys
            return

        async def forget(pipe: Any) -> bool:
            listed = await pipe.lrange(keys.data_locations(key), 0, -1)
            if location is not None:
                gone = {raw for raw in listed if self._location(key, raw) == location}
                if not gone and listed:
                    return False  # an unknown location: the record stays as it is
                if len(gone) < len(listed):
                    pipe.multi()
                    for raw in gone:
                        pipe.lrem(keys.data_locations(key), 0, raw)
                    return True
            tags = await pipe.smembers(keys.data_tags(key))
            pipe.multi()
            pipe.delete(keys.data(key), keys.data_locations(key), keys.data_tags(key))
            pipe.srem(keys.DATA, key)
            for tag in tags:
                pipe.srem(keys.tag(tag.decode()), key)
            return True

        await self._optimistic(key, forget)

    async def _optimistic(self, key: str, step: Callable[[Any], Awaitable[bool]]) -> None:
        """Run ``step`` as an optimistic transaction over the keys of record ``key``.

        ``step`` reads (the pipeline executes at once while watching), then calls ``multi()``,
        queues its writes and returns True; or returns False to write nothing.
        """
        watched = (keys.data(key), keys.data_locations(key), keys.data_tags(key))
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for _ in range(_TRIES):
                    try:
                        await pipe.watch(*watched)
                        if await step(pipe):
                            await pipe.execute()
                        return
                    except WatchError:  # changed meanwhile: read it again
                        continue
        except RedisError as exc:
            raise self._failed(exc) from exc
        raise BackendError(
            f"registry {self.url}: data record {key!r} changed under every one of {_TRIES} "
            "tries to write it; too many clients write it at once"
        )

    async def data_record(self, key: str) -> DataRecord | None:
        if not is_data_key(key):
            return None
        try:
            found = await self._data([key])
        except RedisError as exc:
            raise self._failed(exc) from exc
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
        wanted = sorted(set(tags))
        try:
            if wanted:
                raw = await self._redis.sinter([keys.tag(tag) for tag in wanted])
            else:
                raw = await self._redis.smembers(keys.DATA)
            if limit is None and after is None:
                found = await self._data(sorted(k.decode() for k in raw))
            else:  # the heads alone choose the page; only its records are read whole
                heads = await self._heads(sorted(k.decode() for k in raw))
                chosen = _page(heads, owner, type_name, (after, newest_first, limit))
                found = await self._data(chosen)
        except RedisError as exc:
            raise self._failed(exc) from exc
        listed = by_creation(
            [
                record
                for record in found
                if (owner is None or record.owner == owner)
                and (type_name is None or record.type_name == type_name)
            ]
        )
        return listed[::-1] if newest_first else listed

    async def _heads(self, ids: list[str]) -> dict[str, _Fields]:
        """The fields of the records of ``ids`` without their tags and locations (a page
        of the catalog is chosen by them; Redis keeps no index by creation time)."""
        ids = [key for key in ids if is_data_key(key)]
        if not ids:
            return {}
        heads = await self._redis.mget([keys.data(key) for key in ids])
        read = {key: self._fields(key, head) for key, head in zip(ids, heads, strict=True) if head}
        return {key: fields for key, fields in read.items() if fields is not None}

    async def _data(self, ids: list[str]) -> list[DataRecord]:
        """The records of ``ids``, read in one transaction; missing ones are left out."""
        ids = [key for key in ids if is_data_key(key)]
        if not ids:
            return []
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in ids:
                pipe.get(keys.data(key))
                pipe.lrange(keys.data_locations(key), 0, -1)
                pipe.smembers(keys.data_tags(key))
            replies = await pipe.execute()
        found: list[DataRecord] = []
        for key, head, listed, tags in zip(
            ids, replies[0::3], replies[1::3], replies[2::3], strict=True
        ):
            fields = None if head is None else self._fields(key, head)
            if fields is None:  # forgotten meanwhile, or unreadable (logged)
                continue
            locations = [self._location(key, raw) for raw in listed]
            found.append(
                DataRecord(
                    key=key,  # the one looked up, whatever the JSON says
                    secret=fields.secret,
                    type_name=fields.type_name,
                    size=fields.size,
                    created=fields.created,
                    owner=fields.owner,
                    tags=sorted(tag.decode() for tag in tags),
                    locations=[loc for loc in locations if loc is not None],  # readable ones
                )
            )
        return found

    def _fields(self, key: str, raw: bytes) -> _Fields | None:
        try:
            return _fields_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("registry %s: data record %s is unreadable: %s", self.url, key, exc)
            return None

    def _location(self, key: str, raw: bytes) -> Location | None:
        try:
            listed = _listed_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning(
                "registry %s: a location of data record %s is unreadable: %s", self.url, key, exc
            )
            return None
        return Location(
            protocol=listed.protocol, host=listed.host, port=listed.port, path=listed.path
        )

    async def close(self) -> None:
        await self._redis.aclose()


def _ttl_ms(instance: Instance) -> int:
    return max(1, math.ceil(instance.ttl * 1000))


def _fields_of(record: DataRecord) -> _Fields:
    return _Fields(
        key=record.key,
        secret=record.secret,
        type_name=record.type_name,
        size=record.size,
        created=record.created,
        owner=record.owner,
    )


def _listed(location: Location, size: int) -> bytes:
    return _encoder.encode(
        _Listed(
            protocol=location.protocol,
            host=location.host,
            port=location.port,
            path=location.path,
            size=size,
        )
    )


def _page(
    heads: dict[str, _Fields],
    owner: str | None,
    type_name: str | None,
    page: tuple[str | None, bool, int | None],
) -> list[str]:
    """The keys of a page of the catalog, chosen among ``heads``: ``page`` is (the key
    before the page, newest first?, the page's size or None)."""
    after, newest_first, limit = page
    order = sorted(
        (
            (fields.created, key)
            for key, fields in heads.items()
            if (owner is None or fields.owner == owner)
            and (type_name is None or fields.type_name == type_name)
        ),
        reverse=newest_first,
    )
    if after is not None:
        if after not in heads:
            raise LookupError(
                f"data record {after!r} is not in the catalog (forgotten?): it cannot mark "
                "where a page starts; ask for the first page again (after=None)"
            )
        mark = (heads[after].created, after)
        order = [item for item in order if (item < mark if newest_first else item > mark)]
    return [key for _, key in order[: None if limit is None else max(limit, 0)]]
