"""The sync client's connection: I/O happens in the calling thread, not on a loop thread.

Handing every call to an event-loop thread and back costs two thread wake-ups, which on a
loopback round trip of ~110 µs more than doubles the latency (measured: 350 µs against
160 µs). So a blocking call does its I/O in its own thread, on a DEALER socket of its own
(:meth:`SyncConnection.call`): it sends, then blocks inside ZeroMQ's receive until its reply
comes, with no lock and no descriptor polling. Each thread that makes blocking calls has one
such socket, made on its first call and closed when the thread ends or the client closes.

Streams, futures and cancellations share one more socket, which any thread may use. On it a
thread that waits takes the *receive role* and polls the socket itself if no other thread is
receiving. Threads that find the role taken wait on an event; whoever holds the role delivers
every message to its call and wakes its owner. When the holder's own call is done it gives the
role up and wakes the others, one of whom takes it.

Futures (``submit``) have no thread waiting on them. ``submit`` itself delivers whatever has
arrived, so a thread that keeps submitting settles its own futures; and a pump thread, started
on first use, waits for input without the role while futures are outstanding and takes the
role only to deliver.

A call submitted while earlier futures are still outstanding is held, not sent (as Nagle's
algorithm holds bytes while earlier ones are unacknowledged): the held calls go out together,
as one BATCH message, when any thread starts waiting on this socket, before any other message,
when a blocking call starts, when 16 are held, or when the pump next wakes (at the latest
:data:`_HOLD_MAX` after the first was held). A lone call is never held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from undertow.errors import ConnectionClosed, ConnectionLost, NotConnected
from undertow.rpc._blocking import run_call
from undertow.rpc._calls import Call, Protocol, deliver_all
from undertow.rpc._sync_pump import Pump, pipe
from undertow.security import ClientSeal, SigningKey
from undertow.transport import LockedSocket, OwnedSocket, connect_dealer
from undertow.wire import pack_batch

__all__ = ["SyncConnection"]

#: Most calls held for one batch. Small enough that the server starts on a burst while its
#: caller is still submitting: batches of the whole window (64) made both sides take turns.
_MAX_BATCH = 16

log = logging.getLogger(__name__)

#: A thread waiting on its own socket looks at its deadline and at close() this often (ms).
_SLICE_MS = 100


class SyncConnection(Pump):
    """One DEALER socket shared by every thread of a sync client."""

    def __init__(
        self,
        address: str,
        *,
        connect_wait: float | None = None,
        key: SigningKey | None = None,
        curve_server_key: str | None = None,
    ) -> None:
        sock, self.endpoint = connect_dealer(
            address, immediate=connect_wait is not None, curve_server_key=curve_server_key
        )
        #: signs messages (one session per socket), None: they go unsigned
        self._key = key
        self._curve = curve_server_key
        self._seal = ClientSeal(key) if key is not None else None
        #: None: calls queue until a connection comes (within their deadline). A number:
        #: calls go only over an established connection, waiting this long for one, and
        #: calls, futures and streams whose connection drops fail at once (see
        #: ``NotConnected``, ``ConnectionLost``).
        self.connect_wait = connect_wait
        self._sock = LockedSocket(
            sock,
            on_input=self._poke,
            connect_wait=connect_wait,
            endpoint=self.endpoint,
            # a client that waits for connections sends each call as it comes: a call that
            # cannot go out must fail at once (NotConnected), not later in a batch
            coalesce=pack_batch if connect_wait is None else None,
            max_batch=_MAX_BATCH,
        )
        #: the calls held for a batch (the socket's list: empty when none are)
        self.held = self._sock.held
        self._calls: dict[int, Call] = {}
        self._role = threading.Lock()
        self._waiters: set[threading.Event] = set()
        self._waiters_lock = threading.Lock()
        self._wake_r, self._wake_w = pipe()
        self._poller = select.poll()
        self._poller.register(self._sock.fd, select.POLLIN)
        self._poller.register(self._wake_r, select.POLLIN)
        self._init_pump()
        self._local = threading.local()
        self._owned: weakref.WeakSet[OwnedSocket] = weakref.WeakSet()
        self._owned_lock = threading.Lock()
        self.closed = False

    # -- blocking calls, each thread on its own socket ---------------------------------------

    def call(self, call: Call, frames: list[Any], deadline: float | None) -> bool:
        """Send ``call`` and receive in this thread until it is done; False if the deadline
        passed first.

        The call goes out on this thread's own socket and its messages (output, then the
        result) come back on it. If the wait ends without the result (deadline, Ctrl-C, a
        closed client), the server is asked to stop the call.
        """
        sock: OwnedSocket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._own_socket()
        seal: ClientSeal | None = self._local.seal
        with sock.lock:  # close() from another thread waits for this call to end
            if sock.closed:
                raise ConnectionClosed(f"the client for {self.endpoint} is closed")
            try:
                # inside the try: a Ctrl-C that lands right after the send still cancels
                return run_call(sock, seal, call, frames, deadline, self.endpoint, self)
            finally:
                if self.closed:
                    sock.close()
                elif not call.done:  # deadline, Ctrl-C: ask the server to stop the call
                    cancel = Protocol.cancel_frames(call.call_id)
                    with contextlib.suppress(NotConnected):  # no server to ask
                        sock.send(cancel if seal is None else seal.seal(cancel), wait=False)

    def _own_socket(self) -> OwnedSocket:
        """This thread's socket, made now."""
        if self.closed:
            raise ConnectionClosed(f"the client for {self.endpoint} is closed")
        sock = OwnedSocket(
            self.endpoint, connect_wait=self.connect_wait, curve_server_key=self._curve
        )
        # The thread-local slot holds the only strong reference: when the thread ends, the
        # socket is collected, and its finalizer closes it.
        weakref.finalize(sock, sock.sock.close, 0)
        self._local.sock = sock
        self._local.seal = ClientSeal(self._key) if self._key is not None else None
        with self._owned_lock:
            self._owned.add(sock)
        return sock

    # -- sending ----------------------------------------------------------------------------

    def start(
        self, call: Call, frames: list[Any], *, then_drain: bool = False, hold: bool = False
    ) -> bool:
        """Register ``call`` and send its request; with ``hold``, hold it for a batch if it
        is small (True if held).

        ``then_drain`` promises a :meth:`drain_nowait` right after, which makes the send's
        own check for waiting input unnecessary. Otherwise that check must stay: besides
        reporting input, it is what tells ZeroMQ we will wait, so that the reply's arrival
        signals the descriptor (ZeroMQ signals a reader only after it has seen the queue
        empty).
        """
        if self.closed:
            raise ConnectionClosed(f"the client for {self.endpoint} is closed")
        self._calls[call.call_id] = call
        if self._seal is not None:
            frames = self._seal.seal(frames)
        if hold and len(frames) == 1 and self._sock.hold(frames[0]):
            return True
        try:
            self._sock.send(frames, report=not then_drain)
        except NotConnected:
            self._calls.pop(call.call_id, None)
            raise
        call.sent = time.perf_counter()
        return False

    def submit(
        self,
        call: Call,
        frames: list[Any],
        deadline: float | None,
        expire: Callable[[BaseException], None],
    ) -> None:
        """Send a call no thread waits on: :meth:`start`, :meth:`watch` and
        :meth:`drain_nowait` in one, as a thread that keeps submitting runs it for each call."""
        first = not self.held
        held = self.start(call, frames, then_drain=True, hold=bool(self._orphans))
        self.watch(call, deadline, expire)
        if not held:
            self.drain_nowait()  # settle whatever else has completed, here and now
        elif first:
            # In a burst of submits, the replies are delivered by whoever waits next (or the
            # pump): looking for them after each submit would cost more than the send saved.
            self._held_at = time.monotonic()
            if self._pump_polling:
                self._poke_pump()  # it sends the batch within _HOLD_MAX unless a waiter does first

    def flush(self) -> None:
        """Send the calls held for a batch now; if ZeroMQ has no route for them, their
        futures fail with why."""
        try:
            self._sock.flush()
        except NotConnected as exc:
            for call_id, (_, _, expire) in self._orphans.copy().items():
                if self._orphans.pop(call_id, None) is not None:
                    expire(exc)

    def post(self, frames: list[Any]) -> None:
        """Send a one-way call (a CALL flagged NO_REPLY); raises :class:`NotConnected`
        (nothing sent) when no connection came up within ``connect_wait``."""
        if self.closed:
            raise ConnectionClosed(f"the client for {self.endpoint} is closed")
        if self._seal is not None:
            frames = self._seal.seal(frames)
        self._sock.send(frames)

    def send(self, frames: list[Any]) -> None:
        """Send a message that expects no reply (a CANCEL, a CREDIT); with no connection up
        (``connect_wait``) there is nobody to tell, and it is dropped."""
        if self._seal is not None:
            frames = self._seal.seal(frames)
        with contextlib.suppress(NotConnected):
            self._sock.send(frames, wait=False)

    def forget(self, call: Call) -> None:
        """Stop delivering messages for ``call``."""
        self._calls.pop(call.call_id, None)
        self._orphans.pop(call.call_id, None)

    def _poke(self) -> None:
        # a full pipe means a wake-up is pending anyway; a closed one means we are closing
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")
        if self._pump_polling:
            self._poke_pump()

    # -- receiving --------------------------------------------------------------------------

    def wait(self, call: Call, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Block until ``ready()`` or the deadline; True if ready."""
        if self.held:  # what we wait for may be among them
            self.flush()
        # Fast path, the common one: nobody else is receiving, so receive for ourselves.
        if self._role.acquire(blocking=False):
            try:
                self._receive(ready, deadline)
            finally:
                self._last_delivery = time.monotonic()  # the pump stands back a moment
                self._release_role()
            if ready():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return self._wait_for_role(call, ready, deadline)

    def _wait_for_role(self, call: Call, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Another thread receives: wait to be woken by it, or to take the role over."""
        event = threading.Event()
        previous = call.notify  # a future's settle, say: keep it and wake us after it

        def notify() -> None:
            previous()
            event.set()

        call.notify = notify
        with self._waiters_lock:
            self._waiters.add(event)
        try:
            while True:
                event.clear()
                if ready():
                    return True
                if self.closed:
                    raise ConnectionClosed(f"the client for {self.endpoint} was closed")
                if self._role.acquire(blocking=False):
                    try:
                        self._receive(ready, deadline)
                    finally:
                        self._release_role()
                    if ready():
                        return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # No look at locked() first: a thread woken inside a blocking acquire holds
                # the lock before locked() says so (that is set once it has the GIL again),
                # so asking would spin here, holding the GIL it needs. The holder's release
                # sets our event (we registered before trying), so this wait is never lost.
                event.wait(remaining)
        finally:
            call.notify = previous
            with self._waiters_lock:
                self._waiters.discard(event)

    def _release_role(self) -> None:
        self._role.release()
        # A waiter registers before it tries the role, so one that registers after this
        # check finds the role free.
        if self._waiters:
            with self._waiters_lock:
                waiters = list(self._waiters)
            for event in waiters:
                event.set()

    def _receive(self, ready: Callable[[], bool], deadline: float | None) -> None:
        """Deliver messages until ``ready()`` or the deadline.

        Each look at ``EVENTS`` costs a system call inside ZeroMQ, so this path takes as few
        as it safely can.
        """
        sock = self._sock
        likely = False  # the socket's descriptor said input is there
        while not self.closed:
            while (frames := sock.recv_nowait(likely=likely)) is not None:
                likely = False
                self._deliver(frames)
                if not self._calls and not self._orphans and ready():
                    # Nothing else is outstanding, so no need to look for more; whoever
                    # waits next checks the socket before sleeping (start(), drain_nowait,
                    # the pump), which re-arms ZeroMQ's signal.
                    return
            if ready():
                return
            if deadline is None:
                timeout_ms = None
            else:
                timeout_ms = (deadline - time.monotonic()) * 1000
                if timeout_ms <= 0:
                    return
            if self.connect_wait is not None:  # look at the connection now and then
                if self._lose_calls():
                    if ready():
                        return
                    raise ConnectionLost(
                        f"the connection to {self.endpoint} dropped while calls were running; "
                        "they may or may not have completed"
                    )
                timeout_ms = _SLICE_MS if timeout_ms is None else min(timeout_ms, _SLICE_MS)
            likely = self._sleep(timeout_ms)

    def _sleep(self, timeout_ms: float | None) -> bool:
        """Wait for input (or a wake-up) up to ``timeout_ms``; True if the socket has some.
        Calls submitted by other threads meanwhile go out first."""
        if self.held:
            self.flush()
        if self._sock.spin_for_input():
            return True
        likely = False
        for fd, _ in self._poller.poll(timeout_ms):
            if fd == self._wake_r:
                self._drain_pipe(self._wake_r)
            else:
                likely = True
        return likely

    def _deliver(self, frames: list[Any]) -> None:
        deliver_all(self._calls, frames, self.endpoint, self._seal)

    # -- futures ------------------------------------------------------------------------------

    def drain_nowait(self) -> None:
        """Deliver whatever has arrived, if no other thread is receiving; never blocks.

        A thread that keeps submitting calls settles their futures itself this way, instead
        of being woken by the pump for each one.
        """
        if self._role.acquire(blocking=False):
            try:
                delivered = False
                while (frames := self._sock.recv_nowait()) is not None:
                    self._deliver(frames)
                    delivered = True
                if delivered:
                    self._last_delivery = time.monotonic()
            finally:
                self._release_role()
        else:
            self._poke()  # whoever holds the role may sleep on an edge our send consumed

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket; calls still waiting raise :class:`ConnectionClosed`."""
        if self.closed:
            return
        self.closed = True
        with self._pump_cond:
            self._pump_cond.notify_all()
        self._poke()
        pump = self._pump
        if pump is not None and pump is not threading.current_thread():
            pump.join(timeout=5)
        orphans = list(self._orphans.copy().values())
        self._orphans.clear()
        for _, _, expire in orphans:
            expire(ConnectionClosed(f"the client for {self.endpoint} was closed"))
        with self._waiters_lock:
            for event in self._waiters:
                event.set()
        # the role holder was poked above and leaves its poll; close the socket after it
        with self._owned_lock:
            owned = list(self._owned)
        for sock in owned:
            # a thread inside a call notices within a slice and closes its socket itself
            if sock.lock.acquire(blocking=False):
                sock.close()
                sock.lock.release()
        held = self._role.acquire(timeout=5)
        self._sock.close()
        if held:
            self._role.release()
        for fd in (self._wake_r, self._wake_w, self._pump_r, self._pump_w):
            os.close(fd)
