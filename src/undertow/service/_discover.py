"""Finding a running service by name and calling it: ``ServiceModule.discover(MemKeyValue)``."""

from __future__ import annotations

import itertools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from undertow._util import address_host, is_loopback
from undertow.cluster import Instance, Registry
from undertow.errors import (
    BackendError,
    ConfigError,
    ConnectionClosed,
    NotConnected,
    ServiceNotFound,
)
from undertow.rpc import CallOptions, Client, FunctionInfo, as_attributes, make_function, not_found
from undertow.rpc import connect as connect_address
from undertow.service._expose import service_name

__all__ = ["ServiceClient", "ServiceModule", "ServiceProxy", "connect", "find_instances"]

log = logging.getLogger(__name__)

#: seconds between looks at the registry while waiting for a service to come up
_FIRST_LOOK, _MAX_LOOK = 0.05, 0.5
_ADDRESS = re.compile(r"^[a-z]+://|^[^:/]+:\d+$")
#: how long a call waits for a connection to an instance before trying the next one
DEFAULT_CONNECT_WAIT = 0.5
#: how often a proxy looks for new instances (seconds), when it is being used
DEFAULT_REFRESH = 5.0
#: longest one registry operation of a proxy may take, in seconds
_REGISTRY_TIMEOUT = 5.0


class ServiceClient(Client):
    """A client of one service instance found through the registry: the core client plus
    the instance's registry record."""

    def __init__(self, instance: Instance, **options: Any) -> None:
        #: the registry record of the instance this client calls
        self.instance = instance
        if instance.curve_key:  # the key the service registered, unless the caller gave one
            options.setdefault("curve_server_key", instance.curve_key)
        super().__init__(instance.address, **options)

    def __repr__(self) -> str:
        return (
            f"<ServiceClient {self.instance.service!r} at {self.address} "
            f"(host {self.instance.host}, pid {self.instance.pid})>"
        )


def find_instances(name: str, registry: Registry, *, timeout: float) -> list[Instance]:
    """The live instances of service ``name``, waiting up to ``timeout`` seconds for one to
    appear; raises :class:`ServiceNotFound` naming the backend and what it holds."""
    deadline = time.monotonic() + timeout
    pause = _FIRST_LOOK
    elsewhere: list[Instance] = []
    while True:
        listed = registry.instances(name)
        found = reachable(listed)
        if found:
            return found
        elsewhere = listed
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(pause, left))  # the registry has nothing to wait on: look again
        pause = min(pause * 2, _MAX_LOOK)
    if elsewhere:
        raise ServiceNotFound(
            f"service {name!r} is registered in {registry.url} only at loopback addresses of "
            f"other hosts ({[(i.host, i.address) for i in elsewhere]}), which this machine "
            "cannot reach; serve it on another interface or with --advertise HOST"
        )
    held = sorted({i.service for i in registry.all_instances()})
    holds = f"it holds {held}" if held else "it holds no live service"
    raise ServiceNotFound(
        f"no live instance of service {name!r} in registry {registry.url} after waiting "
        f"{timeout:g} s ({holds}); start it with `python -m undertow.service FILE` or "
        "`undertow serve FILE`, or point UNDERTOW_BACKEND at the registry it uses"
    )


def reachable(instances: list[Instance]) -> list[Instance]:
    """The instances this machine can reach: a loopback address registered by another host
    names that host's own loopback, not ours."""
    here = socket.gethostname()
    return [i for i in instances if i.host == here or not is_loopback(address_host(i.address))]


