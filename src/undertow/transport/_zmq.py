"""ZeroMQ sockets shared between threads, and address parsing; the client side.

pyzmq is imported only in this package (here and in ``_router.py``, the server's socket). A
ZeroMQ socket is not thread-safe, but it may be used from
several threads if every operation is serialised with a full memory barrier. Three ways of
sharing, for three uses:

* :class:`OwnedSocket`: one thread's own DEALER, which it sends on and then waits in
  ZeroMQ's blocking receive (a blocking client call).
* :class:`ServerSocket`: a server's ROUTER, owned by the thread that receives on it; other
  threads send through an in-process relay that the owner forwards.
* :class:`LockedSocket`: every operation under a lock, waited on through the descriptor (the
  client's socket for futures and streams, the async client).

ZeroMQ signals readiness through an edge-like file descriptor: it becomes readable when the
socket's state changes and is reset by *any* operation on the socket, including a send. The
rule for sockets waited on through it: whoever operates on the socket without draining it
(:meth:`LockedSocket.send`, :meth:`LockedSocket.has_input`, an event loop's own send on a
:class:`ServerSocket`) checks ``EVENTS`` afterwards and reports waiting input through
``on_input``, so whoever sleeps on the descriptor does not sleep on a message already queued.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from zmq.backend import Socket as _CSocket

from undertow._util import tune_malloc
from undertow.errors import ConnectError, NotConnected
from undertow.transport._spin import Spinner

__all__ = ["LockedSocket", "OwnedSocket", "connect_dealer", "context", "parse_address"]

_SCHEMES = ("tcp", "ipc", "inproc")

# pyzmq's constants are enums; plain ints keep the hot path free of enum arithmetic.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_RCVTIMEO = int(zmq.RCVTIMEO)
_POLLOUT = int(zmq.POLLOUT)
#: pyzmq's compiled send. ``zmq.Socket.send`` wraps it in a Python method that only handles
#: routing ids and groups of draft socket types; skipping that layer saves a Python call per
#: frame on every message.
_send = _CSocket.send
#: frames smaller than this are copied into ZeroMQ; larger ones are sent zero-copy
_COPY_BELOW = 65536
#: seconds between attempts of a send waiting for a connection
_CONNECT_LOOK = 0.01
#: one-frame messages up to this size may be held to go out in a batch
_HOLD_BELOW = 4096
_HOST_PORT = re.compile(r"^(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+)$")


def parse_address(address: str, *, bind: bool = False) -> str:
    """Return a ZeroMQ endpoint for ``address``.

    Accepts ``tcp://host:port``, ``ipc:///path``, ``inproc://name`` or a bare ``host:port``
    (TCP). When binding, port 0 asks the system for a free port.
    """
    if not address:
        raise ConnectError(f"address {address!r} is not valid; use e.g. 'tcp://127.0.0.1:5555'")
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in _SCHEMES:
        raise ConnectError(
            f"address {address!r} has unsupported scheme {scheme!r}; use one of {list(_SCHEMES)}"
        )
    if scheme != "tcp":
        if not rest:
            raise ConnectError(f"address {address!r} has no path or name")
        return f"{scheme}://{rest}"
    match = _HOST_PORT.match(rest)
    if match is None:
        raise ConnectError(f"address {address!r} is not host:port; use e.g. 'tcp://127.0.0.1:5555'")
    host, port = match["host"], int(match["port"])
    if port > 65535:
        raise ConnectError(f"port {port} in address {address!r} is out of range (0-65535)")
    if port == 0:
        if not bind:
            raise ConnectError(f"cannot connect to port 0 in {address!r}; give the real port")
        return f"tcp://{host}:*"
    return f"tcp://{host}:{port}"


def context() -> zmq.Context[Any]:
    """The process-wide ZeroMQ context (one I/O thread serves every socket). The process
    moves frames from now on: its malloc keeps large buffers for reuse (``_util/_memory.py``)."""
    tune_malloc()
    return zmq.Context.instance()


class LockedSocket:
    """A ZeroMQ socket whose operations are serialised by a lock.

    With ``coalesce``, small one-frame messages may be held (:meth:`hold`) and sent together
    as one message made by ``coalesce(frames)`` (:meth:`flush`, or the next :meth:`send`,
    which keeps them in order): a client that submits calls faster than they are answered
    sends one message for many, and the server receives one (measured: ~9 µs of pyzmq and
    I/O-thread work a message on each side).

    Args:
        sock: the socket; this object owns it from now on.
        on_input: called, outside the lock, when a send finds input waiting.
        coalesce: turns held one-frame messages into one frame (None: nothing is held).
        max_batch: most messages held at once.
    """

    def __init__(
        self,
        sock: zmq.Socket[Any],
        on_input: Callable[[], None] | None = None,
        *,
        connect_wait: float | None = None,
        endpoint: str = "",
        coalesce: Callable[[list[bytes]], bytes] | None = None,
        max_batch: int = 64,
    ) -> None:
        self.sock = sock
        #: for a socket made with ``immediate``: seconds a send waits for a connection
        self.connect_wait = connect_wait
        self.endpoint = endpoint
        self.fd: int = sock.FD
        # getsockopt(EVENTS) always returns an int; bound once, it is also a little faster
        self._getopt: Callable[[int], int] = sock.getsockopt  # type: ignore[assignment]
        self.lock = threading.Lock()
        self.on_input = on_input
        self.closed = False
        #: True while the last look at EVENTS found no input and nothing was received since:
        #: ZeroMQ will then signal the descriptor when input arrives, so a receiver may
        #: sleep on it without looking again.
        self.armed = False
        self._coalesce = coalesce
        self._max_batch = max_batch
        #: the messages held for a batch, in order (the same list for the socket's life:
        #: callers may test it without a call)
        self.held: list[bytes] = []
        self._spinner = Spinner()

    def hold(self, frame: Any) -> bool:
        """Hold a one-frame message to go out with others; False if it cannot be held (too
        large, or this socket does not batch): send it with :meth:`send` then. A full
        batch goes out at once."""
        if self._coalesce is None or type(frame) is not bytes or len(frame) > _HOLD_BELOW:
            return False
        with self.lock:
            if self.closed:
                return True  # dropped, as a send would be
            held = self.held
            held.append(frame)
            if len(held) >= self._max_batch:
                self._flush()
        return True

    def flush(self) -> None:
        """Send the held messages now (one message for all of them). Raises
        :class:`NotConnected` when ZeroMQ has no route for them, as :meth:`send` does."""
        if self.held:
            with self.lock:
                self._flush()

    def _flush(self) -> None:
        """Send what is held (lock held). Whoever flushes looks for input afterwards, as the
        send may have consumed the descriptor's signal."""
        held = self.held[:]
        self.held.clear()
        if held and not self.closed:
            assert self._coalesce is not None
            self.armed = False
            if not _try_send(self.sock, held if len(held) == 1 else [self._coalesce(held)]):
                raise _no_route(self.endpoint)

    def send(self, frames: Sequence[Any], *, report: bool = True, wait: bool = True) -> None:
        """Send one multipart message from any thread; never blocks (queues are unbounded).

        With ``connect_wait`` the message goes only over an established connection: the send
        waits up to ``connect_wait`` for one (``wait=False``: not at all), without holding the
        lock, then raises :class:`NotConnected`. Small frames are copied (cheaper than
        tracking them); large ones are sent without a copy, so the caller must not change
        them afterwards. ``report=False`` skips the check for waiting input: only for a
        caller that drains the socket right after.
        """
        deadline = None
        while True:
            with self.lock:
                if self.closed:
                    return
                if self.held:  # they were sent first
                    self._flush()
                sent = _try_send(self.sock, frames)
                if not sent and self.connect_wait is None:
                    raise _no_route(self.endpoint)
                if not sent:
                    self.armed = False  # the attempt may have taken the descriptor's signal
                    pending = 1
                elif report:
                    pending = self._getopt(_EVENTS) & _POLLIN
                    self.armed = not pending
                else:
                    pending = 0
                    self.armed = False  # the send may have consumed a signal: unknown now
            if pending and self.on_input is not None:
                self.on_input()  # a receiver looks again
            if sent:
                return
            assert self.connect_wait is not None
            now = time.monotonic()
            if deadline is None:
                deadline = now + (self.connect_wait if wait else 0.0)
            if now >= deadline:
                raise NotConnected(
                    f"no connection to {self.endpoint} within {self.connect_wait:g} s; "
                    "the call was not sent"
                )
            time.sleep(min(_CONNECT_LOOK, deadline - now))  # the lock is free meanwhile

    def recv_nowait(self, *, likely: bool = False) -> list[zmq.Frame] | None:
        """Receive one whole message, or ``None`` if nothing is waiting.

        ``likely`` (the descriptor just said so) tries at once; otherwise ``EVENTS`` is asked
        first, which is cheaper than a failed receive (pyzmq raises ``zmq.Again``).
        """
        with self.lock:
            sock = self.sock
            if self.closed:
                return None
            if likely:
                try:
                    frame = sock.recv(_NOBLOCK, copy=False)
                except zmq.Again:
                    self.armed = True
                    return None
            elif not self._getopt(_EVENTS) & _POLLIN:
                self.armed = True
                return None
            else:
                frame = sock.recv(_NOBLOCK, copy=False)
            self.armed = False
            frames = [frame]
            while frame.more:  # cheaper than asking RCVMORE (an enum lookup in pyzmq)
                frame = sock.recv(_NOBLOCK, copy=False)
                frames.append(frame)
            return frames

    def lost(self) -> bool:
        """With ``connect_wait``: True when the socket has no connection (the peer went away
        or never came) and nothing waits to be received. Always False without it. Reports
        waiting input like :meth:`has_input`."""
        if self.connect_wait is None:
            return False
        with self.lock:
            if self.closed:
                return False
            events = self._getopt(_EVENTS)
            pending = events & _POLLIN
            self.armed = not pending
        if pending and self.on_input is not None:
            self.on_input()
        return not events & (_POLLOUT | _POLLIN)

    def spin_for_input(self) -> bool:
        """Look for input without sleeping for up to the spin budget (``_spin.py``); True
        if some came. For the one thread about to sleep on the descriptor: a halted CPU
        wakes slowly, and an answer often comes within the budget."""
        return bool(self._spinner.look(self._peek_input))

    def _peek_input(self) -> bool:
        with self.lock:
            return not self.closed and bool(self._getopt(_EVENTS) & _POLLIN)

    def has_input(self) -> bool:
        """True if a message is waiting to be received.

        Asking may reset the descriptor's edge, so, like :meth:`send`, it reports waiting
        input through ``on_input`` for whoever sleeps on the descriptor.
        """
        with self.lock:
            pending = not self.closed and bool(self._getopt(_EVENTS) & _POLLIN)
            self.armed = not pending
        if pending and self.on_input is not None:
            self.on_input()
        return pending

    def close(self) -> None:
        """Close the socket at once, dropping anything unsent."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.sock.close(linger=0)


class _Waiter:
    """A socket whose owner waits in ZeroMQ's blocking receive, with a deadline."""

    __slots__ = ("_timeout_ms", "sock")
    sock: zmq.Socket[Any]
    _timeout_ms: int

    def _wait(self, timeout_ms: int, copy: bool = False) -> Any:
        """The first frame of the next message (bytes with ``copy``, else a ``zmq.Frame``), or
        None after ``timeout_ms``."""
        sock = self.sock
        if timeout_ms != self._timeout_ms:
            sock.setsockopt(_RCVTIMEO, timeout_ms)
            self._timeout_ms = timeout_ms
        try:
            return sock.recv(copy=copy)
        except zmq.Again:
            return None


