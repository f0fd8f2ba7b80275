"""The cluster registry: which services run where and which data objects are kept where, in
SQLite (embedded) or Redis (see :mod:`undertow.storage`).

::

    from undertow.cluster import Registry

    with Registry() as registry:                 # $UNDERTOW_BACKEND, else ~/.undertow/cluster.db
        for instance in registry.all_instances():
            print(instance.service, instance.address, instance.host, instance.pid)
        for record in registry.find_data(tags=["raw", "2024"]):   # the data catalog
            print(record.key, record.type_name, [loc.url for loc in record.locations])

Async code (a service's own heartbeat) uses a :class:`Backend` from :func:`open_backend`.
"""

from undertow.cluster._registry import Registry
from undertow.data import DataRecord, Location, catalog_listener
from undertow.storage import Backend, Instance, open_backend

__all__ = [
    "Backend",
    "DataRecord",
    "Instance",
    "Location",
    "Registry",
    "catalog_listener",
    "open_backend",
]
