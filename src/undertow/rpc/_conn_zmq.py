"""The sync client's ZeroMQ connection: a call's request goes out as frames and its
messages (output, items, the result or error) come back on the socket of the calling thread
(blocking calls) or on the shared one (futures, streams); see ``_sync_conn.py`` for how."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import msgspec

from undertow._util import address_host
from undertow.errors import ConnectError, ConnectionClosed, UndertowError
from undertow.rpc._calls import Call, Description, FunctionInfo, Protocol
from undertow.rpc._connection import ConnectOptions, Settings, timeout_error
from undertow.rpc._plain_link import PlainLink
from undertow.rpc._sync_conn import SyncConnection
from undertow.rpc._timing import explain_call
from undertow.security import client_key
from undertow.transport import PlainSocket, is_tls, load_public, shm_sending

__all__ = ["DESCRIBE", "CallFuture", "ZmqConnection", "zmq_protocol"]

log = logging.getLogger(__name__)

#: the function every server answers with its description
DESCRIBE = "_describe"
#: the call that asks a server for its description, over either ZeroMQ connection
DESCRIBE_INFO = FunctionInfo(DESCRIBE, input="msgpack", output="msgpack")
_PENDING = concurrent.futures._base.PENDING
_FINISHED = concurrent.futures._base.FINISHED
#: guards making a future's condition against settling the future without it
_CONDITIONS = threading.Lock()
_DONE = (
    concurrent.futures._base.CANCELLED,
    concurrent.futures._base.CANCELLED_AND_NOTIFIED,
    concurrent.futures._base.FINISHED,
)


def zmq_protocol(address: str, options: ConnectOptions) -> Protocol:
    """The encoder and decoder of a ZeroMQ client's messages (sync or async)."""
    key = client_key(options.token) if options.token else None
    proto = Protocol(
        address, key=key, codecs=options.codecs, safe_exceptions=options.safe_exceptions
    )
    proto.pointer = options.pointer
    return proto


class ZmqLinked:
    """What the sync and async ZeroMQ connections share: the protocol, a link (a
    ``SyncConnection`` or ``AsyncConnection``) made from the options, and the description."""

    def __init__(self, address: str, options: ConnectOptions, link: type[Any]) -> None:
        self.address = address
        self.proto = zmq_protocol(address, options)
        curve = options.curve_server_key
        self.link = link(
            address,
            connect_wait=options.connect_wait,
            key=self.proto.key,
            curve_server_key=None if curve is None else load_public(curve),
        )

    @property
    def closed(self) -> bool:
        return bool(self.link.closed)

    def _described(self, body: Any) -> Description:
        """The server's answer to DESCRIBE_INFO, whose size limit the protocol now keeps.
        (Tokens never travel over ZeroMQ, only signatures: no proof of a token is asked.)"""
        desc = msgspec.convert(body, Description)
        self.proto.max_message_size = desc.max_message_size
        return desc


#: seconds a client waits for the server's description after its plain socket went away
_REDESCRIBE_WAIT = 5.0


