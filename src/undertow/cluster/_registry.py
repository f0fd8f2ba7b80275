"""The registry for sync code (the CLI, discovery from a script or notebook)."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from undertow._util._portal import portal
from undertow.cluster._backend import Backend, open_backend
from undertow.cluster._records import Instance
from undertow.config import backend_url, redact_url
from undertow.errors import BackendError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry:
    """Looks up and edits the cluster's service records from sync code.

    ::

        registry = Registry()                       # $UNDERTOW_BACKEND or the embedded file
        registry.instances("MemKeyValue")           # live instances, oldest first

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
            raise BackendError(
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
