"""The backend for several machines: a Redis server (``redis://host:port/db``).

Records expire in Redis itself (``PX`` on every write), so a dead instance disappears on the
server's clock and no client clock matters. Key names are in :mod:`undertow.cluster._keys`.
"""

from __future__ import annotations

import math
from typing import Any

from undertow.cluster import _keys as keys
from undertow.cluster._backend import Backend, by_age
from undertow.cluster._records import Instance, encode_instance, readable
from undertow.config import redact_url
from undertow.errors import BackendError

__all__ = ["RedisBackend"]

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - exercised only without the extra installed
    aioredis = None  # type: ignore[assignment]


class RedisBackend(Backend):
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
        self._redis: Any = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url}>"

    def _failed(self, exc: Exception) -> BackendError:
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

    async def close(self) -> None:
        await self._redis.aclose()


def _ttl_ms(instance: Instance) -> int:
    return max(1, math.ceil(instance.ttl * 1000))