class ZmqConnection(ZmqLinked):
    """A sync client's connection to a server's ZeroMQ address (``tcp://``, ``ipc://``,
    ``inproc://``, ``host:port``)."""

    link: SyncConnection

    def __init__(self, address: str, options: ConnectOptions) -> None:
        super().__init__(address, options, SyncConnection)
        self._curve = options.curve_server_key
        self._tls = options.tls_ca  # verifies a tls+plain:// socket (None: not used)
        #: the server's plain socket, for blocking calls (``_plain_link.py``); None: ZeroMQ
        self.plain: PlainLink | None = None
        #: the last blocking call made through this connection (``undertow.explain(client)``)
        self.last_call: Call | None = None

    def describe(self, timeout: float | None, challenge: str | None = None) -> Description:
        try:
            body = self.call(DESCRIBE_INFO, (), {}, (timeout, False, None, False))
        except TimeoutError:
            raise timeout_error(self.address, timeout, connecting=True) from None
        desc = self._described(body)
        if self._curve is None:
            self._use_plain(_nearest(desc))
        elif is_tls(desc.plain):  # CURVE: never a socket in clear, not even the local one
            self._use_plain(desc.plain)
        return desc

    def _use_plain(self, address: str | None) -> None:
        """Make blocking calls over the plain socket at ``address`` from now on (None: none;
        a server that restarted may name another port)."""
        old = self.plain
        if address == (None if old is None else old.address):
            return
        self.plain = None
        if address:
            self.plain = PlainLink(
                address,
                key=self.proto.key,
                limit=None,
                on_unreachable=self._rediscover,
                tls=self._tls,
                server_name=address_host(self.address) or None,  # the host the user meant
            )
        if old is not None:
            old.close()

    def _rediscover(self) -> None:
        """The plain socket could not be reached: describe the server again, in the
        background (calls go over ZeroMQ meanwhile), to learn where it listens now."""

        def describe() -> None:
            with contextlib.suppress(UndertowError, TimeoutError):
                self.describe(_REDESCRIBE_WAIT)

        if not self.closed:
            threading.Thread(target=describe, name="undertow-redescribe", daemon=True).start()

    def call(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> Any:
        timeout, output, sink, pointer = how
        proto = self.proto
        call = self.last_call = Call(proto.next_id(), info.name, sink)
        frames = proto.request(
            call.call_id, info, args, kwargs, timeout=timeout, output=output, pointer=pointer
        )
        # Ctrl-C in a notebook or the deadline: the connection stops the remote call too
        deadline = None if timeout is None else time.monotonic() + timeout
        done = None
        if self.link.held:  # calls submitted before this one go out first
            self.link.flush()
        if self.plain is not None:
            done = self.plain.call(call, frames, deadline)
        if done is None:  # no plain socket (now): over ZeroMQ
            done = self.link.call(call, frames, deadline)
        if not done:
            raise timeout_error(proto.where(info.name), timeout)
        try:
            return proto.outcome(call)
        finally:  # kept for explain(): its header, not the answer's memory (a value's own)
            call.outcome = (call.outcome[0], []) if call.outcome is not None else None

    def stream(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> Iterator[Any]:
        timeout, output, sink, pointer = how
        call = Call(self.proto.next_id(), info.name, sink)
        frames = self.proto.request(
            call.call_id, info, args, kwargs, timeout=timeout, output=output, pointer=pointer
        )
        self.link.start(call, frames, then_drain=True)
        self.link.drain_nowait()
        return _Stream(self, call, timeout)

    def submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> CallFuture:
        timeout, output, sink, pointer = how
        proto = self.proto
        call = Call(proto.next_id(), info.name, sink)
        frames = proto.request(
            call.call_id, info, args, kwargs, timeout=timeout, output=output, pointer=pointer
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        future = CallFuture(self, call, deadline, timeout)
        call.notify = future._settle
        self.link.submit(call, frames, deadline, future._deadline_passed)
        return future

    def post(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
    ) -> None:
        """Send a one-way call: the server runs it and answers nothing (its errors are its
        own to report)."""
        proto = self.proto
        frames = proto.request(
            proto.next_id(), info, args, kwargs, timeout=timeout, output=False, reply=False
        )
        self.link.post(frames)

    def abandon(self, call: Call) -> None:
        """Stop waiting for ``call`` and ask the server to stop it."""
        self.link.forget(call)
        if not self.link.closed:
            self.link.send(self.proto.cancel_frames(call.call_id))

    def close(self) -> None:
        if self.plain is not None:
            self.plain.close()
        self.link.close()


class CallFuture(concurrent.futures.Future[Any]):
    """A :class:`concurrent.futures.Future` for a remote call; also awaitable in asyncio.

    ``cancel()`` works until the result arrives and tells the server to stop the call.
    """

    def __init__(
        self,
        owner: ZmqConnection | None = None,
        call: Call | None = None,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> None:
        # Future.__init__ without its Condition, which most futures never need: it is made
        # on first use (see __getattr__); until then set_result takes a shorter path.
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[concurrent.futures.Future[Any]], object]] = []
        self._owner = owner
        self._call = call
        self._deadline = deadline
        self._timeout = timeout  # the call's deadline in seconds, for the error
        self._once = [True]  # popped by whichever of result, expiry or cancel comes first

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()

    def explain(self) -> str:
        """Where the call's time went: here before it went out, on the way, on the server
        before, while and after its function ran, and showing its output
        (``undertow.explain(future)``)."""
        if self._call is None or self._owner is None:
            return "a future made by hand: no call to explain"
        return explain_call(self._call, self._owner.address)

    _explain_call = explain

    def __getattr__(self, name: str) -> Any:
        if name != "_condition":
            raise AttributeError(name)
        with _CONDITIONS:
            cond = self.__dict__.get("_condition")
            if cond is None:
                cond = self.__dict__["_condition"] = threading.Condition()
        return cond

    def _settle_unwatched(self, result: Any, exception: BaseException | None) -> bool:
        """Finish the future if no thread ever used its condition (so none waits on it)."""
        with _CONDITIONS:
            if "_condition" in self.__dict__:
                return False
            if self._state in _DONE:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            self._result, self._exception = result, exception
            self._state = _FINISHED
        if self._done_callbacks:
            self._invoke_callbacks()
        return True

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[Any]], object]) -> None:
        """Call ``fn(future)`` once the future is done (at once if it is). Without making the
        future's condition, as long as no thread used it: settling then stays on the short
        path (a future driven by callbacks costs no lock of its own)."""
        with _CONDITIONS:
            # No condition yet: whoever settles or cancels makes one under this lock first,
            # or settles here, so this callback is either seen by them or finds it done.
            quick = "_condition" not in self.__dict__
            if quick and self._state not in _DONE:
                self._done_callbacks.append(fn)
                return
        if not quick:
            super().add_done_callback(fn)
            return
        try:  # done already, settled on the short path: call it now, as Future does
            fn(self)
        except Exception:
            log.exception("exception calling callback for %r", self)

    def set_result(self, result: Any) -> None:
        if not self._settle_unwatched(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._settle_unwatched(None, exception):
            super().set_exception(exception)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == _FINISHED:
            return self._exception
        return super().exception(timeout)

    def _claim(self) -> bool:
        try:
            self._once.pop()
        except IndexError:
            return False
        return True

    def _settle(self) -> None:
        """The call's outcome arrived (runs in the receiving thread)."""
        call, owner = self._call, self._owner
        if call is None or owner is None or not call.done or not self._claim():
            return
        owner.link.forget(call)
        try:
            result = owner.proto.outcome(call)
        except BaseException as exc:  # the remote error becomes the future's exception
            self.set_exception(exc)
        else:
            self.set_result(result)

    def _deadline_passed(self, reason: BaseException) -> None:
        """The deadline passed (``TimeoutError``: said as the call's timeout error), or the
        connection closed or dropped (``reason`` as it is)."""
        call, owner = self._call, self._owner
        if type(reason) is TimeoutError and call is not None and owner is not None:
            reason = timeout_error(owner.proto.where(call.name), self._timeout)
        self._expire(reason)

    def _expire(self, reason: BaseException) -> None:
        """The deadline passed, or the client closed."""
        if self._call is not None and self._owner is not None and self._claim():
            self._owner.abandon(self._call)
            self.set_exception(reason)

    def result(self, timeout: float | None = None) -> Any:
        """The call's result, waiting up to ``timeout`` seconds.

        The waiting thread receives for the connection itself when no other thread does,
        so waiting on a future costs no more than a blocking call.
        """
        if self._state == _FINISHED and self._exception is None:
            return self._result  # the common case once the call is done: no lock
        call, owner = self._call, self._owner
        if call is not None and owner is not None and self._state not in _DONE:
            mine = None if timeout is None else time.monotonic() + timeout
            limits = [t for t in (mine, self._deadline) if t is not None]
            until = min(limits) if limits else None
            with contextlib.suppress(ConnectionClosed):  # reported by the future itself
                owner.link.wait(call, lambda: call.done or self._state != _PENDING, until)
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._deadline_passed(TimeoutError())
            if mine is not None:
                timeout = max(0.0, mine - time.monotonic())
        if self._state == _FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)

    def done(self) -> bool:
        """True once the call has finished, failed or been cancelled.

        Reads the state without the future's lock (a single attribute read is atomic):
        ``result()`` and the receive loop ask this often.
        """
        return self._state in _DONE

    def cancel(self) -> bool:
        """Cancel the call if it has not finished; the server is asked to stop it."""
        if self._call is not None and self._owner is not None and self._claim():
            self._owner.abandon(self._call)
        return super().cancel()


