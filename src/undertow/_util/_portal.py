"""A background event loop that sync code hands coroutines to (the registry's sync façade).

One loop per process, started on first use in a daemon thread. Objects bound to a loop (a
Redis connection pool) are made and used on this loop only. A forked child gets a new one.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["Portal", "portal"]

T = TypeVar("T")

_lock = threading.Lock()
_portal: Portal | None = None


class Portal:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="undertow-portal", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result; ``TimeoutError`` after ``timeout``
        seconds (the coroutine is then cancelled)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Portal.run() called from the portal's own loop; await instead")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()  # timed out, or Ctrl-C while waiting: stop the coroutine too
            raise


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it when the process forked


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def portal() -> Portal:
    """The process's portal, started if needed."""
    global _portal
    current = _portal
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _portal is None or _portal.pid != os.getpid():
            _portal = Portal()
        return _portal
