"""The cluster registry: which services run where, in SQLite (embedded) or Redis.

::

    from undertow.cluster import Registry

    with Registry() as registry:                 # $UNDERTOW_BACKEND, else ~/.undertow/cluster.db
        for instance in registry.all_instances():
            print(instance.service, instance.address, instance.host, instance.pid)

Async code (a service's own heartbeat) uses a :class:`Backend` from :func:`open_backend`.
"""

from undertow.cluster._backend import Backend, open_backend
from undertow.cluster._records import Instance
from undertow.cluster._registry import Registry

__all__ = ["Backend", "Instance", "Registry", "open_backend"]
