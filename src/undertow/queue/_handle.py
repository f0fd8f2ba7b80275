"""A backend used from sync code and from any event loop, through the process's portal loop
(the backend's connections belong to that loop)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from undertow._util import portal
from undertow.config import backend_url, redact_url
from undertow.errors import BackendError, BrokerUnavailable
from undertow.security import SigningKey
from undertow.storage import Backend, JobRecord, Submitter, open_backend, open_submitter

__all__ = ["StoreHandle", "warn_if_not_durable"]

log = logging.getLogger(__name__)
#: the stores already warned about, by URL: once per process is enough
_warned: set[str] = set()

T = TypeVar("T")
Op = Callable[[Backend], Coroutine[Any, Any, T]]


class StoreHandle:
    """The queue's backend, opened on first use on the portal loop, and the submitter's
    signing key (None without a token)."""

    def __init__(
        self, url: str | None, *, key: SigningKey | None, timeout: float, token: str | None = None
    ) -> None:
        self._url = backend_url(url)
        self.key = key
        #: the submitter's token (pointers in results are read with it), or None
        self.token = token
        self.timeout = timeout
        self._backend: Backend | None = None
        self._pid = os.getpid()
        self.closed = False
        #: the blocking enqueue of sync callers (None: not opened, False: the backend has none)
        self._submitter: Submitter | bool | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The backend's URL, without any password."""
        return redact_url(self._url)

    def _coro(self, op: Op[T]) -> Coroutine[Any, Any, T]:
        if self.closed:
            raise BackendError(f"job queue {self.url} was closed; make a new JobQueue")
        if self._pid != os.getpid():  # forked: the parent's connections are not ours
            self._backend, self._submitter, self._pid = None, None, os.getpid()

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

    def enqueue_now(self, record: JobRecord) -> JobRecord | None:
        """Enqueue ``record`` from this thread, past the portal loop, where the backend has
        a blocking path (Redis); None where it has not (call :meth:`run`). Only once the
        portal opened the backend (which checks its durability once)."""
        if self.closed or self._backend is None or self._pid != os.getpid():
            return None
        with self._lock:
            if self._submitter is None:
                self._submitter = open_submitter(self._url, timeout=self.timeout) or False
            submitter = self._submitter
        if not isinstance(submitter, Submitter):
            return None
        try:
            return submitter.enqueue(record)
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(
                f"{exc}; nothing is known to be stored: submit again with the same "
                "idempotency_key to be safe"
            ) from exc

    def close(self) -> None:
        """Release the backend's connections."""
        self.closed = True
        with self._lock:
            submitter, self._submitter = self._submitter, None
        if isinstance(submitter, Submitter):
            submitter.close()
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
