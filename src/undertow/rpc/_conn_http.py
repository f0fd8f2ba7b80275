"""The clients' HTTP connections: ``undertow.connect("http://host:port")``.

A call goes out as a msgpack body and comes back as an NDJSON stream of events (output,
items, then the result or the error), through ``HttpCaller`` / ``AsyncHttpCaller`` in
``transport/_http_client.py``, so output appears while the call runs. The server decodes the
body once and hands the arguments to the function as they are (it applies the function's own
codec only where that changes them), so a client needs no codec of its own; arguments and
results must be plain values (numbers, strings, lists, dicts, bytes): use the ZeroMQ address
for numpy arrays and pickle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec

from undertow.errors import ConnectError, ConnectionClosed
from undertow.rpc._calls import Description, FunctionInfo, OutputCallback
from undertow.rpc._connection import ConnectOptions, Settings, timeout_error
from undertow.transport import AsyncHttpCaller, CallFailed, HttpCaller
from undertow.wire import POINTER_TYPE, ErrorInfo, rebuild

__all__ = ["AsyncHttpConnection", "HttpConnection"]

_encode = msgspec.msgpack.Encoder().encode
#: what :meth:`_HttpBase._event` returns for an event that does not end the call
_MORE = object()


class _HttpBase:
    """What both HTTP connections share: the request body, and what each event means."""

    def __init__(self, address: str, options: ConnectOptions) -> None:
        self.address = address.rstrip("/")
        self._safe = options.safe_exceptions
        self._pointer = options.pointer

    @staticmethod
    def _body(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        return _encode({"args": list(args), "kwargs": kwargs})

    def _value(self, value: Any) -> Any:
        """A result or item: a pointer's JSON form becomes a :class:`~undertow.Pointer`."""
        if type(value) is dict and value.get("type") == POINTER_TYPE and self._pointer:
            return self._pointer(value)
        return value

    def _event(self, kind: str, value: Any, sink: OutputCallback | None, name: str) -> Any:
        """Apply one event: output goes to ``sink``, an error is raised; the call's result,
        or :data:`_MORE` while the call goes on."""
        if kind in ("stdout", "stderr"):
            if sink is not None:
                sink(kind, value)
            return _MORE
        if kind == "error":
            raise self._error(CallFailed(value), name)
        if kind != "result":
            return _MORE
        return self._value(value)

    def _error(self, failed: CallFailed, name: str) -> BaseException:
        info = failed.info
        message = str(info.get("message", ""))
        described = ErrorInfo(
            type=str(info.get("type", "RemoteError")),
            message=message,
            # built with its message, as over ZeroMQ
            args=list(info.get("args") or ([message] if message else [])),
            traceback=str(info.get("traceback", "")),
            code=str(info.get("code") or "remote"),
            available=list(info.get("available") or []),
        )
        exc = rebuild(described, where=f"{name}() at {self.address}", safe_types=self._safe)
        exc.__suppress_context__ = True  # the remote traceback is its cause, if it has one
        return exc

    @contextlib.contextmanager
    def _translated(self, name: str, timeout: float | None) -> Iterator[None]:
        """The transport's failures as the errors a caller gets."""
        try:
            yield
        except CallFailed as failed:
            raise self._error(failed, name)  # noqa: B904 - its cause is the remote traceback
        except TimeoutError:
            raise timeout_error(f"{name}() at {self.address}", timeout) from None

    @contextlib.contextmanager
    def _describing(self, timeout: float | None) -> Iterator[None]:
        """The failures of asking for the functions, worded for connecting."""
        try:
            yield
        except CallFailed as failed:
            raise self._error(failed, "functions")  # noqa: B904 - the server's own error
        except TimeoutError:
            raise timeout_error(self.address, timeout, connecting=True) from None
        except ConnectError as exc:
            raise ConnectError(
                f"nothing answered at {self.address} ({exc.__cause__ or exc}): is a server "
                "running there with HTTP on (Server.start(http_port=...))?"
            ) from exc


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class HttpConnection(_HttpBase):
    """A sync client's connection to a server's HTTP address; thread-safe."""

    def __init__(self, address: str, options: ConnectOptions) -> None:
        super().__init__(address, options)
        self._options = options
        self._caller = HttpCaller(self.address, options.token)
        #: runs futures, made on the first
        self._background: _Background | None = None
        self._background_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._caller.closed

    def describe(self, timeout: float | None, challenge: str | None = None) -> Description:
        with self._describing(timeout):
            described = self._caller.functions(timeout, challenge)
        return msgspec.convert(described, Description)

    def call(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> Any:
        timeout, _, sink, pointer = how
        body = self._body(args, kwargs)
        events = self._caller.events(info.name, body, _deadline(timeout), pointer=pointer)
        return self._result(info.name, events, sink, timeout)

    def _result(
        self,
        name: str,
        events: Iterator[tuple[str, Any]],
        sink: OutputCallback | None,
        timeout: float | None,
    ) -> Any:
        # closing: a caller that stops waiting (Ctrl-C) hangs up, which stops the call
        with self._translated(name, timeout), contextlib.closing(events):  # type: ignore[type-var]
            for kind, value in events:
                if (result := self._event(kind, value, sink, name)) is not _MORE:
                    return result
        return None

    def stream(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> Iterator[Any]:
        timeout, _, sink, pointer = how
        body = self._body(args, kwargs)
        # as over ZeroMQ, the deadline is for each item
        events = self._caller.events(info.name, body, None, wait=timeout, pointer=pointer)
        return self._items(info.name, events, sink, timeout)

    def _items(
        self,
        name: str,
        events: Iterator[tuple[str, Any]],
        sink: OutputCallback | None,
        timeout: float | None,
    ) -> Iterator[Any]:
        # closing: a caller that stops early stops the remote generator
        with self._translated(name, timeout), contextlib.closing(events):  # type: ignore[type-var]
            for kind, value in events:
                if kind == "item":
                    yield self._value(value)
                else:
                    self._event(kind, value, sink, name)

    def submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> concurrent.futures.Future[Any]:
        """A future for the call, which runs on the connection's background loop; it stays
        pending while the call runs, so that ``cancel()`` works until the result arrives
        (the loop then hangs up, which stops the call)."""
        timeout, _, sink, pointer = how
        body = self._body(args, kwargs)
        with self._background_lock:
            if self.closed:
                raise ConnectionClosed(f"the client for {self.address} is closed")
            if self._background is None:
                self._background = _Background(self.address, self._options)
            background = self._background
        return background.submit(info.name, body, sink, timeout, pointer)

    def close(self) -> None:
        """Close the connection; futures still waiting raise :class:`ConnectionClosed`."""
        with self._background_lock:
            self._caller.close()
            background, self._background = self._background, None
        if background is not None:
            background.close(ConnectionClosed(f"the client for {self.address} was closed"))


class _Background:
    """A sync client's futures over HTTP: each call a task on a loop of its own thread,
    cancelled when its future is (or when the client closes)."""

    def __init__(self, address: str, options: ConnectOptions) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="undertow-http-futures", daemon=True
        )
        self._thread.start()
        self._async = AsyncHttpConnection(address, options)
        self._futures: set[concurrent.futures.Future[Any]] = set()

    def submit(
        self,
        name: str,
        body: bytes,
        sink: OutputCallback | None,
        timeout: float | None,
        pointer: bool,
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        self._loop.call_soon_threadsafe(self._start, future, name, body, sink, timeout, pointer)
        return future

    def _start(
        self,
        future: concurrent.futures.Future[Any],
        name: str,
        body: bytes,
        sink: OutputCallback | None,
        timeout: float | None,
        pointer: bool,
    ) -> None:
        if future.done():  # cancelled before it started
            return
        conn = self._async
        events = conn._caller.events(name, body, _deadline(timeout), pointer=pointer)
        task = self._loop.create_task(conn._finish(name, events, sink, timeout))
        # the future settled first (cancelled, the client closed): stop the call
        future.add_done_callback(lambda _: self._loop.call_soon_threadsafe(task.cancel))
        task.add_done_callback(functools.partial(_settle, future))

    def close(self, reason: BaseException) -> None:
        for future in list(self._futures):
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(reason)
        if self._thread is threading.current_thread():
            # closed from a future's callback, on this loop: waiting here would stop the
            # loop that must do the work, so the work is queued and the loop stops after it
            stopping = self._loop.create_task(self._shut())
            stopping.add_done_callback(lambda _: self._loop.stop())
            return
        with contextlib.suppress(Exception):  # the caller's connections go with the loop
            asyncio.run_coroutine_threadsafe(self._shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shut(self) -> None:
        await self._async.aclose()
        await self._loop.shutdown_asyncgens()  # the line readers of calls that ended early


def _settle(future: concurrent.futures.Future[Any], task: asyncio.Task[Any]) -> None:
    """Give ``future`` the outcome of ``task``, unless it was settled already."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if task.cancelled():
            future.cancel()
        elif (exc := task.exception()) is not None:
            future.set_exception(exc)
        else:
            future.set_result(task.result())


class AsyncHttpConnection(_HttpBase):
    """An async client's connection to a server's HTTP address."""

    def __init__(self, address: str, options: ConnectOptions) -> None:
        super().__init__(address, options)
        self._caller = AsyncHttpCaller(self.address, options.token)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def describe(self, timeout: float | None, challenge: str | None = None) -> Description:
        with self._describing(timeout):
            described = await self._caller.functions(timeout, challenge)
        return msgspec.convert(described, Description)

    def call(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> Any:
        timeout, _, sink, pointer = how
        body = self._body(args, kwargs)
        events = self._caller.events(info.name, body, _deadline(timeout), pointer=pointer)
        return self._finish(info.name, events, sink, timeout)

    async def _finish(
        self,
        name: str,
        events: AsyncIterator[tuple[str, Any]],
        sink: OutputCallback | None,
        timeout: float | None,
    ) -> Any:
        # aclosing: a cancelled task hangs up, which stops the call
        with self._translated(name, timeout):
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for kind, value in events:
                    if (result := self._event(kind, value, sink, name)) is not _MORE:
                        return result
        return None

    def stream(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> AsyncIterator[Any]:
        timeout, _, sink, pointer = how
        body = self._body(args, kwargs)
        events = self._caller.events(info.name, body, None, wait=timeout, pointer=pointer)
        return self._items(info.name, events, sink, timeout)

    async def _items(
        self,
        name: str,
        events: AsyncIterator[tuple[str, Any]],
        sink: OutputCallback | None,
        timeout: float | None,
    ) -> AsyncIterator[Any]:
        with self._translated(name, timeout):
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for kind, value in events:
                    if kind == "item":
                        yield self._value(value)
                    else:
                        self._event(kind, value, sink, name)

    async def aclose(self) -> None:
        self._closed = True
        await self._caller.aclose()
