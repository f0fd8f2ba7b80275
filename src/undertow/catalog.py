"""The data catalog: what the cluster's data servers keep, found by tag, owner or type.

Services started with ``undertow serve`` (and ``undertow data``) record in the cluster
registry each value they keep (``return_pointer`` results, :func:`undertow.put` uploads)
and forget it when it is deleted::

    import undertow

    for record in undertow.catalog.find(tags=["raw"], owner="alice"):
        print(record.key, record.type_name, record.size, [l.url for l in record.locations])
        ptr = record.pointer()                  # use it: ptr[0:10], ptr.fetch(), ...

A server of your own records what it keeps once you :func:`attach` it. The catalog holds
each value's secret, so whoever can read the registry can use the values (with
authentication on, only as their owner or those they were shared with): protect the
registry as you protect your tokens (see docs/security.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from undertow.cluster import Registry
from undertow.data import DataRecord, catalog_listener, data_service
from undertow.rpc import Server

__all__ = ["attach", "find", "record"]


def find(
    *,
    tags: Sequence[str] = (),
    owner: str | None = None,
    type_name: str | None = None,
    backend: str | None = None,
) -> list[DataRecord]:
    """Values carrying every one of ``tags`` (and of this owner and type), oldest first.

    ``backend``: the registry URL (default: ``$UNDERTOW_BACKEND``, else the embedded file).
    """
    if isinstance(tags, str):
        tags = [tags]
    with Registry(backend) as registry:
        return registry.find_data(tags=tags, owner=owner, type_name=type_name)


def record(key: str, *, backend: str | None = None) -> DataRecord | None:
    """The catalog's record of ``key``, or None."""
    with Registry(backend) as registry:
        return registry.data_record(key)


def attach(server: Server, *, backend: str | None = None) -> None:
    """Record in the catalog what ``server`` keeps from now on, and forget what it deletes
    (services started with ``undertow serve`` do this already)."""
    registry = Registry(backend)
    data = data_service(server)
    data.listeners.append(catalog_listener(registry.record_data, registry.forget_data, data.forms))