#: what :meth:`StreamItems._take_item` returns once the stream has ended
END = object()


class StreamItems:
    """What the sync and async streams share: taking the next buffered item, and asking the
    server for more as items are consumed (flow control)."""

    _owner: ZmqLinked
    _call: Call
    _finished: bool
    _consumed: int

    def _take_item(self) -> Any:
        """The next item, or :data:`END` once the call ended (its error raised, if any)."""
        call, proto = self._call, self._owner.proto
        if call.items:
            header, frames = call.items.popleft()
            self._consumed += 1
            credit = proto.credit_frames(call.call_id, self._consumed)
            if credit is not None and not call.done:
                self._owner.link.send(credit)
            return proto.decode_value(call, header, frames)
        self._finished = True
        proto.outcome(call)  # raises the remote error, if any
        return END


def _nearest(desc: Description) -> str | None:
    """The plain address to use: the server's local socket when this client is on its host
    (the socket file is there and answers) and sends large frames through shared memory,
    else its TCP one. (Without shared memory, TCP moved large messages faster and steadier
    than a Unix socket on the test machine: 100 MB at 1.5-2.1 GB/s against 0.2-2.0.)"""
    if desc.local and desc.plain and shm_sending():
        try:
            PlainSocket(desc.local, timeout=0.5).close()
        except ConnectError:
            return desc.plain
        return desc.local
    return desc.plain


class _Stream(StreamItems, Iterator[Any]):
    """Iterates over the items a remote generator yields, as they arrive."""

    _owner: ZmqConnection

    def __init__(self, owner: ZmqConnection, call: Call, timeout: float | None) -> None:
        self._owner = owner
        self._call = call
        self._timeout = timeout
        self._finished = False
        self._consumed = 0

    def __repr__(self) -> str:
        return f"<remote stream {self._call.name}() [{len(self._call.items)} buffered]>"

    def __next__(self) -> Any:
        call, proto = self._call, self._owner.proto
        if self._finished:
            raise StopIteration
        if not call.items and not call.done:
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            try:
                ready = self._owner.link.wait(call, lambda: bool(call.items) or call.done, deadline)
            except BaseException:  # Ctrl-C while waiting for an item: stop the generator too
                self.close()
                raise
            if not ready:
                self.close()
                raise timeout_error(proto.where(call.name), self._timeout)
        item = self._take_item()
        if item is END:
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the stream early; the server stops the generator at its next item."""
        if not self._finished:
            self._finished = True
            if not self._call.done:
                self._owner.abandon(self._call)

    def __del__(self) -> None:
        if not self._finished and not self._call.done and not self._owner.link.closed:
            self.close()
