"""The cluster registry: which services run where and which data objects are kept where, in
SQLite (embedded) or Redis.

::

    from undertow.cluster import Registry

    with Registry() as registry:                 # $UNDERTOW_BACKEND, else ~/.undertow/cluster.db
        for instance in registry.all_instances():
            print(instance.service, instance.address, instance.host, instance.pid)
        for record in registry.find_data(tags=["raw", "2024"]):   # the data catalog
            print(record.key, record.type_name, [loc.url for loc in record.locations])

Async code (a service's own heartbeat) uses a :class:`Backend` from :func:`open_backend`.
"""

from undertow.cluster._backend import Backend, open_backend
from undertow.cluster._catalog import catalog_listener
from undertow.cluster._records import DataRecord, Instance, Location
from undertow.cluster._registry import Registry

__all__ = [
    "Backend",
    "DataRecord",
    "Instance",
    "Location",
    "Registry",
    "catalog_listener",
    "open_backend",
]
