"""Host groups on Redis: the group operations of :class:`RedisBackend`.

A group is a sorted set of its hosts (``undertow:group:{name}``), each scored by the order it
was added in, plus its name in ``undertow:groups``. Redis deletes a sorted set with its last
member, and every operation keeps the name set in step in the same step: replacing and
dropping a group are MULTI/EXEC transactions; adding and removing hosts need to read the set
first (the highest score, whether the group exists), so they are Lua scripts. Either way each
operation is atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from undertow.storage import _keys as keys
from undertow.storage._backend import check_group_name, check_hosts

if TYPE_CHECKING:
    from undertow.errors import BackendError

try:
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - RedisBackend refuses to start without the client
    RedisError = OSError  # type: ignore[misc,assignment]

__all__ = ["RedisGroups"]

# KEYS: the group's set, the set of group names; ARGV: the group's name, then the hosts (no
# duplicates). New hosts go after the last one; a host the group has keeps its score.
_ADD = """
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local score = 0
if last[2] then score = tonumber(last[2]) + 1 end
for i = 2, #ARGV do
    score = score + redis.call('ZADD', KEYS[1], 'NX', score, ARGV[i])
end
redis.call('SADD', KEYS[2], ARGV[1])
"""

# Same KEYS and ARGV; 0 if there is no such group. The set goes with its last member (Redis
# deletes an empty sorted set), and then the name goes too.
_REMOVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], ARGV[1])
    return 0
end
for i = 2, #ARGV do
    redis.call('ZREM', KEYS[1], ARGV[i])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
"""


class RedisGroups:
    """The host groups over ``self._redis`` (a mixin of :class:`RedisBackend`)."""

    _redis: Any

    if TYPE_CHECKING:

        def _failed(self, exc: Exception) -> BackendError: ...

    def _group_script(self, which: str) -> Any:
        """The script ``which`` ("add" or "remove"), registered with this backend's client on
        first use."""
        attribute = f"_group_{which}"
        script = self.__dict__.get(attribute)
        if script is None:
            source = _ADD if which == "add" else _REMOVE
            script = self.__dict__[attribute] = self._redis.register_script(source)
        return script

    async def set_group(self, name: str, hosts: Sequence[str]) -> None:
        check_group_name(name)
        wanted = check_hosts(hosts)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.group(name))
                pipe.zadd(keys.group(name), {host: i for i, host in enumerate(wanted)})
                pipe.sadd(keys.GROUPS, name)
                await pipe.execute()
        except RedisError as exc:
            raise self._failed(exc) from exc

    async def add_to_group(self, name: str, hosts: Sequence[str]) -> None:
        check_group_name(name)
        await self._group_step("add", name, check_hosts(hosts))

    async def remove_from_group(self, name: str, hosts: Sequence[str]) -> bool:
        check_group_name(name)
        return bool(await self._group_step("remove", name, check_hosts(hosts)))

    async def _group_step(self, which: str, name: str, hosts: list[str]) -> Any:
        try:
            return await self._group_script(which)(
                keys=[keys.group(name), keys.GROUPS], args=[name, *hosts]
            )
        except RedisError as exc:
            raise self._failed(exc) from exc

    async def group(self, name: str) -> list[str] | None:
        try:
            hosts = await self._redis.zrange(keys.group(check_group_name(name)), 0, -1)
        except RedisError as exc:
            raise self._failed(exc) from exc
        return [host.decode() for host in hosts] or None

    async def groups(self) -> dict[str, list[str]]:
        try:
            names = sorted(n.decode() for n in await self._redis.smembers(keys.GROUPS))
            if not names:
                return {}
            async with self._redis.pipeline(transaction=True) as pipe:
                for name in names:
                    pipe.zrange(keys.group(name), 0, -1)
                replies = await pipe.execute()
        except RedisError as exc:
            raise self._failed(exc) from exc
        # a group dropped between the two reads has no hosts left: it is left out
        return {
            name: [host.decode() for host in hosts]
            for name, hosts in zip(names, replies, strict=True)
            if hosts
        }

    async def drop_group(self, name: str) -> bool:
        check_group_name(name)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.group(name))
                pipe.srem(keys.GROUPS, name)
                deleted, _ = await pipe.execute()
        except RedisError as exc:
            raise self._failed(exc) from exc
        return bool(deleted)