class OwnedSocket(_Waiter):
    """A DEALER socket that one thread owns: it sends and then blocks in ZeroMQ's own receive.

    No lock, no descriptor polling: a blocking receive inside libzmq is the cheapest way to
    wait for a reply (measured: ~30 µs less per round trip than polling the descriptor and
    receiving without blocking). Only the owning thread may call :meth:`send` and :meth:`recv`;
    :meth:`close` may come from any thread once the owner is not inside either.
    """

    __slots__ = ("__weakref__", "closed", "connect_wait", "endpoint", "lock")

    def __init__(
        self,
        address: str,
        *,
        connect_wait: float | None = None,
        curve_server_key: str | None = None,
    ) -> None:
        self.sock, self.endpoint = connect_dealer(
            address, immediate=connect_wait is not None, curve_server_key=curve_server_key
        )
        #: see :func:`connect_dealer`: None, or seconds a send waits for a connection
        self.connect_wait = connect_wait
        self._timeout_ms = -1  # ZeroMQ's default: wait forever
        #: held by the owner while it uses the socket, so that another thread may close it
        #: only in between
        self.lock = threading.Lock()
        self.closed = False

    def send(self, frames: Sequence[Any], *, wait: bool = True) -> None:
        """Send one multipart message; small frames are copied, large ones are not.

        With ``connect_wait``, raises :class:`NotConnected` (nothing sent) if no connection
        is up within that many seconds (``wait=False``: at once).
        """
        if _try_send(self.sock, frames):
            return
        if self.connect_wait is None:
            raise _no_route(self.endpoint)
        deadline = time.monotonic() + (self.connect_wait if wait else 0.0)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1, _POLLOUT):
                raise NotConnected(
                    f"no connection to {self.endpoint} within {self.connect_wait:g} s; "
                    "the call was not sent"
                )
            if _try_send(self.sock, frames):  # the connection may drop again meanwhile
                return

    def lost(self) -> bool:
        """With ``connect_wait``: True when the socket has no connection (the peer went away
        or never came) and nothing waits to be received. Always False without it."""
        if self.connect_wait is None:
            return False
        return not self.sock.poll(0, _POLLOUT | _POLLIN)

    def recv(self, timeout_ms: int) -> list[zmq.Frame] | None:
        """Receive one whole message, waiting at most ``timeout_ms``; None if none came.

        A signal (Ctrl-C) interrupts the wait: pyzmq runs Python's signal handlers, so a
        ``KeyboardInterrupt`` is raised here.
        """
        frame = self._wait(timeout_ms)
        return None if frame is None else _whole(self.sock, frame, 0)

    def close(self) -> None:
        """Close the socket, dropping anything unsent."""
        if not self.closed:
            self.closed = True
            self.sock.close(linger=0)


