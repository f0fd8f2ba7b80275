"""Finding a running service by name and calling it: ``ServiceModule.discover(MemKeyValue)``."""

from __future__ import annotations

import re
import time
from typing import Any

from undertow.cluster import Instance, Registry
from undertow.errors import ServiceNotFound
from undertow.rpc import Client
from undertow.rpc import connect as connect_address
from undertow.service._expose import service_name

__all__ = ["ServiceClient", "ServiceModule", "connect", "find_instances"]

#: seconds between looks at the registry while waiting for a service to come up
_FIRST_LOOK, _MAX_LOOK = 0.05, 0.5
_ADDRESS = re.compile(r"^[a-z]+://|^[^:/]+:\d+$")


class ServiceClient(Client):
    """A client of a service instance found through the registry: the core client (remote
    methods as attributes with their signatures and docstrings, futures, deadlines, live
    output) plus what the registry said about the instance."""

    def __init__(self, instance: Instance, **options: Any) -> None:
        #: the registry record of the instance this client calls
        self.instance = instance
        super().__init__(instance.address, **options)

    def __repr__(self) -> str:
        return (
            f"<ServiceClient {self.instance.service!r} at {self.address} "
            f"(host {self.instance.host}, pid {self.instance.pid})>"
        )


def find_instances(
    name: str, *, timeout: float, backend: str | None = None
) -> tuple[list[Instance], Registry]:
    """The live instances of service ``name``, waiting up to ``timeout`` seconds for one to
    appear; raises :class:`ServiceNotFound` naming the backend and what it holds."""
    registry = Registry(backend, timeout=max(timeout, 1.0))
    deadline = time.monotonic() + timeout
    pause = _FIRST_LOOK
    while True:
        found = registry.instances(name)
        if found:
            return found, registry
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(pause, left))  # the registry has nothing to wait on: look again
        pause = min(pause * 2, _MAX_LOOK)
    held = sorted({i.service for i in registry.all_instances()})
    registry.close()
    holds = f"it holds {held}" if held else "it holds no live service"
    raise ServiceNotFound(
        f"no live instance of service {name!r} in registry {registry.url} after waiting "
        f"{timeout:g} s ({holds}); start it with `python -m undertow.service FILE` or "
        "`undertow serve FILE`, or point UNDERTOW_BACKEND at the registry it uses"
    )


class ServiceModule:
    """Finds running services through the cluster registry."""

    @staticmethod
    def discover(
        service: type | str,
        *,
        timeout: float = 30.0,
        backend: str | None = None,
        **options: Any,
    ) -> ServiceClient:
        """A client of the running service ``service`` (its class or its name).

        Waits up to ``timeout`` seconds for the service to register. ``backend`` is the
        registry URL (default ``$UNDERTOW_BACKEND``, else the embedded file); other keyword
        arguments go to the client as in :func:`undertow.connect` (``timeout`` there is
        the calls' default deadline: pass ``call_timeout=``).
        """
        name = service_name(service)
        instances, registry = find_instances(name, timeout=timeout, backend=backend)
        registry.close()
        instance = instances[0]  # the oldest: the one most likely to keep running
        call_timeout = options.pop("call_timeout", None)
        if call_timeout is not None:
            options["timeout"] = call_timeout
        return ServiceClient(instance, **options)


def connect(target: str, **options: Any) -> Client:
    """A client of ``target``: an address (``tcp://host:port``, ``host:port``) or the name of
    a service in the cluster registry (``undertow.connect("MemKeyValue")``).

    Keyword arguments are those of :class:`undertow.Client`; for a service name,
    ``discover_timeout`` (default 30 s) bounds the wait for it to register and ``backend``
    names the registry.
    """
    if _ADDRESS.match(target):
        return connect_address(target, **options)
    discover_timeout = options.pop("discover_timeout", 30.0)
    backend = options.pop("backend", None)
    if "timeout" in options:
        options["call_timeout"] = options.pop("timeout")
    return ServiceModule.discover(target, timeout=discover_timeout, backend=backend, **options)
