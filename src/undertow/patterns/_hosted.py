"""Serving a pattern service (a master, a sink, a gateway): registered under its name, in
the foreground or from a background thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from undertow.errors import StreamError
from undertow.service import ServiceHost

__all__ = ["Hosted", "serve_in_thread"]


def serve_in_thread(
    obj: Any, name: str, timeout: float, options: dict[str, Any]
) -> tuple[ServiceHost, threading.Thread]:
    """Serve ``obj`` from a thread, registered as ``name``; its host (serving) and thread."""
    host = ServiceHost([obj], name=name, **{"quiet": True, **options})
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(host.serve(lambda _i: ready.set()))
        except BaseException as exc:  # reported to the thread that called start()
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name=f"undertow-{name}", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise StreamError(f"{name!r} did not start within {timeout:g} s")
    if failure:
        raise failure[0]
    return host, thread


class Hosted:
    """``serve_forever``, ``start`` and ``stop`` for a service that has a ``name``."""

    name: str
    _host: ServiceHost | None = None
    _thread: threading.Thread | None = None

    def serve_forever(self, **host_options: Any) -> None:
        """Serve, registered under its name, until SIGINT or SIGTERM (options: those of
        :class:`~undertow.service.ServiceHost`, such as ``host``, ``port``, ``backend``)."""
        ServiceHost([self], name=self.name, **host_options).serve_forever()

    def start(self, timeout: float = 30.0, **host_options: Any) -> str:
        """Serve from a background thread (a notebook, a test); returns its address."""
        self._host, self._thread = serve_in_thread(self, self.name, timeout, host_options)
        return self._host.instances[0].address

    def stats(self) -> dict[str, Any]:
        """Its figures while it serves from :meth:`start`: what it passed on (messages
        received, answered, failed, in flight, latency; a master's queue and workers) under
        ``"patterns"``, beside its server's calls (``server.stats()``)."""
        if self._host is None:
            raise StreamError(f"{self.name!r} is not serving here: start() it first")
        return self._host.servers[0].stats()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (after :meth:`start`)."""
        if self._host is not None:
            self._host.stop()
        if self._thread is not None:
            self._thread.join(timeout)
