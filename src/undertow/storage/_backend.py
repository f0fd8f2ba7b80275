"""The storage interface every backend implements: the registry, the data catalog and (its
operations in ``_jobs.py``) the job queue."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from undertow.data import DataRecord, Location
from undertow.storage._jobs import JobStore
from undertow.storage._records import Instance

__all__ = ["Backend", "by_age", "by_creation"]


class Backend(JobStore):
    """Where the cluster's state lives. Every method is a coroutine; an object is used on the
    event loop it was first used on.

    An instance's record stays visible while its heartbeats come within its TTL: a process
    that dies without deregistering disappears on its own. The data catalog's records never
    expire: whoever keeps an object removes its location when the object goes. The job
    queue's operations are those of :class:`~undertow.storage.JobStore`.
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
    ) -> list[DataRecord]:
        """The records carrying every one of ``tags`` (every record if none are given), of
        ``owner`` and ``type_name`` if given; oldest first."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""


def by_age(instances: list[Instance]) -> list[Instance]:
    """Sorted by service name, then start time (oldest first), then id."""
    return sorted(instances, key=lambda i: (i.service, i.started, i.id))


def by_creation(records: list[DataRecord]) -> list[DataRecord]:
    """Sorted by creation time (oldest first), then key."""
    return sorted(records, key=lambda r: (r.created, r.key))
