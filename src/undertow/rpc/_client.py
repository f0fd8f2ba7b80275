"""The sync client: remote functions as attributes, called from any number of threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import Any

import msgspec

from undertow.errors import ConnectionClosed, RPCTimeout
from undertow.rpc._calls import (
    Call,
    Description,
    FunctionInfo,
    OutputCallback,
    Protocol,
)
from undertow.rpc._functions import CallOptions, RemoteFunctions
from undertow.rpc._plane import make_pointer
from undertow.rpc._sync_conn import SyncConnection
from undertow.security import client_key, find_client_token
from undertow.transport import load_public

__all__ = ["CallFuture", "Client", "connect", "functions"]

DESCRIBE = "_describe"
DEFAULT_TIMEOUT = 30.0
_STREAMING = ("generator", "asyncgen")
_PENDING = concurrent.futures._base.PENDING
_FINISHED = concurrent.futures._base.FINISHED
#: guards making a future's condition against settling the future without it
_CONDITIONS = threading.Lock()
_DONE = (
    concurrent.futures._base.CANCELLED,
    concurrent.futures._base.CANCELLED_AND_NOTIFIED,
    concurrent.futures._base.FINISHED,
)


class CallFuture(concurrent.futures.Future[Any]):
    """A :class:`concurrent.futures.Future` for a remote call; also awaitable in asyncio.

    ``cancel()`` works until the result arrives and tells the server to stop the call.
    """

    def __init__(
        self,
        client: Client | None = None,
        call: Call | None = None,
        deadline: float | None = None,
        on_deadline: Callable[[BaseException], None] | None = None,
    ) -> None:
        # Future.__init__ without its Condition, which most futures never need: it is made
        # on first use (see __getattr__); until then set_result takes a shorter path.
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[concurrent.futures.Future[Any]], object]] = []
        self._client = client
        self._call = call
        self._deadline = deadline
        self._on_deadline = on_deadline or self._expire
        self._once = [True]  # popped by whichever of result, expiry or cancel comes first

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()

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
        call, client = self._call, self._client
        if call is None or client is None or not call.done or not self._claim():
            return
        client._conn.forget(call)
        try:
            result = client._proto.outcome(call)
        except BaseException as exc:  # the remote error becomes the future's exception
            self.set_exception(exc)
        else:
            self.set_result(result)

    def _expire(self, reason: BaseException) -> None:
        """The deadline passed, or the client closed."""
        if self._call is not None and self._client is not None and self._claim():
            self._client._abandon(self._call)
            self.set_exception(reason)

    def result(self, timeout: float | None = None) -> Any:
        """The call's result, waiting up to ``timeout`` seconds.

        The waiting thread receives for the connection itself when no other thread does,
        so waiting on a future costs no more than a blocking call.
        """
        if self._state == _FINISHED and self._exception is None:
            return self._result  # the common case once the call is done: no lock
        call, client = self._call, self._client
        if call is not None and client is not None and self._state not in _DONE:
            mine = None if timeout is None else time.monotonic() + timeout
            limits = [t for t in (mine, self._deadline) if t is not None]
            until = min(limits) if limits else None
            with contextlib.suppress(ConnectionClosed):  # reported by the future itself
                client._conn.wait(call, lambda: call.done or self._state != _PENDING, until)
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._on_deadline(TimeoutError())
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
        if self._call is not None and self._client is not None and self._claim():
            self._client._abandon(self._call)
        return super().cancel()


def _timeout_error(proto: Protocol, name: str, timeout: float | None) -> RPCTimeout:
    return RPCTimeout(
        f"{proto.where(name)} did not answer within {timeout:g} s "
        "(is the server running? raise the deadline with .options(timeout=...))"
    )


class _ClientBase(RemoteFunctions):
    """Settings, the function table and the protocol; shared by :class:`Client` and
    ``AsyncClient``."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None,
        token: str | bool | None,
        codecs: Mapping[str, Any] | None,
        safe_exceptions: Iterable[type[BaseException]],
        output: bool | OutputCallback,
        curve_server_key: Any = None,
    ) -> None:
        super().__init__(address, timeout=timeout, output=output)
        found = find_client_token(token)
        key = client_key(found) if found else None
        self._proto = Protocol(address, key=key, codecs=codecs, safe_exceptions=safe_exceptions)
        self._proto.pointer = functools.partial(make_pointer, via=self)
        self._curve = None if curve_server_key is None else load_public(curve_server_key)

    def _install(self, body: Any, invoke: Any, submit: Any) -> None:
        desc = msgspec.convert(body, Description)
        self._proto.max_message_size = desc.max_message_size
        self._install_functions(desc, invoke, submit)

    def _prepare(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> tuple[Call, list[Any], float | None, float | None]:
        timeout, output, sink = self._settings(opts)
        call = Call(self._proto.next_id(), info.name, sink)
        frames = self._proto.request(
            call.call_id,
            info,
            args,
            kwargs,
            timeout=timeout,
            output=output,
            pointer=opts.return_pointer,
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        return call, frames, deadline, timeout


class Client(_ClientBase):
    """A connection to an undertow server whose attributes are the server's functions.

    On creation it asks the server for its functions, waiting up to ``connect_timeout`` for
    the server to come up. Each remote function carries its real signature and docstring::

        client = undertow.connect("tcp://127.0.0.1:5555")
        client.add(1, 2)                       # blocks, prints remote output as it comes
        future = client.add.submit(1, 2)       # concurrent.futures-style, also awaitable
        client.add.options(timeout=5)(1, 2)    # per-call deadline
        for row in client.rows(10): ...        # generator functions stream

    A function whose name collides with a method of the client is reachable as
    ``client["close"]``. The client is safe to use from many threads at once.

    Args:
        address: ``tcp://host:port``, ``host:port``, ``ipc://path`` or ``inproc://name``.
        timeout: default deadline of each call in seconds (None waits forever).
        connect_timeout: how long to wait for the server on creation (default: ``timeout``).
        token: this client's token (``NAME.SECRET``): every message is signed with it and
            the server's replies must be signed with it too. Default: ``$UNDERTOW_TOKEN``,
            else ``token`` in ``~/.undertow/config.toml``; False: no token at all.
        codecs: extra codecs by name, for functions with a custom serialization.
        safe_exceptions: exception types raised as themselves when the server raises them.
        output: True prints remote output locally, False drops it (and asks the server not
            to send it), or a callable ``(stream, text)`` that receives it.
        connect_wait: None (default): a call made while the server is away waits for it
            within its deadline. A number of seconds: calls are sent only over an
            established connection; one waits at most this long for it and then raises
            :class:`~undertow.errors.NotConnected` (nothing was sent), and a blocking call
            whose connection drops raises :class:`~undertow.errors.ConnectionLost` at once.
            For clients that can go elsewhere, such as a service's several instances.
        curve_server_key: the server's CURVE public key (Z85 text, or its ``.key`` file):
            the connection is encrypted, and only that server can answer.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        token: str | bool | None = None,
        codecs: Mapping[str, Any] | None = None,
        safe_exceptions: Iterable[type[BaseException]] = (),
        output: bool | OutputCallback = True,
        connect_wait: float | None = None,
        curve_server_key: Any = None,
    ) -> None:
        super().__init__(
            address,
            timeout=timeout,
            token=token,
            codecs=codecs,
            safe_exceptions=safe_exceptions,
            output=output,
            curve_server_key=curve_server_key,
        )
        if connect_wait is not None and connect_wait <= 0:
            raise ValueError(
                f"connect_wait must be a positive number of seconds or None, not {connect_wait!r}"
            )
        self._conn = SyncConnection(
            address, connect_wait=connect_wait, key=self._proto.key, curve_server_key=self._curve
        )
        try:
            self.refresh(timeout=connect_timeout if connect_timeout is not None else timeout)
        except BaseException:
            self._conn.close()
            raise

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._bound:
            self.refresh()
        return self._lookup(name)

    def refresh(self, timeout: float | None = None) -> None:
        """Ask the server again for its functions (after it added or changed some)."""
        info = FunctionInfo(DESCRIBE, input="msgpack", output="msgpack")
        body = self._invoke(
            info, (), {}, CallOptions(timeout=timeout or self.timeout, output=False)
        )
        self._install(body, self._invoke, self._submit)

    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the remote function ``name``; the same as ``client.name(*args, **kwargs)``."""
        return self._lookup(name)(*args, **kwargs)

    def submit(self, name: str, /, *args: Any, **kwargs: Any) -> CallFuture:
        """Start the remote function ``name`` and return a future for its result."""
        fn: Any = self._lookup(name)
        result: CallFuture = fn.submit(*args, **kwargs)
        return result

    def close(self) -> None:
        """Close the connection; calls still waiting raise :class:`ConnectionClosed`."""
        self._conn.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return bool(self._conn.closed)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the calls ----------------------------------------------------------------------------

    def _invoke(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        call, frames, deadline, timeout = self._prepare(info, args, kwargs, opts)
        if info.mode in _STREAMING:
            self._conn.start(call, frames, then_drain=True)
            self._conn.drain_nowait()
            return _Stream(self, call, timeout)
        # Ctrl-C in a notebook or the deadline: the connection stops the remote call too
        if not self._conn.call(call, frames, deadline):
            raise _timeout_error(self._proto, info.name, timeout)
        return self._proto.outcome(call)

    def _submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> CallFuture:
        if info.mode in _STREAMING:
            raise TypeError(
                f"{info.name}() is a generator function; iterate over {info.name}(...) instead"
            )
        call, frames, deadline, timeout = self._prepare(info, args, kwargs, opts)
        proto = self._proto

        def expire(reason: BaseException) -> None:
            if type(reason) is TimeoutError:  # the deadline, not a closed or lost connection
                reason = _timeout_error(proto, info.name, timeout)
            future._expire(reason)

        future = CallFuture(self, call, deadline, expire)

        call.notify = future._settle
        self._conn.submit(call, frames, deadline, expire)
        return future

    def _abandon(self, call: Call) -> None:
        self._conn.forget(call)
        if not self._conn.closed:
            self._conn.send(self._proto.cancel_frames(call.call_id))


class _Stream(Iterator[Any]):
    """Iterates over the items a remote generator yields, as they arrive."""

    def __init__(self, client: Client, call: Call, timeout: float | None) -> None:
        self._client = client
        self._call = call
        self._timeout = timeout
        self._finished = False
        self._consumed = 0

    def __repr__(self) -> str:
        return f"<remote stream {self._call.name}() [{len(self._call.items)} buffered]>"

    def __next__(self) -> Any:
        call, proto = self._call, self._client._proto
        if self._finished:
            raise StopIteration
        if not call.items and not call.done:
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            try:
                ready = self._client._conn.wait(
                    call, lambda: bool(call.items) or call.done, deadline
                )
            except BaseException:  # Ctrl-C while waiting for an item: stop the generator too
                self.close()
                raise
            if not ready:
                self.close()
                raise _timeout_error(proto, call.name, self._timeout)
        if call.items:
            header, frames = call.items.popleft()
            self._consumed += 1
            credit = proto.credit_frames(call.call_id, self._consumed)
            if credit is not None and not call.done:
                self._client._conn.send(credit)
            return proto.decode_value(call, header, frames)
        self._finished = True
        proto.outcome(call)  # raises the remote error, if any
        raise StopIteration

    def close(self) -> None:
        """Stop the stream early; the server stops the generator at its next item."""
        if not self._finished:
            self._finished = True
            if not self._call.done:
                self._client._abandon(self._call)

    def __del__(self) -> None:
        if not self._finished and not self._call.done and not self._client._conn.closed:
            self.close()


def functions(client: _ClientBase) -> dict[str, Callable[..., Any]]:
    """The remote functions of a ``Client`` or ``AsyncClient``, by name, as last described."""
    return dict(client._bound)


def connect(address: str, **options: Any) -> Any:
    """Connect to the server at ``address``; options are those of :class:`Client`.

    An ``http://`` or ``https://`` address gives an :class:`~undertow.rpc.HttpClient` (the
    ``http`` extra), with the same API.
    """
    if address.startswith(("http://", "https://")):
        from undertow.rpc._http_client import HttpClient

        return HttpClient(address, **options)
    return Client(address, **options)
