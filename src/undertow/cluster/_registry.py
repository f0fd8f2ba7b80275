"""The registry for sync code (the CLI, discovery from a script or notebook)."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from undertow._util import portal
from undertow.config import backend_url, redact_url
from undertow.data import DataRecord, Location
from undertow.errors import BackendError, BrokerUnavailable
from undertow.storage import Backend, Instance, open_backend

__all__ = ["Registry"]

T = TypeVar("T")


class Registry:
    """Looks up and edits the cluster's service records from sync code.

    ::

        registry = Registry()                       # $UNDERTOW_BACKEND or the embedded file
        registry.instances("MemKeyValue")           # live instances, oldest first
        registry.add_to_group("gpu", ["node-3", "node-7"])   # a named group of hosts

    Args:
        url: the backend URL (default: ``$UNDERTOW_BACKEND``, else the embedded SQLite file).
        timeout: seconds any one operation may take.
    """

    def __init__(self, url: str | None = None, *, timeout: float = 10.0) -> None:
        self._url = backend_url(url)
        self.timeout = timeout
        self._backend: Backend | None = None
        self._pid = os.getpid()  # a backend belongs to this process's portal loop
        self._closed = False

    @property
    def url(self) -> str:
        """The backend's URL, without any password."""
        return self._backend.url if self._backend is not None else redact_url(self._url)

    def __repr__(self) -> str:
        return f"<Registry {self.url}>"

    def _run(self, op: Callable[[Backend], Coroutine[Any, Any, T]]) -> T:
        if self._closed:
            raise BackendError(f"registry {self.url} was closed; make a new Registry")
        if self._pid != os.getpid():  # forked: the parent's connections are not ours
            self._backend, self._pid = None, os.getpid()

        async def run() -> T:
            if self._backend is None:  # made on the portal's loop, which it is bound to
                self._backend = open_backend(self._url)
            return await op(self._backend)

        try:
            return portal().run(run(), self.timeout)
        except TimeoutError:
            raise BrokerUnavailable(
                f"registry {self.url} did not answer within {self.timeout:g} s"
            ) from None

    def instances(self, service: str) -> list[Instance]:
        """The live instances of ``service``, oldest first."""
        return self._run(lambda b: b.instances(service))

    def all_instances(self) -> list[Instance]:
        """Every live instance, by service name then age."""
        return self._run(lambda b: b.all_instances())

    def register(self, instance: Instance) -> None:
        """Add or replace ``instance``'s record."""
        self._run(lambda b: b.register(instance))

    def deregister(self, service: str, instance_id: str) -> None:
        """Remove an instance's record."""
        self._run(lambda b: b.deregister(service, instance_id))

    def record_data(self, record: DataRecord) -> None:
        """Add ``record`` to the data catalog, or add its locations and tags to the record
        with its key."""
        self._run(lambda b: b.record_data(record))

    def forget_data(self, key: str, location: Location | None = None) -> None:
        """Remove one location of a data record; the record goes with its last location, or
        at once if ``location`` is None."""
        self._run(lambda b: b.forget_data(key, location))

    def data_record(self, key: str) -> DataRecord | None:
        """The data record under ``key``, or None."""
        return self._run(lambda b: b.data_record(key))

    def find_data(
        self,
        *,
        tags: Sequence[str] = (),
        owner: str | None = None,
        type_name: str | None = None,
    ) -> list[DataRecord]:
        """The data records carrying all of ``tags``, of ``owner`` and ``type_name`` if given;
        oldest first."""
        return self._run(lambda b: b.find_data(tags=tags, owner=owner, type_name=type_name))

    def set_group(self, name: str, hosts: Sequence[str]) -> None:
        """Create host group ``name`` with ``hosts`` (duplicates dropped, order kept), or
        replace its hosts. A ValueError names a bad name (1-64 letters, digits, ``_ . -``)
        or host (empty, or with white space)."""
        self._run(lambda b: b.set_group(name, hosts))

    def add_to_group(self, name: str, hosts: Sequence[str]) -> None:
        """Add ``hosts`` to the end of group ``name``, creating the group if needed."""
        self._run(lambda b: b.add_to_group(name, hosts))

    def remove_from_group(self, name: str, hosts: Sequence[str]) -> bool:
        """Remove ``hosts`` from group ``name`` (the group goes with its last host); False if
        there is no such group."""
        return self._run(lambda b: b.remove_from_group(name, hosts))

    def group(self, name: str) -> list[str] | None:
        """The hosts of group ``name`` in the order they were added, or None."""
        return self._run(lambda b: b.group(name))

    def groups(self) -> dict[str, list[str]]:
        """Every host group's hosts, by group name (sorted)."""
        return self._run(lambda b: b.groups())

    def drop_group(self, name: str) -> bool:
        """Delete group ``name``; False if there was none."""
        return self._run(lambda b: b.drop_group(name))

    def close(self) -> None:
        """Release the backend's connections."""
        self._closed = True
        backend, self._backend = self._backend, None
        if backend is not None and self._pid == os.getpid():
            try:
                portal().run(backend.close(), self.timeout)
            except TimeoutError:
                raise BackendError(
                    f"registry {self.url} did not close within {self.timeout:g} s"
                ) from None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
