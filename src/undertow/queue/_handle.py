"""A backend used from sync code and from any event loop, through the process's portal loop
(the backend's connections belong to that loop)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from undertow._util import portal
from undertow.config import backend_url, redact_url
from undertow.errors import BackendError, BrokerUnavailable
from undertow.security import SigningKey
from undertow.storage import Backend, open_backend

__all__ = ["StoreHandle", "warn_if_not_durable"]

log = logging.getLogger(__name__)
#: the stores already warned about, by URL: once per process is enough
_warned: set[str] = set()

T = TypeVar("T")
Op = Callable[[Backend], Coroutine[Any, Any, T]]


class StoreHandle:
    """The queue's backend, opened on first use on the portal loop, and the submitter's
    signing key (None without a token)."""

    def __init__(self, url: str | None, *, key: SigningKey | None, timeout: float) -> None:
        self._url = backend_url(url)
        self.key = key
        self.timeout = timeout
        self._backend: Backend | None = None
        self._pid = os.getpid()
        self.closed = False

    @property
    def url(self) -> str:
        """The backend's URL, without any password."""
        return redact_url(self._url)

    def _coro(self, op: Op[T]) -> Coroutine[Any, Any, T]:
        if self.closed:
            raise BackendError(f"job queue {self.url} was closed; make a new JobQueue")
        if self._pid != os.getpid():  # forked: the parent's connections are not ours
            self._backend, self._pid = None, os.getpid()

        async def run() -> T:
            if self._backend is None:
                self._backend = open_backend(self._url)
                await warn_if_not_durable(self._backend)
            return await op(self._backend)

        return run()

    def run(self, op: Op[T]) -> T:
        """Run ``op`` on the backend from sync code; BrokerUnavailable after ``timeout``."""
        try:
            return portal().run(self._coro(op), self.timeout)
        except TimeoutError:
            raise self._unavailable() from None

    def _unavailable(self) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"{self.url} did not answer within {self.timeout:g} s (down or unreachable?); "
            "nothing is known to be stored: submit again with the same idempotency_key to "
            "be safe"
        )

    async def arun(self, op: Op[T]) -> T:
        """Run ``op`` on the backend from any event loop."""
        future = asyncio.run_coroutine_threadsafe(self._coro(op), portal().loop)
        try:
            async with asyncio.timeout(self.timeout):  # not wait_for: see Worker._pause
                return await asyncio.wrap_future(future)
        except TimeoutError:
            raise self._unavailable() from None

    def close(self) -> None:
        """Release the backend's connections."""
        self.closed = True
        backend, self._backend = self._backend, None
        if backend is not None and self._pid == os.getpid():
            try:
                portal().run(backend.close(), self.timeout)
            except TimeoutError:
                raise BackendError(f"{self.url} did not close within {self.timeout:g} s") from None


async def warn_if_not_durable(store: Backend) -> None:
    """Log, once per process and store, why the store could lose acknowledged jobs."""
    if store.url in _warned:
        return
    _warned.add(store.url)
    try:
        why = await store.durability()
    except BackendError:
        return  # the operation that follows says what is wrong
    if why is not None:
        log.warning("%s", why)
