"""``undertow.put``: leave a local value on a data server, found by name through the registry;
with ``to_group=``, on every host of a host group (``ptr.replicate(group)`` copies a value
that is somewhere already)."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any, NamedTuple

from undertow._util import address_host
from undertow.cluster import Instance, Registry
from undertow.data import Pointer, plug_replication, replicate_to
from undertow.data import put as put_at
from undertow.errors import ConfigError, ServiceNotFound
from undertow.service._discover import find_instances, reachable

__all__ = ["put", "replicate"]

#: the service name data servers register under (``undertow data serve``)
DATA_SERVICE = "data"


def put(
    value: Any,
    *,
    tags: Iterable[str] = (),
    to: Any = None,
    to_group: str | None = None,
    timeout: float | None = None,
    backend: str | None = None,
) -> Pointer:
    """Leave ``value`` on a data server and return a :class:`~undertow.Pointer` to it.

    ``to``: a client, an address (``tcp://...``, ``http://...``) or the name of a service
    in the registry (default ``"data"``: the data server ``undertow data serve`` runs, on
    this host if one runs here). ``to_group``: instead, a host group (``undertow group add
    gpu node-1 node-2``): the value goes to the data server of one of its hosts (this one,
    if it is in the group), then a copy to each other host, under the same key and secret
    (see :meth:`Pointer.replicate <undertow.Pointer.replicate>`). Arrays travel out of band,
    without copies; values only pickle can carry need a token.
    """
    if to_group is not None:
        if to is not None:
            raise ConfigError(
                f"put() takes to={to!r} or to_group={to_group!r}, not both: to_group puts "
                "the value on every host of the group, to on one server"
            )
        return _put_to_group(value, to_group, tags, timeout, backend)
    if to is None:
        to = DATA_SERVICE
    if isinstance(to, str) and "://" not in to:
        to = _address_of(to, backend, timeout)
    return put_at(value, to=to, tags=tags, timeout=timeout)


def replicate(
    pointer: Pointer, group: str, *, timeout: float | None = None, backend: str | None = None
) -> list[Pointer]:
    """:meth:`Pointer.replicate`: copies of ``pointer``'s value on the group's hosts."""
    with _registry(backend, timeout) as registry:
        servers = _group_servers(group, registry, holder=pointer.address)
    return replicate_to(pointer, [(s.host, s.address) for s in servers], timeout)


plug_replication(replicate)


def _put_to_group(
    value: Any, group: str, tags: Iterable[str], timeout: float | None, backend: str | None
) -> Pointer:
    with _registry(backend, timeout) as registry:
        servers = _group_servers(group, registry)
    first = min(servers, key=lambda s: not s.here)  # this host's, if it is in the group
    pointer = put_at(value, to=first.address, tags=tags, timeout=timeout)
    replicate_to(pointer, [(s.host, s.address) for s in servers], timeout)
    return pointer


def _registry(backend: str | None, timeout: float | None) -> Registry:
    """The registry, each of its operations within ``timeout`` (None: its default)."""
    return Registry(backend) if timeout is None else Registry(backend, timeout=timeout)


def _address_of(service: str, backend: str | None, timeout: float | None = None) -> str:
    """A reachable instance of ``service``, this host's first."""
    with _registry(backend, timeout) as registry:
        try:
            instances = find_instances(service, registry, timeout=0)
        except ServiceNotFound as exc:
            raise ServiceNotFound(
                f"{exc}. For data: `undertow data serve` runs a data server, or give put() a "
                "client or an address with to=..."
            ) from None
    here = socket.gethostname()
    return min(instances, key=lambda i: i.host != here).address


class _Server(NamedTuple):
    """The data server chosen for one host of a group."""

    host: str
    address: str
    #: it runs on this machine
    here: bool


def _group_servers(group: str, registry: Registry, holder: str | None = None) -> list[_Server]:
    """A data server on each host of ``group`` (the one at ``holder``, if a host has it; else
    its oldest), each once; a clear error for an unknown group or a host without one."""
    hosts = registry.group(group)
    if hosts is None:
        groups = sorted(registry.groups())
        known = f"its groups: {', '.join(groups)}" if groups else "it has none"
        raise ConfigError(
            f"no host group {group!r} in registry {registry.url} ({known}); create it with "
            f"`undertow group add {group} HOST...`"
        )
    listed = registry.instances(DATA_SERVICE)
    live = reachable(listed)
    here = socket.gethostname()
    chosen: dict[str, _Server] = {}
    missing: list[str] = []
    for host in hosts:
        on_host = _on_host(host, live)
        if not on_host:
            missing.append(host)
            continue
        at = next((i for i in on_host if i.address == holder), on_host[0])
        chosen.setdefault(at.address, _Server(host, at.address, at.host == here))
    if missing:
        raise _no_data_server(group, missing, listed, registry.url)
    return list(chosen.values())


def _on_host(host: str, instances: list[Instance]) -> list[Instance]:
    """The instances on ``host``: those whose address names it (an advertised name, say),
    else those registered from a machine of that name; oldest first."""
    by_address = [i for i in instances if address_host(i.address) == host]
    return by_address or [i for i in instances if i.host == host]


def _no_data_server(
    group: str, missing: list[str], listed: list[Instance], url: str
) -> ServiceNotFound:
    names = ", ".join(repr(h) for h in missing)
    unreachable = [h for h in missing if _on_host(h, listed)]
    why = (
        f"; {', '.join(map(repr, unreachable))} registered one only at a loopback address, "
        "which this machine cannot reach: serve it with --host or --advertise"
        if unreachable
        else ""
    )
    elsewhere = sorted({address_host(i.address) for i in listed} | {i.host for i in listed})
    running = f"data servers run on {', '.join(elsewhere)}" if elsewhere else "none runs"
    hosts = f"host {names} of group {group!r} has" if len(missing) == 1 else f"hosts {names} "
    hosts += "" if len(missing) == 1 else f"of group {group!r} have"
    return ServiceNotFound(
        f"{hosts} no data server in registry {url} ({running}"
        f"{why}); run `undertow data serve --backend {url}` there (a data server is on a "
        "host when its registered host name, or the host of its address, is the group's "
        "name for it)"
    )