def _whole(sock: zmq.Socket[Any], frame: zmq.Frame, flags: int) -> list[zmq.Frame]:
    """The frames of the message whose first frame is ``frame``."""
    frames = [frame]
    while frame.more:  # cheaper than asking RCVMORE (an enum lookup in pyzmq)
        frame = sock.recv(flags, copy=False)
        frames.append(frame)
    return frames


def _no_route(endpoint: str) -> NotConnected:
    """A socket without ``immediate`` queues messages for a connection to come, but after
    a failed handshake ZeroMQ drops the queue and has nowhere to put them."""
    return NotConnected(
        f"ZeroMQ has no route to {endpoint}: the connection failed its handshake (does the "
        "server use CURVE, and is its public key the one given?); the call was not sent"
    )


def _try_send(sock: zmq.Socket[Any], frames: Sequence[Any]) -> bool:
    """Send without blocking; False, with nothing sent, when ZeroMQ has no connection (or,
    without ``immediate``, no queue for one) to put it in. Once ZeroMQ takes the first
    frame, the rest of the message follows it and unbounded queues never block."""
    more = _SNDMORE if len(frames) > 1 else 0
    first, copy = _outgoing(frames[0])
    try:
        _send(sock, first, _NOBLOCK | more, copy=copy)
    except zmq.Again:
        return False
    if more:
        _send_frames(sock, frames[1:])
    return True


