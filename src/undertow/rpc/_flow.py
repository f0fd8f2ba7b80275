"""Flow control for streams: a generator runs at most a window of items ahead of its caller.

The caller reports how many items it has consumed (CREDIT messages, every half window); the
server's generator waits before sending an item beyond ``consumed + STREAM_WINDOW``. The
waiting happens in the generator's own thread (plain generators) or task (async ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from undertow.wire import STREAM_WINDOW

__all__ = ["StreamCredit"]


class StreamCredit:
    """The sending side's count of items sent and allowed. Thread-safe."""

    __slots__ = ("_cond", "_event", "_loop", "allowed", "closed", "sent")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.allowed = STREAM_WINDOW
        self.sent = 0
        self.closed = False
        self._cond = threading.Condition()
        self._loop = loop
        self._event = asyncio.Event() if loop is not None else None

    def grant(self, consumed: int) -> None:
        """The caller has consumed ``consumed`` items (from any thread)."""
        with self._cond:
            self.allowed = max(self.allowed, consumed + STREAM_WINDOW)
            self._cond.notify_all()
        self._wake_async()

    def close(self) -> None:
        """The call was cancelled: release a waiting generator."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._wake_async()

    def _wake_async(self) -> None:
        if self._loop is not None and self._event is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._event.set)

    def take(self, timeout: float | None) -> bool:
        """Block until one more item may be sent; False if closed or no credit in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.sent >= self.allowed and not self.closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self.closed:
                return False
            self.sent += 1
            return True

    async def take_async(self, timeout: float | None) -> bool:
        """:meth:`take` for async generators, on the loop given at creation."""
        assert self._event is not None
        try:
            async with asyncio.timeout(timeout):
                while self.sent >= self.allowed and not self.closed:
                    self._event.clear()
                    if self.sent < self.allowed or self.closed:
                        break
                    await self._event.wait()
        except TimeoutError:
            return False
        if self.closed:
            return False
        self.sent += 1
        return True
