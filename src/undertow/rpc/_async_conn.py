"""The async client's connection: a DEALER socket read by the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from undertow.errors import ConnectionClosed, ConnectionLost, NotConnected
from undertow.rpc._calls import Call, deliver_all
from undertow.security import ClientSeal, SigningKey
from undertow.transport import LockedSocket, connect_dealer

__all__ = ["AsyncConnection"]

log = logging.getLogger(__name__)

#: seconds between looks for a connection (``start_connected``) and at one (``wait``)
_CONNECT_LOOK, _LOST_LOOK = 0.01, 0.1


class AsyncConnection:
    """One DEALER socket whose input is read on the loop that created it."""

    def __init__(
        self,
        address: str,
        *,
        connect_wait: float | None = None,
        key: SigningKey | None = None,
        curve_server_key: str | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        sock, self.endpoint = connect_dealer(
            address, immediate=connect_wait is not None, curve_server_key=curve_server_key
        )
        self._seal = ClientSeal(key) if key is not None else None
        #: see the sync client's connection; here a send never blocks the loop: it is
        #: retried until a connection is up (:meth:`start_connected`)
        self.connect_wait = connect_wait
        self._sock = LockedSocket(
            sock, on_input=self._wake, connect_wait=connect_wait, endpoint=self.endpoint
        )
        self._calls: dict[int, Call] = {}
        self._scheduled = False
        self.closed = False
        self._loop.add_reader(self._sock.fd, self._drain)

    def start(self, call: Call, frames: list[Any]) -> None:
        """Register ``call`` and send its request."""
        if self.closed:
            raise ConnectionClosed(f"the client for {self.endpoint} is closed")
        self._calls[call.call_id] = call
        try:
            self._sock.send(self._sealed(frames), wait=False)
        except NotConnected:
            self._calls.pop(call.call_id, None)
            raise
        call.sent = time.perf_counter()

    async def start_connected(self, call: Call, frames: list[Any]) -> None:
        """:meth:`start` over an established connection, waiting up to ``connect_wait`` for
        one; :class:`NotConnected` (nothing sent) if none comes."""
        assert self.connect_wait is not None
        deadline = time.monotonic() + self.connect_wait
        while True:
            try:
                self.start(call, frames)
                return
            except NotConnected:
                if time.monotonic() >= deadline:
                    raise NotConnected(
                        f"no connection to {self.endpoint} within {self.connect_wait:g} s; "
                        "the call was not sent"
                    ) from None
            await asyncio.sleep(_CONNECT_LOOK)

    def send(self, frames: list[Any]) -> None:
        """Send a message that expects no reply (a CANCEL)."""
        with contextlib.suppress(NotConnected):  # with nobody to tell, there is nothing to do
            self._sock.send(self._sealed(frames), wait=False)

    def _sealed(self, frames: list[Any]) -> list[Any]:
        return frames if self._seal is None else self._seal.seal(frames)

    def forget(self, call: Call) -> None:
        """Stop delivering messages for ``call``."""
        self._calls.pop(call.call_id, None)

    async def wait(self, call: Call, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Wait until ``ready()`` or the deadline; True if ready."""
        event = asyncio.Event()
        call.notify = event.set
        while not ready():
            if self.closed:
                raise ConnectionClosed(f"the client for {self.endpoint} was closed")
            event.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self.connect_wait is not None:  # look at the connection now and then
                if self._sock.lost():
                    raise ConnectionLost(
                        f"the connection to {self.endpoint} dropped while {call.name}() was "
                        "running; it may or may not have completed"
                    )
                remaining = _LOST_LOOK if remaining is None else min(remaining, _LOST_LOOK)
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                if self.connect_wait is None or (
                    deadline is not None and time.monotonic() >= deadline
                ):
                    return ready()
        return True

    def _wake(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        while (frames := self._sock.recv_nowait()) is not None:
            deliver_all(self._calls, frames, self.endpoint, self._seal)

    def close(self) -> None:
        """Close the socket; calls still waiting raise :class:`ConnectionClosed`."""
        if self.closed:
            return
        self.closed = True
        if not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fd)
        self._sock.close()
        for call in list(self._calls.values()):
            call.notify()
        self._calls.clear()