def _send_frames(sock: zmq.Socket[Any], frames: Sequence[Any]) -> None:
    last = len(frames) - 1
    for i, each in enumerate(frames):
        frame, copy = _outgoing(each)
        _send(sock, frame, _SNDMORE if i < last else 0, copy=copy)


def _outgoing(frame: Any) -> tuple[Any, bool]:
    """What to hand ZeroMQ for ``frame``, and whether to copy it.

    Bytes under :data:`_COPY_BELOW` are copied; anything larger is sent without a copy, which
    pyzmq tracks with a message to its garbage-collecting thread when ZeroMQ is done with it
    (a wake-up and the GIL, per frame). A memoryview of a whole received frame (a large value
    passed on, as a pipeline stage does) sends that ``zmq.Frame`` itself instead: ZeroMQ then
    shares the received buffer by reference count, and nothing needs tracking.
    """
    kind = type(frame)
    if kind is bytes:
        return frame, len(frame) < _COPY_BELOW
    if kind is memoryview:
        whole = frame.obj
        if type(whole) is zmq.Frame and frame.nbytes == len(whole) and frame.c_contiguous:
            return whole, False
    return frame, False


def _configure(sock: zmq.Socket[Any]) -> None:
    # Unbounded queues: a burst of output or results is never dropped by ZeroMQ; memory is
    # bounded instead by the callers (a thread pool, a client's outstanding calls).
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)


def connect_dealer(
    address: str, *, immediate: bool = False, curve_server_key: str | None = None
) -> tuple[zmq.Socket[Any], str]:
    """Connect a DEALER socket; ZeroMQ connects (and reconnects) in the background.

    By default messages sent while no connection is up wait in a queue for one. With
    ``immediate`` they are accepted only over an established connection, so a send can tell
    that the peer is not there (and that nothing was sent), and a socket whose peer went away
    stops being writable: what a client that can fail over to another server needs.
    ``curve_server_key`` (Z85): encrypt with CURVE, under a key pair made for this socket.
    """
    endpoint = parse_address(address)
    sock = context().socket(zmq.DEALER)
    _configure(sock)
    if curve_server_key is not None:
        public, secret = zmq.curve_keypair()
        sock.curve_serverkey = curve_server_key.encode("ascii")
        sock.curve_publickey = public
        sock.curve_secretkey = secret
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.RECONNECT_IVL, 50)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise ConnectError(f"cannot connect to {address!r}: {exc.strerror}") from exc
    return sock, endpoint
