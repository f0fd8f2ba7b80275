"""Where a job goes: to the central queue, or to the hosts that hold most of its data.

At submit, the pointers among a job's arguments are looked up in the catalog: each one's
size, and every host that holds a copy. Below a threshold of data in all (64 MiB by default)
the job goes to the queue it was given; above it, to the queue of each host that holds the
most of its bytes (``host:NAME``), or to one host group's queue (``group:NAME``) when the
group is exactly those hosts. Workers take jobs from the queues of their host and of its
groups before their other queues. Such a job waits on those queues alone for a while (the
queue's ``locality_wait``, 3 s by default: an idle worker there takes it at once, a busy one
when it is free), then joins its other queues too, where any worker may take it; the first to
claim it runs it. :func:`plan` decides, without I/O; the route it returns is kept with the
job, and ``job.explain()`` tells it.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from undertow._util import interface_addresses, is_loopback
from undertow.data import Pointer

__all__ = [
    "DEFAULT_LOCALITY_WAIT",
    "DEFAULT_THRESHOLD",
    "GROUP_PREFIX",
    "HOST_PREFIX",
    "Held",
    "Route",
    "find_pointers",
    "group_queue",
    "host_name",
    "host_queue",
    "local_queues",
    "plan",
    "this_host",
]

#: bytes of pointer arguments from which a job goes where its data is
DEFAULT_THRESHOLD = 64 * 2**20
#: seconds a job sent where its data is waits for the workers there before others may take it
DEFAULT_LOCALITY_WAIT = 3.0
HOST_PREFIX, GROUP_PREFIX = "host:", "group:"
#: how deep in lists, tuples and dicts arguments are searched for pointers
_DEPTH = 3


class Held(msgspec.Struct, frozen=True):
    """One pointer argument: its key, its size, and the hosts that hold a copy."""

    key: str
    size: int
    hosts: list[str]


class Route(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where a job was sent and why (kept with the job, as JSON)."""

    queues: list[str]
    #: "given" (no pointer data, or a queue named by the caller), "central" (below the
    #: threshold), "data" (the hosts with most of its bytes), "group" (their group)
    why: str
    total: int = 0
    threshold: int = DEFAULT_THRESHOLD
    by_host: dict[str, int] = {}
    group: str | None = None
    #: how many of ``queues`` are those of the data's hosts (or group): the first ones
    local: int = 0
    #: seconds the job had those queues to itself (0: none)
    wait: float = 0.0

    def explain(self) -> str:
        """The route in words."""
        where = ", ".join(self.queues)
        if self.why == "given":
            return f"sent to {where}: the queue it was given (no pointer data to follow)"
        size = f"{_mib(self.total)} of pointer data"
        if self.why == "central":
            return f"sent to {where}: {size}, below the threshold of {_mib(self.threshold)}"
        held = "; ".join(f"{host} holds {_mib(n)}" for host, n in sorted(self.by_host.items()))
        if self.wait and self.local < len(self.queues):
            later = ", ".join(self.queues[self.local :])
            held += f"; theirs alone for up to {self.wait:g} s, then also {later}'s"
        if self.why == "group":
            return (
                f"sent to {where} (group {self.group}, exactly those hosts, first): {size}; {held}"
            )
        return f"sent to {where} (the hosts holding most of its {size} first); {held}"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def host_name(host: str) -> str:
    """How a host is named in queue names: loopback addresses are this machine's name."""
    return socket.gethostname() if is_loopback(host) else host.strip("[]")


def this_host() -> list[str]:
    """The names of this machine a data server's location may carry: its host name, the
    addresses that name resolves to and those of its interfaces (loopback aside: a data
    server bound there is known by the host name)."""
    name = socket.gethostname()
    try:
        addresses = socket.gethostbyname_ex(name)[2]
    except OSError:
        addresses = []
    addresses += interface_addresses()
    return list(dict.fromkeys([name, *(a for a in addresses if not is_loopback(a))]))


def host_queue(host: str) -> str:
    """The queue of the jobs whose data is on ``host`` (characters a queue name cannot
    hold become ``-``)."""
    return _queue_name(HOST_PREFIX + host_name(host))


def group_queue(group: str) -> str:
    """The queue of the jobs sent to the hosts of ``group``."""
    return _queue_name(GROUP_PREFIX + group)


def _queue_name(text: str) -> str:
    """``text`` as a queue name: other characters become ``-``, and a name too long keeps
    its start and a digest of the whole (two long names never share a queue)."""
    name = re.sub(r"[^A-Za-z0-9_.:-]", "-", text)
    if len(name) > 64:
        name = f"{name[:55]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return name


def find_pointers(args: Iterable[Any], kwargs: Mapping[str, Any]) -> list[Pointer]:
    """The pointers among the arguments, each once, searched a few levels deep."""
    if not args and not kwargs:
        return []
    found: dict[tuple[str, str], Pointer] = {}

    def visit(value: Any, depth: int) -> None:
        if isinstance(value, Pointer):
            found.setdefault((value.key, value.address), value)
        elif depth and isinstance(value, list | tuple | set | frozenset):
            for item in value:
                visit(item, depth - 1)
        elif depth and isinstance(value, dict):
            for item in value.values():
                visit(item, depth - 1)

    visit(list(args), _DEPTH + 1)  # (the arguments themselves are one level)
    visit(dict(kwargs), _DEPTH + 1)
    return list(found.values())


def plan(
    held: Sequence[Held],
    given: Sequence[str],
    *,
    threshold: int = DEFAULT_THRESHOLD,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> Route:
    """The route of a job whose pointer arguments are ``held`` and that was given the queues
    ``given``."""
    sizes = {h.key: h.size for h in held}
    total = sum(sizes.values())
    if not held:
        return Route(queues=list(given), why="given")
    if total < threshold:
        return Route(queues=list(given), why="central", total=total, threshold=threshold)
    by_host: dict[str, int] = {}
    for item in {h.key: h for h in held}.values():
        for host in dict.fromkeys(host_name(h) for h in item.hosts):
            by_host[host] = by_host.get(host, 0) + item.size
    if not by_host:  # the catalog knows none of them: nowhere better to go
        return Route(queues=list(given), why="central", total=total, threshold=threshold)
    most = max(by_host.values())
    hosts = sorted(host for host, n in by_host.items() if n == most)
    route = Route(queues=[], why="data", total=total, threshold=threshold, by_host=by_host)
    for name, members in sorted((groups or {}).items()):
        if len(hosts) > 1 and {host_name(m) for m in members} == set(hosts):
            route.queues, route.why, route.group = [group_queue(name)], "group", name
            break
    else:
        route.queues = [host_queue(host) for host in hosts]
    route.local = len(route.queues)
    # and its own queues, after: workers take their host's queues first, so a worker where
    # the data is wins the claim if there is one; if there is none, the job still runs
    route.queues = list(dict.fromkeys([*route.queues, *given]))
    return route


async def local_queues(store: Any, hosts: Sequence[str]) -> list[str]:
    """The queues of jobs sent to ``hosts`` (a worker's names for its machine): each host's,
    then those of the groups any of them is in."""
    names = {host_name(h) for h in hosts}
    queues = [host_queue(h) for h in hosts]
    groups: dict[str, list[str]] = await store.groups()
    queues += [
        group_queue(group)
        for group, members in sorted(groups.items())
        if names & {host_name(m) for m in members}
    ]
    return list(dict.fromkeys(queues))
