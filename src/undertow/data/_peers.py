"""A value held by another data server, fetched from its owner server to server (never
through the caller), failing at once when the owner cannot be reached.

The connection to an owner is made with ``connect_wait``: a call is sent only over an
established connection, waiting at most :data:`OWNER_WAIT` seconds for one, and a connection
that drops fails the fetch at once. So a call that needs a value whose server was killed, or
whose host is cut off, fails within a few seconds with :class:`DataUnavailable` naming the key
and the server, instead of waiting out its whole deadline.
"""

from __future__ import annotations

import threading
from typing import Any

from undertow.data._pointer import ask
from undertow.errors import ConnectError, ConnectionLost, DataUnavailable, RPCTimeout
from undertow.rpc import connect

__all__ = ["OWNER_WAIT", "fetch_from_owner"]

#: seconds a data server waits for a connection to a value's owner before giving up on it
OWNER_WAIT = 2.0

_owners: dict[str, Any] = {}
_lock = threading.Lock()


def _owner(address: str, token: str | bool | None) -> Any:
    with _lock:
        client = _owners.get(address)
    if client is not None and not client.closed:
        return client
    made = connect(
        address, token=token, output=False, connect_wait=OWNER_WAIT, connect_timeout=OWNER_WAIT
    )
    with _lock:  # (made outside the lock: connecting may take OWNER_WAIT)
        kept = _owners.get(address)
        if kept is None or kept.closed:
            _owners[address] = kept = made
    if kept is not made:  # another thread connected meanwhile: one client an owner
        made.close()
    return kept


def _forget(address: str) -> None:
    with _lock:
        client = _owners.pop(address, None)
    if client is not None:
        client.close()


def fetch_from_owner(
    address: str, key: str, secret: str, token: str | bool | None, timeout: float
) -> Any:
    """The value ``key`` held by the data server at ``address`` (whose ``secret`` the caller
    gave), or :class:`DataUnavailable` if that server cannot be reached."""
    try:
        return ask(_owner(address, token), "_data_fetch", (key, secret), timeout)
    except (ConnectError, ConnectionLost, RPCTimeout) as exc:
        if isinstance(exc, RPCTimeout) and address in _owners:  # connected: a slow value
            raise
        _forget(address)  # a restarted owner is reached afresh
        raise DataUnavailable(
            f"value {key!r} is held by the data server at {address}, which cannot be reached "
            f"({type(exc).__name__}: no connection within {OWNER_WAIT:g} s, or it dropped): "
            "it stopped or its host is cut off; start it again, or put the value again",
            key=key,
            address=address,
        ) from exc
