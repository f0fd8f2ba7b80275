"""One call received by a server, and the means to answer it from any thread.

A call that came over ZeroMQ is answered with frames encoded by the function's codec, sent
on the server's socket. A call that came another way (HTTP) may instead carry its arguments
already decoded and take its answers as Python values (:attr:`Incoming.values`), so that
nothing is encoded only to be decoded again; its subclass says where the answers go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from undertow.rpc._flow import StreamCredit
from undertow.rpc._metrics import CallStats
from undertow.rpc._receivers import Job
from undertow.rpc._tracing import call_span
from undertow.wire import ErrorInfo, Flags, Header, Kind, encode_error, pack

if TYPE_CHECKING:
    from undertow.transport import ServerSocket

_clock = time.perf_counter_ns

__all__ = ["VALUE", "Arguments", "CallTable", "Incoming", "RawHandler"]

_NO_OUTPUT = int(Flags.NO_OUTPUT)
_NO_REPLY = int(Flags.NO_REPLY)
#: the codec name of an answer that is a Python value, not encoded frames
VALUE = "value"
#: a call's positional and keyword arguments
Arguments = tuple[Sequence[Any], dict[str, Any]]


class CallTable(Protocol):
    """What an :class:`Incoming` needs of the server that received it."""

    #: where answers go out (None once the server closed)
    _sock: ServerSocket | None
    #: the calls not answered yet, by peer and call id
    _active: dict[tuple[bytes, int], Incoming]
    #: each answered call is counted there
    stats: CallStats


class Incoming:
    """One call received by a server, and the means to answer it from any thread.

    Exactly one of :meth:`reply`, :meth:`fail` or :meth:`end` finishes the call; later
    answers are dropped, so a deadline and a late result cannot both reach the caller.
    """

    __slots__ = (
        "_once",
        "_server",
        "began",
        "cancelled",
        "credit",
        "ended",
        "frames",
        "header",
        "identity",
        "lines",
        "peer",
        "seal",
        "sent",
        "started",
        "via",
    )

    #: False: answers are frames encoded by the function's codec (:meth:`reply`,
    #: :meth:`item`); True (a subclass's): Python values (:meth:`reply_value`,
    #: :meth:`item_value`), encoded once by whoever reads them
    values = False
    #: the arguments, already decoded by a subclass's transport; None: the body frame
    #: holds them, encoded by the call's codec
    arguments: Arguments | None = None

    def __init__(
        self,
        server: CallTable,
        peer: bytes,
        header: Header,
        frames: list[Any],
        identity: str | None = None,
        seal: Callable[[list[Any]], list[Any]] | None = None,
        via: Any = None,
    ) -> None:
        #: when the call was taken apart (its time runs until it is answered), and when its
        #: function started and returned (0: it has not; a server's own operations leave
        #: them so, and count as having run from the arrival to the answer); nanoseconds of
        #: ``perf_counter_ns``, whose differences are the answer's timings with no arithmetic
        self.started = _clock()
        self.began = self.ended = 0
        #: bytes of the answers sent so far, lines of output sent
        self.sent, self.lines = 0, 0
        self._server = server
        self.peer = peer
        #: the socket the call came in on, when it is not the server's ZeroMQ socket (a
        #: plain-socket hub): answers go back through it
        self.via = via
        self.header = header
        #: payload frames: the body, then any out-of-band buffers
        self.frames = frames
        #: who signed the call (None: an anonymous caller)
        self.identity = identity
        #: signs each answer with the caller's key (None: answers go unsigned)
        self.seal = seal
        self._once = [True]  # popped by whoever answers first
        #: set when the caller sent CANCEL; long-running handlers may poll it
        self.cancelled = False
        #: flow control of a stream, set by whoever runs a generator
        self.credit: StreamCredit | None = None

    def __repr__(self) -> str:
        state = "answered" if self.finished else "cancelled" if self.cancelled else "open"
        return f"<Incoming {self.header.name}() call {self.header.call_id} [{state}]>"

    @property
    def name(self) -> str:
        """The function the caller asked for."""
        return self.header.name

    @property
    def wants_output(self) -> bool:
        """False when the caller switched remote output off for this call."""
        return not (self.header.flags & _NO_OUTPUT)

    @property
    def log_id(self) -> str:
        """The call's id on log records: ``SERVER/PEER/NUMBER``."""
        where = getattr(self._server, "name", "http")
        return f"{where}/{self.peer.hex()[:8]}/{self.header.call_id}"

    @property
    def finished(self) -> bool:
        """True once the call has been answered."""
        return not self._once

    def _send(
        self,
        kind: Kind,
        payload: Sequence[Any],
        *,
        name: str = "",
        codec: str = "",
        ends: bool = False,
    ) -> None:
        sock = self._server._sock if self.via is None else self.via
        if sock is not None and not self.header.flags & _NO_REPLY:  # closed; one-way
            if ends:  # the call's timings here ride in its answer (see _timing)
                now = _clock()
                began, ended = self.began, self.ended
                timing = (
                    (began - self.started, (ended or now) - began, now - (ended or now))
                    if began
                    else self._timing(now)
                )
            else:
                now, timing = 0, None
            frames = pack(kind, self.header.call_id, payload, name=name, codec=codec, timing=timing)
            if self.seal is not None:
                frames = self.seal(frames)
            self.sent += len(frames[0]) if len(frames) == 1 else sum(map(_nbytes, frames))
            if ends:  # counted before it goes: whoever it reaches finds it counted
                self._count(kind, now)
            sock.send(self.peer, frames, hold=ends)
        elif ends:
            self._count(kind, _clock())

    def _timing(self, now: int) -> tuple[int, int, int]:
        """Where the call's time went here, in nanoseconds: before its function started,
        while it ran, after it returned (until ``now``, the answer)."""
        began, ended = self.began, self.ended
        if not began:  # a server's own operation: all of it counts as running
            return 0, now - self.started, 0
        if not ended:  # answered while the function still runs (its deadline passed)
            ended = now
        return began - self.started, ended - began, now - ended  # (inlined in _send)

    def _finish(self) -> bool:
        # list.pop() is atomic under the GIL: exactly one caller gets the token.
        try:
            self._once.pop()
        except IndexError:
            return False
        self._server._active.pop((self.peer, self.header.call_id), None)
        return True

    def _count(self, kind: Kind, now: int) -> None:
        """Count the call, answered now with ``kind`` (a result, an error, a stream's end),
        in the server's figures (bytes received: its payload, the arguments' encoding and
        any frames of their own)."""
        failed = kind is Kind.ERROR
        seconds = (now - self.started) * 1e-9
        frames = self.frames  # one frame: a view of bytes (its length is its size)
        received = len(frames[0]) if len(frames) == 1 else sum(map(_nbytes, frames))
        stats = self._server.stats
        stats.record(self.header.name, seconds, failed, received, self.sent, self.lines)
        if stats.tracer is not None:
            call_span(stats.tracer, self, getattr(self._server, "name", "http"), failed, now)

    def reply(self, payload: Sequence[Any], codec: str) -> bool:
        """Send the result, already encoded by ``codec``; False if the call was answered already."""
        if not self._finish():
            return False
        self._send(Kind.RESULT, payload, codec=codec, ends=True)
        return True

    def reply_value(self, value: Any) -> bool:
        """Send the result as a Python value (only where :attr:`values` is True); False if
        the call was answered already."""
        if not self._finish():
            return False
        self._send(Kind.RESULT, (value,), codec=VALUE, ends=True)
        return True

    def fail(self, info: ErrorInfo) -> bool:
        """Send an error; False if the call was answered already."""
        if not self._finish():
            return False
        self._send(Kind.ERROR, [encode_error(info)], ends=True)
        return True

    def end(self) -> bool:
        """Close a stream of items; False if the call was answered already."""
        if not self._finish():
            return False
        self._send(Kind.END, (), ends=True)
        return True

    def item(self, payload: Sequence[Any], codec: str) -> None:
        """Send one streamed item, already encoded by ``codec``."""
        if self._once:
            self._send(Kind.ITEM, payload, codec=codec)

    def item_value(self, value: Any) -> None:
        """Send one streamed item as a Python value (only where :attr:`values` is True)."""
        if self._once:
            self._send(Kind.ITEM, (value,), codec=VALUE)

    def output(self, stream: str, text: str) -> None:
        """Send text the handler wrote to ``stream`` (``"stdout"`` or ``"stderr"``)."""
        if self._once:
            self.lines += text.count("\n")
            self._send(Kind.OUTPUT, [text.encode("utf-8", "replace")], name=stream, codec="text")


def _nbytes(frame: Any) -> int:
    return len(frame) if type(frame) is bytes else memoryview(frame).nbytes


#: A raw handler gets the Incoming call in the receiving thread and must not block: it
#: answers at once, forwards the call (to the loop, say), or returns a job for a pool thread.
RawHandler = Callable[[Incoming], Job | None]
