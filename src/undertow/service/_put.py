"""``undertow.put``: leave a local value on a data server, found by name through the registry."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from undertow.cluster import Registry
from undertow.errors import ServiceNotFound
from undertow.rpc._pointer import Pointer
from undertow.rpc._pointer import put as put_at

__all__ = ["put"]


def put(
    value: Any,
    *,
    tags: Iterable[str] = (),
    to: Any = "data",
    timeout: float | None = None,
    backend: str | None = None,
) -> Pointer:
    """Leave ``value`` on a data server and return a :class:`~undertow.Pointer` to it.

    ``to``: a client, an address (``tcp://...``, ``http://...``) or the name of a service
    in the registry (default ``"data"``: the data server ``undertow data serve`` runs, on
    this host if one runs here). Arrays travel out of band, without copies; values only
    pickle can carry need a token.
    """
    if isinstance(to, str) and "://" not in to:
        to = _address_of(to, backend)
    return put_at(value, to=to, tags=tags, timeout=timeout)


def _address_of(service: str, backend: str | None) -> str:
    with Registry(backend) as registry:
        instances = registry.instances(service)
        url = registry.url
    if not instances:
        raise ServiceNotFound(
            f"no data server {service!r} is registered in {url}: start one with "
            "`undertow data serve`, or give put() a client or an address with to=..."
        )
    here = socket.gethostname()
    local = [i for i in instances if i.host == here]
    return (local or instances)[0].address
