"""``undertow.put``: leave a local value on a data server, found by name through the registry."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from undertow.cluster import Registry
from undertow.data import Pointer
from undertow.data import put as put_at
from undertow.errors import ServiceNotFound
from undertow.service._discover import find_instances

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
    """A reachable instance of ``service``, this host's first."""
    with Registry(backend) as registry:
        try:
            instances = find_instances(service, registry, timeout=0)
        except ServiceNotFound as exc:
            raise ServiceNotFound(
                f"{exc}. For data: `undertow data serve` runs a data server, or give put() a "
                "client or an address with to=..."
            ) from None
    here = socket.gethostname()
    return min(instances, key=lambda i: i.host != here).address
