"""Copies of a value on several data servers: one key, one secret, several locations.

A data server asked ``_data_copy(form, timeout)`` keeps a copy of the value the pointer
``form`` names, fetched straight from the server that holds it, under the same key and
secret and with the same owner, tags and sharing; its catalog listener then records the new
location, so the catalog's record of the key lists every copy. A server that holds the key
already changes nothing and answers its own pointer at once.

:func:`replicate_to` asks several servers at once and returns their pointers;
:meth:`Pointer.replicate <undertow.Pointer.replicate>` and ``undertow.put(to_group=...)``
find the servers of a host group in the registry (the service layer does that part: the
registry sits above this package) and call it.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any

from undertow.data._pointer import DEFAULT_TIMEOUT, Pointer, ask, client_for, is_sync_client
from undertow.data._store import DataStore, Entry
from undertow.errors import ConfigError, RPCTimeout

__all__ = ["copy_here", "copy_to", "described", "replicate_to"]

#: copies made at once by one replicate_to()
_AT_ONCE = 8


# -- the server's side -------------------------------------------------------------------------


def described(entry: Entry) -> dict[str, Any]:
    """What ``_data_describe`` tells a server that copies ``entry`` (never the secret)."""
    return entry.public()


def copy_here(
    store: DataStore,
    source: Pointer,
    *,
    peer: Any,
    allow: Callable[[Entry], None],
    fetch: Callable[[], Any],
    timeout: float,
) -> tuple[Entry, bool]:
    """Keep in ``store`` a copy of the value ``source`` points to: its description asked of
    its server through ``peer``, checked by ``allow`` (which raises if the caller may not
    use it), then the value from ``fetch``. The entry, and whether it is new."""
    secret = str(source.to_json()["secret_key"])
    about = ask(peer, "_data_describe", (source.key, secret), timeout)
    if not isinstance(about, dict) or about.get("key") != source.key:
        raise ConfigError(
            f"the server at {source.address} described object {source.key!r} as "
            f"{about!r:.120}, not as a data entry; is it an undertow data server?"
        )
    owner, tags, shared = about.get("owner"), about.get("tags"), about.get("shared")
    if not isinstance(owner, str) or not isinstance(tags, list) or not isinstance(shared, list):
        raise ConfigError(f"the description of object {source.key!r} lacks its owner or tags")
    wanted = Entry(
        key=source.key,
        secret=secret,
        size=source.nbytes,
        type_name=source.type_name,
        created=0.0,
        owner=owner,
        shared=tuple(shared),
    )
    allow(wanted)  # before the value travels
    value = fetch()
    return store.adopt(
        value,
        key=source.key,
        secret=secret,
        owner=owner,
        tags=tags,
        shared=shared,
        created=about.get("created"),
    )


# -- the caller's side -------------------------------------------------------------------------


def copy_to(pointer: Pointer, to: Any, timeout: float | None = None) -> Pointer:
    """A copy of ``pointer``'s value on the data server ``to`` (a client, or an address),
    which fetches it straight from the server that holds it; nothing is copied if it holds
    the key already. Its pointer: the same key and secret, at ``to``."""
    wait = timeout or DEFAULT_TIMEOUT
    client = to if is_sync_client(to) else client_for(str(to))
    copy: Pointer = ask(client, "_data_copy", (pointer.to_json(), wait), wait)
    return copy


def replicate_to(
    pointer: Pointer, servers: Sequence[tuple[str, str]], timeout: float | None = None
) -> list[Pointer]:
    """Copies of ``pointer``'s value on ``servers`` (``(host, address)`` pairs), asked at
    once; their pointers in the order of ``servers`` (``pointer`` itself for the server it
    names). A copy that fails or misses ``timeout`` raises once the others are done; the
    copies made stay, and asking again skips them."""
    wait = timeout or DEFAULT_TIMEOUT

    def one(server: tuple[str, str]) -> Pointer:
        host, address = server
        if address == pointer.address:
            return pointer
        try:
            return copy_to(pointer, address, wait)
        except RPCTimeout as exc:
            raise RPCTimeout(
                f"copying object {pointer.key} ({pointer.nbytes:,} bytes) to host {host!r} "
                f"({address}) took over {wait:g} s; the copies done stay, and replicating "
                "again skips them: give a longer timeout=..."
            ) from exc

    if len(servers) < 2:
        return [one(server) for server in servers]
    workers = min(len(servers), _AT_ONCE)
    with concurrent.futures.ThreadPoolExecutor(workers, "undertow-replicate") as pool:
        copies = [pool.submit(one, server) for server in servers]
        concurrent.futures.wait(copies)
    return [copy.result() for copy in copies]
