"""The sync client's receive pump: the thread that delivers the replies of futures no thread
waits on, and sends the calls held for a batch when nobody else does (see ``_sync_conn.py``)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from undertow.errors import ConnectionLost
from undertow.rpc._calls import Call
from undertow.transport import LockedSocket

__all__ = ["Pump", "pipe"]

log = logging.getLogger(__name__)

#: Longest the pump waits at a time (for input, or for the receive role), in seconds; it then
#: looks for futures whose deadline has passed.
_PUMP_SLICE = 0.05
#: How long the pump stands back after a submitting thread delivered replies itself.
_PUMP_DEFER = 0.001
#: Longest a submitted call is held for a batch when no thread waits (seconds).
_HOLD_MAX = 0.001


class Pump:
    """The futures' side of a :class:`~undertow.rpc._sync_conn.SyncConnection`: its calls
    that no thread waits on (*orphans*), and the thread that receives for them."""

    endpoint: str
    closed: bool
    connect_wait: float | None
    _sock: LockedSocket
    _role: threading.Lock

    def _deliver(self, frames: list[Any]) -> None:
        raise NotImplementedError

    def _release_role(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _drain_pipe(fd: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(fd, 4096):
                pass

    def _init_pump(self) -> None:
        # The pump waits for input *without* the receive role, on its own wake-up pipe.
        self._pump_r, self._pump_w = pipe()
        self._pump_poller = select.poll()
        self._pump_poller.register(self._sock.fd, select.POLLIN)
        self._pump_poller.register(self._pump_r, select.POLLIN)
        self._pump_waiting = False
        self._pump_polling = False
        self._last_delivery = 0.0  # when a thread other than the pump last delivered replies
        self._next_expiry_scan = 0.0
        self._held_at = 0.0  # when the first call of the batch being held was submitted
        self._orphans: dict[int, tuple[Call, float | None, Callable[[BaseException], None]]] = {}
        self._pump_cond = threading.Condition()
        self._pump: threading.Thread | None = None

    def _poke_pump(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._pump_w, b"\0")

    def watch(
        self, call: Call, deadline: float | None, expire: Callable[[BaseException], None]
    ) -> None:
        """Have the pump thread receive for ``call``, which no thread waits on."""
        self._orphans[call.call_id] = (call, deadline, expire)
        # The pump says it is about to wait *before* it checks for orphans, so either it
        # sees this one or we see its flag; the lock is taken only when it may be asleep.
        if self._pump_waiting or self._pump is None:
            with self._pump_cond:
                if self._pump is None:
                    self._pump = threading.Thread(
                        target=self._pump_loop, name="undertow-client-pump", daemon=True
                    )
                    self._pump.start()
                self._pump_cond.notify()

    def _idle(self) -> bool:
        """True when the pump has nothing to do."""
        # settled futures remove themselves (forget), and expired ones are dropped by
        # _expire_orphans, so no scan is needed here: thousands may be outstanding
        return not self.closed and not self._orphans

    def _pump_loop(self) -> None:
        try:
            self._pump_forever()
        except Exception:  # a dead pump would hang every future; say so loudly
            log.exception("the client's receive pump for %s failed", self.endpoint)
            raise

    def _pump_forever(self) -> None:
        while not self.closed:
            with self._pump_cond:
                self._pump_waiting = True
                while self._idle():
                    self._pump_cond.wait()
                self._pump_waiting = False
            if self.closed:
                return  # type: ignore[unreachable]  # closed is set by another thread
            # Wait for input without holding the role, so that threads submitting calls can
            # drain replies themselves; take the role only to deliver.
            # Senders poke the pump only while it polls; look once more after saying so, so
            # that input whose wake-up a sender consumed just before is not slept on.
            self._pump_polling = True
            timeout = self._hold_left()
            if not self._sock.has_input():
                for fd, _ in self._pump_poller.poll(math.ceil(timeout * 1000)):
                    if fd == self._pump_r:
                        self._drain_pipe(self._pump_r)
            self._pump_polling = False
            if time.monotonic() - self._last_delivery < _PUMP_DEFER:
                # A thread that keeps submitting is delivering replies itself; competing with
                # it for the socket would only make both wait on each other (measured: half
                # the throughput). Stand back for a moment.
                time.sleep(_PUMP_DEFER)
            elif self._role.acquire(timeout=_PUMP_SLICE):
                try:
                    while (frames := self._sock.recv_nowait()) is not None:
                        self._deliver(frames)
                finally:
                    self._release_role()
            self._expire_orphans()

    def _hold_left(self) -> float:
        """How long the pump may sleep: until the held batch is due (sent now if it is)."""
        if not self._sock.held:
            return _PUMP_SLICE
        left = self._held_at + _HOLD_MAX - time.monotonic()
        if left > 0:
            return left
        self.flush()
        return _PUMP_SLICE

    def _lose_calls(self) -> bool:
        """With ``connect_wait``: if the connection is gone, fail every future with
        :class:`ConnectionLost` and return True."""
        if not self._sock.lost():
            return False
        lost = ConnectionLost(
            f"the connection to {self.endpoint} dropped while the call was running; "
            "it may or may not have completed"
        )
        for call_id, (_, _, expire) in self._orphans.copy().items():
            self._orphans.pop(call_id, None)
            expire(lost)
        return True

    def _expire_orphans(self) -> None:
        now = time.monotonic()
        if now < self._next_expiry_scan:
            return
        self._next_expiry_scan = now + _PUMP_SLICE
        if self.connect_wait is not None and self._orphans and self._lose_calls():
            return
        for call_id, (call, deadline, expire) in self._orphans.copy().items():
            if call.done:
                self._orphans.pop(call_id, None)
            elif deadline is not None and now >= deadline:
                self._orphans.pop(call_id, None)
                expire(TimeoutError())


def pipe() -> tuple[int, int]:
    """A non-blocking pipe for wake-ups."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w
