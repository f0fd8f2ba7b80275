"""Stateful services from decorated classes, launched from a module, found by name.

::

    # memkv.py
    from undertow.service import Expose, ServiceModule

    @Expose()
    class MemKeyValue:
        def __init__(self):
            self.store = {}

        @Expose()
        def put(self, key, value):
            self.store[key] = value

        @Expose()
        def size(self):
            return len(self.store)

    if __name__ == "__main__":                    # a client, when run as a script
        kv = ServiceModule.discover(MemKeyValue)
        kv.put(key=1, value=2)

``python -m undertow.service memkv.py`` (or ``undertow serve memkv.py``) imports the file as
a module, makes one instance of each exposed class, serves each on a port of its own and
registers it in the cluster registry; ``python memkv.py`` then finds it by name.
"""

from undertow.service._discover import ServiceClient, ServiceModule, ServiceProxy, connect
from undertow.service._expose import Expose
from undertow.service._host import ServiceHost, build_server
from undertow.service._launch import LaunchError, collect, launch, load, services_in
from undertow.service._put import put

__all__ = [
    "Expose",
    "LaunchError",
    "ServiceClient",
    "ServiceHost",
    "ServiceModule",
    "ServiceProxy",
    "build_server",
    "collect",
    "connect",
    "launch",
    "load",
    "put",
    "services_in",
]