class ServiceProxy:
    """A running service, found through the registry: its methods are attributes, with their
    signatures and docstrings, ``.submit()`` for futures and ``.options()`` for deadlines.

    Calls are spread over the service's live instances in turn. A call that cannot reach its
    instance (no connection within ``connect_wait``: nothing was sent) goes to the next one,
    and that instance is left out until it heartbeats again; a call whose instance dies
    while it runs raises :class:`~undertow.errors.ConnectionLost` (it may have run). New
    instances are picked up from the registry every ``refresh`` seconds while the proxy is
    used, and at once when none is left. Safe to use from many threads.
    """

    def __init__(
        self,
        name: str,
        registry: Registry,
        instances: list[Instance],
        *,
        connect_wait: float = DEFAULT_CONNECT_WAIT,
        refresh: float = DEFAULT_REFRESH,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.service = name
        self._registry = registry
        self._connect_wait = connect_wait
        self._refresh_every = refresh
        self._options = dict(client_options or {})
        self._lock = threading.Lock()
        self._clients: dict[str, ServiceClient] = {}
        self._live: list[Instance] = list(instances)
        #: id -> when it could not be reached: the registry lists a dead instance until its
        #: TTL runs out, so it is tried again only after a heartbeat newer than that
        self._unreachable: dict[str, float] = {}
        self._turn = itertools.count()  # next() is atomic under the GIL
        self._refresh_at = time.monotonic() + refresh
        self._closed = False
        self._functions: dict[str, Callable[..., Any]] = {}
        self._install(instances[0].methods)

    def _install(self, methods: Iterable[FunctionInfo]) -> None:
        self._functions = {
            info.name: make_function(info, self.service, self._invoke, self._submit)
            for info in methods
        }
        as_attributes(self, self._functions)

    # -- what users see ------------------------------------------------------------------------

    @property
    def instances(self) -> list[Instance]:
        """The live instances calls are spread over, oldest first."""
        return list(self._live)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Callable[..., Any]:
        fn = self._functions.get(name)
        if fn is None:
            raise not_found(name, f"service {self.service!r}", self._functions)
        return fn

    def __dir__(self) -> Iterable[str]:
        return sorted({*super().__dir__(), *self._functions})

    def __repr__(self) -> str:
        where = ", ".join(i.address for i in self._live) or "no live instance"
        return f"<ServiceProxy {self.service!r} [{where}]>"

    def connect(self) -> None:
        """Connect to an instance now rather than on the first call (bad client options and
        unreachable instances show up here); :class:`NotConnected` if none can be reached."""
        self._route(lambda client: None)

    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call method ``name``; the same as ``proxy.name(*args, **kwargs)``."""
        return self[name](*args, **kwargs)

    def close(self) -> None:
        """Close the connections to every instance."""
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        self._registry.close()

    def __enter__(self) -> ServiceProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- spreading and failing over ------------------------------------------------------------

    def _invoke(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        return self._route(lambda client: client._invoke(info, args, kwargs, opts))

    def _submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        return self._route(lambda client: client._submit(info, args, kwargs, opts))

    def _route(self, send: Callable[[ServiceClient], Any]) -> Any:
        if self._closed:
            raise ConnectionClosed(f"the proxy of service {self.service!r} is closed")
        if time.monotonic() >= self._refresh_at:
            self._refresh(quiet=True)
        live = self._live
        if len(live) == 1:  # the common case, kept short
            client = self._clients.get(live[0].id)
            if client is not None:
                try:
                    return send(client)
                except NotConnected:
                    self._drop(live[0])
        tried: list[str] = []
        for attempt in range(2):  # the instances known now, then those the registry lists
            for instance in self._in_turn():
                try:
                    return send(self._client(instance))
                except NotConnected:
                    tried.append(instance.address)
                    self._drop(instance)
            if attempt == 0:
                self._refresh(quiet=False)
        raise NotConnected(
            f"no instance of service {self.service!r} could be reached within "
            f"{self._connect_wait:g} s each (tried {sorted(set(tried)) or 'none'}; the registry "
            f"{self._registry.url} lists no other live one); the call was not sent"
        )

    def _in_turn(self) -> list[Instance]:
        live = self._live
        if not live:
            return []
        start = next(self._turn) % len(live)
        return live[start:] + live[:start]

    def _client(self, instance: Instance) -> ServiceClient:
        client = self._clients.get(instance.id)
        if client is None:
            options = {**self._options, "connect_wait": self._connect_wait}
            client = ServiceClient(instance, **options)  # raises NotConnected if it is gone
            with self._lock:
                closed = self._closed
                other = client if closed else self._clients.setdefault(instance.id, client)
            if closed:
                client.close()
                raise ConnectionClosed(f"the proxy of service {self.service!r} is closed")
            if other is not client:  # another thread made one meanwhile
                client.close()
                client = other
        return client

    def _drop(self, instance: Instance) -> None:
        """Stop sending to ``instance``, which could not be reached. Its client stays open:
        other threads may have calls running on it, and it reconnects by itself if the
        instance comes back (heartbeats newer than the drop)."""
        with self._lock:
            self._unreachable[instance.id] = time.time()
            self._live = [i for i in self._live if i.id != instance.id]

    def _refresh(self, *, quiet: bool) -> None:
        """Take the registry's list of live instances, leaving out those found unreachable
        since their last heartbeat. ``quiet``: a registry that cannot be read is logged and
        the current list kept (calls to live instances need no registry)."""
        self._refresh_at = time.monotonic() + self._refresh_every
        try:
            found = self._registry.instances(self.service)
        except BackendError as exc:
            if not quiet:
                raise
            log.warning("service %r: could not refresh its instances: %s", self.service, exc)
            return
        found = reachable(found)
        with self._lock:
            unreachable = self._unreachable
            for instance in found:
                dropped = unreachable.get(instance.id)
                if dropped is not None and instance.heartbeat > dropped:
                    del unreachable[instance.id]  # it has beaten since: worth trying again
            self._live = [i for i in found if i.id not in unreachable]


class ServiceModule:
    """Finds running services through the cluster registry."""

    @staticmethod
    def discover(
        service: type | str,
        *,
        timeout: float = 30.0,
        backend: str | None = None,
        connect_wait: float = DEFAULT_CONNECT_WAIT,
        refresh: float = DEFAULT_REFRESH,
        **options: Any,
    ) -> ServiceProxy:
        """A proxy to the running service ``service`` (its class or its name).

        Waits up to ``timeout`` seconds for the service to register. ``backend`` is the
        registry URL (default ``$UNDERTOW_BACKEND``, else the embedded file); ``connect_wait``
        and ``refresh`` tune failing over (see :class:`ServiceProxy`). Other keyword
        arguments go to each instance's client as in :func:`undertow.connect`, except that
        the calls' default deadline is ``call_timeout=``.
        """
        if "call_timeout" in options:
            options["timeout"] = options.pop("call_timeout")
        return _discover(service_name(service), timeout, backend, connect_wait, refresh, options)


def _discover(
    name: str,
    timeout: float,
    backend: str | None,
    connect_wait: float,
    refresh: float,
    client_options: dict[str, Any],
) -> ServiceProxy:
    registry = Registry(backend, timeout=_REGISTRY_TIMEOUT)
    try:
        instances = find_instances(name, registry, timeout=timeout)
        proxy = ServiceProxy(
            name,
            registry,
            instances,
            connect_wait=connect_wait,
            refresh=refresh,
            client_options=client_options,
        )
        proxy.connect()
    except BaseException:
        registry.close()
        raise
    return proxy


def connect(target: str, **options: Any) -> Any:
    """A client of ``target``: an address (``tcp://host:port``, ``host:port``) or the name of
    a service in the cluster registry (``undertow.connect("MemKeyValue")``).

    Keyword arguments are those of :class:`undertow.Client`; for a service name,
    ``discover_timeout`` (default 30 s) bounds the wait for it to register, ``backend``
    names the registry, and ``connect_wait`` and ``refresh`` are those of the proxy.
    """
    if _ADDRESS.match(target.lower()) or target.startswith("["):
        return connect_address(target, **options)
    if not target.isidentifier():
        raise ConfigError(
            f"{target!r} is neither an address (use tcp://host:port or host:port) nor a "
            "service name (a Python identifier, such as 'MemKeyValue')"
        )
    return _discover(
        target,
        options.pop("discover_timeout", 30.0),
        options.pop("backend", None),
        options.pop("connect_wait", DEFAULT_CONNECT_WAIT),
        options.pop("refresh", DEFAULT_REFRESH),
        options,
    )
