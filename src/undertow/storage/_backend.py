"""The storage interface every backend implements: the registry, the data catalog, the named
host groups and (its operations in ``_jobs.py``) the job queue."""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence

from undertow.data import DataRecord, Location
from undertow.storage._jobs import JobStore
from undertow.storage._records import Instance

__all__ = ["Backend", "by_age", "by_creation", "check_group_name", "check_hosts"]

_GROUP = re.compile(r"[A-Za-z0-9_.-]{1,58}")  # "group:" + name is a queue name (64)
#: a host name: no white space or control characters, at most 255 characters
_HOST = re.compile(r"[^\s\x00-\x1f\x7f]{1,255}")


class Backend(JobStore):
    """Where the cluster's state lives. Every method is a coroutine; an object is used on the
    event loop it was first used on.

    An instance's record stays visible while its heartbeats come within its TTL: a process
    that dies without deregistering disappears on its own. The data catalog's records never
    expire: whoever keeps an object removes its location when the object goes. The job
    queue's operations are those of :class:`~undertow.storage.JobStore`.

    A host group is a name for a list of host names (``gpu``: ``node-3``, ``node-7``), for
    jobs to be routed to. A group has at least one host: the one left empty is deleted. Its
    hosts keep the order they were added in, each once. Every group operation is atomic, and
    refuses a bad name or host list with a ValueError (see :func:`check_group_name` and
    :func:`check_hosts`) before touching the store.
    """

    #: the backend's URL, for messages (never holds a password)
    url: str

    @abc.abstractmethod
    async def register(self, instance: Instance) -> None:
        """Add ``instance``, or replace the record with its id."""

    @abc.abstractmethod
    async def heartbeat(self, instance: Instance) -> bool:
        """Store ``instance`` (with its new heartbeat) if its record still exists; False if
        it expired or was removed meanwhile (the caller registers it again)."""

    @abc.abstractmethod
    async def deregister(self, service: str, instance_id: str) -> None:
        """Remove an instance at once (a clean stop)."""

    @abc.abstractmethod
    async def instances(self, service: str) -> list[Instance]:
        """The live instances of ``service``, oldest first."""

    @abc.abstractmethod
    async def all_instances(self) -> list[Instance]:
        """Every live instance of every service, by service name then age."""

    @abc.abstractmethod
    async def record_data(self, record: DataRecord) -> None:
        """Add ``record`` to the data catalog, or merge it into the record with its key: its
        locations and tags are added to those recorded (each once); the existing record's
        other fields are kept."""

    @abc.abstractmethod
    async def forget_data(self, key: str, location: Location | None = None) -> None:
        """Remove one location of a record; the record goes with its last location, or at
        once if ``location`` is None. Unknown keys and locations are ignored."""

    @abc.abstractmethod
    async def data_record(self, key: str) -> DataRecord | None:
        """The catalog's record under ``key`` (tags sorted), or None."""

    @abc.abstractmethod
    async def find_data(
        self,
        *,
        tags: Sequence[str] = (),
        owner: str | None = None,
        type_name: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        newest_first: bool = False,
    ) -> list[DataRecord]:
        """The records carrying every one of ``tags`` (every record if none are given), of
        ``owner`` and ``type_name`` if given; oldest first (newest first with
        ``newest_first``), at most ``limit`` (all without one).

        Paging: ``after`` is the key of the last record of the page before (same filters,
        same order); the page continues right after it. A LookupError names an ``after``
        key the catalog does not hold (forgotten meanwhile: start again from the first
        page)."""

    @abc.abstractmethod
    async def set_group(self, name: str, hosts: Sequence[str]) -> None:
        """Create group ``name`` with ``hosts``, or replace the hosts of the group with that
        name."""

    @abc.abstractmethod
    async def add_to_group(self, name: str, hosts: Sequence[str]) -> None:
        """Add ``hosts`` to the end of group ``name`` (those it has already keep their
        place), creating the group if there is none."""

    @abc.abstractmethod
    async def remove_from_group(self, name: str, hosts: Sequence[str]) -> bool:
        """Remove ``hosts`` from group ``name`` (hosts it does not have are ignored); the group
        goes with its last host. False if there is no group ``name``."""

    @abc.abstractmethod
    async def group(self, name: str) -> list[str] | None:
        """The hosts of group ``name`` in the order they were added, or None."""

    @abc.abstractmethod
    async def groups(self) -> dict[str, list[str]]:
        """Every group's hosts, by group name (sorted)."""

    @abc.abstractmethod
    async def drop_group(self, name: str) -> bool:
        """Delete group ``name``; False if there was none."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""


def by_age(instances: list[Instance]) -> list[Instance]:
    """Sorted by service name, then start time (oldest first), then id."""
    return sorted(instances, key=lambda i: (i.service, i.started, i.id))


def by_creation(records: list[DataRecord]) -> list[DataRecord]:
    """Sorted by creation time (oldest first), then key."""
    return sorted(records, key=lambda r: (r.created, r.key))


def check_group_name(name: str) -> str:
    """``name`` if it can name a host group (1-58 letters, digits, ``_ . -``), else a
    ValueError naming it and the rule."""
    if not isinstance(name, str) or not _GROUP.fullmatch(name):  # type: ignore[redundant-expr]
        raise ValueError(
            f"group name {name!r} must be 1-58 letters, digits, '_', '.' or '-' (e.g. 'gpu-a100')"
        )
    return name


def check_hosts(hosts: Sequence[str]) -> list[str]:
    """``hosts`` as a list without duplicates, in their order, if it holds one or more host
    names (each non-empty, without white space or control characters, at most 255
    characters); else a ValueError naming the bad value."""
    if isinstance(hosts, str | bytes) or not isinstance(hosts, Sequence):
        raise ValueError(
            f"hosts must be a list of host names, not {hosts!r}; e.g. ['node-1', 'node-2']"
        )
    if not hosts:
        raise ValueError("a host group needs one host or more; none were given")
    for host in hosts:
        if not isinstance(host, str) or not _HOST.fullmatch(host):  # type: ignore[redundant-expr]
            raise ValueError(
                f"host {host!r} is not a host name: give 1-255 characters without white "
                "space (e.g. 'node-1' or 'gpu3.example.org')"
            )
    return list(dict.fromkeys(hosts))
