"""Clients for servers reached over HTTP: ``undertow.connect("http://host:port")``.

The same API as the ZeroMQ clients: remote functions as attributes with their signatures
and docstrings, ``.submit()`` futures, ``.options()``, live remote output, remote errors
raised as their own types, deadlines, generators streamed. Calls go out as msgpack and come
back as an NDJSON stream (``transport/_http.py``), so output appears while a call runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import msgspec

from undertow.errors import RPCTimeout
from undertow.rpc._calls import Description, FunctionInfo, OutputCallback, write_output
from undertow.rpc._functions import CallOptions, as_attributes, make_function, not_found
from undertow.security import find_client_token
from undertow.transport._http_api import CallFailed
from undertow.transport._http_client import AsyncHttpCaller, HttpCaller
from undertow.wire import ErrorInfo, rebuild

__all__ = ["AsyncHttpClient", "HttpClient"]

DEFAULT_TIMEOUT = 30.0
_encode = msgspec.msgpack.Encoder().encode


def _sink(output: bool | OutputCallback) -> OutputCallback | None:
    if output is True:
        return write_output
    return None if output is False else output


class _HttpBase:
    """Settings and the function table of both HTTP clients."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None,
        token: str | bool | None,
        safe_exceptions: Iterable[type[BaseException]],
        output: bool | OutputCallback,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(
                f"timeout must be a positive number of seconds or None, not {timeout!r}"
            )
        self.address = address.rstrip("/")
        self.timeout = timeout
        self._token = find_client_token(token)
        self._sink = _sink(output)
        self._safe = tuple(safe_exceptions)
        self._server = ""
        self._bound: dict[str, Callable[..., Any]] = {}
        self._as_attributes: set[str] = set()

    def _install(self, described: dict[str, Any], invoke: Any, submit: Any) -> None:
        desc = msgspec.convert(described, Description)
        self._server = desc.server
        self._bound = {
            f.name: make_function(f, desc.server, invoke, submit) for f in desc.functions
        }
        self._as_attributes = as_attributes(self, self._bound, self._as_attributes)

    def _lookup(self, name: str) -> Callable[..., Any]:
        fn = self._bound.get(name)
        if fn is None:
            raise not_found(name, f"server {self._server!r} at {self.address}", self._bound)
        return fn

    def __getitem__(self, name: str) -> Any:
        return self._lookup(name)

    def __dir__(self) -> Iterable[str]:
        return sorted({*super().__dir__(), *self._bound})

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.address} server={self._server!r} "
            f"[{len(self._bound)} functions]>"
        )

    def _plan(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> tuple[bytes, float | None, float | None, OutputCallback | None]:
        timeout = self.timeout if opts.timeout is None else opts.timeout
        output = (self._sink is not None) if opts.output is None else opts.output
        sink = (self._sink or write_output) if output else None
        deadline = None if timeout is None else time.monotonic() + timeout
        return _encode({"args": list(args), "kwargs": kwargs}), deadline, timeout, sink

    def _error(self, failed: CallFailed, name: str) -> BaseException:
        info = failed.info
        described = ErrorInfo(
            type=str(info.get("type", "RemoteError")),
            message=str(info.get("message", "")),
            traceback=str(info.get("traceback", "")),
            code=str(info.get("code") or "remote"),
            available=list(info.get("available") or []),
        )
        exc = rebuild(described, where=f"{name}() at {self.address}", safe_types=self._safe)
        exc.__suppress_context__ = True  # the remote traceback is its cause, if it has one
        return exc

    def _timeout(self, name: str, timeout: float | None) -> RPCTimeout:
        return RPCTimeout(
            f"{name}() at {self.address} did not answer within {timeout:g} s "
            "(raise the deadline with .options(timeout=...))"
        )


async def _aclose(events: AsyncIterator[Any]) -> None:
    """Close an event stream early (the connection goes back, the remote call stops)."""
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


def _handle(kind: str, value: Any, sink: OutputCallback | None) -> bool:
    """Apply an output event; True if it was one."""
    if kind in ("stdout", "stderr"):
        if sink is not None:
            sink(kind, value)
        return True
    return False


class HttpClient(_HttpBase):
    """A client of a server's HTTP address, with the API of :class:`~undertow.Client`.

    ::

        client = undertow.connect("http://127.0.0.1:8080", token=...)
        client.add(1, 2)

    Arguments and results travel as msgpack and JSON, so they must be plain values (numbers,
    strings, lists, dicts, bytes); use the ZeroMQ address for numpy arrays and pickle.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        token: str | bool | None = None,
        safe_exceptions: Iterable[type[BaseException]] = (),
        output: bool | OutputCallback = True,
        max_workers: int = 8,
    ) -> None:
        super().__init__(
            address,
            timeout=timeout,
            token=token,
            safe_exceptions=safe_exceptions,
            output=output,
        )
        self._caller = HttpCaller(self.address, self._token)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix="undertow-http"
        )
        try:
            self.refresh(timeout=connect_timeout if connect_timeout is not None else timeout)
        except BaseException:
            self.close()
            raise

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._lookup(name)

    def refresh(self, timeout: float | None = None) -> None:
        """Ask the server again for its functions."""
        try:
            described = self._caller.functions(timeout or self.timeout)
        except CallFailed as failed:
            raise self._error(failed, "functions")  # noqa: B904 - the server's own error
        self._install(described, self._invoke, self._submit)

    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the remote function ``name``."""
        return self._lookup(name)(*args, **kwargs)

    def submit(self, name: str, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Start the remote function ``name``; a future for its result."""
        fn: Any = self._lookup(name)
        future: concurrent.futures.Future[Any] = fn.submit(*args, **kwargs)
        return future

    def close(self) -> None:
        """Close the connection and the pool that runs futures."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._caller.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _invoke(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        body, deadline, timeout, sink = self._plan(info, args, kwargs, opts)
        if info.streams:  # as over ZeroMQ, the deadline is for each item
            items = self._caller.events(info.name, body, None, wait=timeout)
            return self._items(info.name, items, sink, timeout)
        events = self._caller.events(info.name, body, deadline)
        try:
            for kind, value in events:
                if _handle(kind, value, sink):
                    continue
                if kind == "result":
                    return value
                if kind == "error":
                    raise self._error(CallFailed(value), info.name)
        except CallFailed as failed:
            raise self._error(failed, info.name)  # noqa: B904 - its cause is the remote traceback
        except RPCTimeout:
            raise self._timeout(info.name, timeout) from None
        finally:
            events.close()
        return None

    def _items(
        self,
        name: str,
        events: Iterator[tuple[str, Any]],
        sink: OutputCallback | None,
        timeout: float | None,
    ) -> Iterator[Any]:
        try:
            for kind, value in events:
                if _handle(kind, value, sink):
                    continue
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise self._error(CallFailed(value), name)
        except CallFailed as failed:
            raise self._error(failed, name)  # noqa: B904 - its cause is the remote traceback
        except RPCTimeout:
            raise self._timeout(name, timeout) from None
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # a caller that stops early stops the remote generator

    def _submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> concurrent.futures.Future[Any]:
        if info.streams:
            raise TypeError(
                f"{info.name}() is a generator function; iterate over {info.name}(...) instead"
            )
        return self._pool.submit(self._invoke, info, args, kwargs, opts)


class AsyncHttpClient(_HttpBase):
    """The asyncio twin of :class:`HttpClient` (``await undertow.connect_async("http://...")``)."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        token: str | bool | None = None,
        safe_exceptions: Iterable[type[BaseException]] = (),
        output: bool | OutputCallback = True,
    ) -> None:
        super().__init__(
            address,
            timeout=timeout,
            token=token,
            safe_exceptions=safe_exceptions,
            output=output,
        )
        self._connect_timeout = connect_timeout
        self._caller = AsyncHttpCaller(self.address, self._token)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._lookup(name)

    async def open(self) -> AsyncHttpClient:
        """Learn the server's functions (``async with`` does this for you)."""
        await self.refresh(timeout=self._connect_timeout or self.timeout)
        return self

    async def refresh(self, timeout: float | None = None) -> None:
        """Ask the server again for its functions."""
        try:
            described = await self._caller.functions(timeout or self.timeout)
        except CallFailed as failed:
            raise self._error(failed, "functions")  # noqa: B904 - the server's own error
        self._install(described, self._invoke, self._submit)

    async def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the remote function ``name``."""
        return await self._lookup(name)(*args, **kwargs)

    def submit(self, name: str, /, *args: Any, **kwargs: Any) -> asyncio.Task[Any]:
        """Start the remote function ``name`` as a task."""
        fn: Any = self._lookup(name)
        task: asyncio.Task[Any] = fn.submit(*args, **kwargs)
        return task

    async def aclose(self) -> None:
        """Close the connection."""
        await self._caller.aclose()

    async def __aenter__(self) -> AsyncHttpClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _invoke(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        body, deadline, timeout, sink = self._plan(info, args, kwargs, opts)
        if info.streams:  # as over ZeroMQ, the deadline is for each item
            items = self._caller.events(info.name, body, None, wait=timeout)
            return self._items(info.name, items, sink, timeout)
        return self._finish(
            info.name, self._caller.events(info.name, body, deadline), sink, timeout
        )

    async def _finish(
        self,
        name: str,
        events: AsyncIterator[tuple[str, Any]],
        sink: OutputCallback | None,
        timeout: float | None,
    ) -> Any:
        try:
            async for kind, value in events:
                if _handle(kind, value, sink):
                    continue
                if kind == "result":
                    return value
                if kind == "error":
                    raise self._error(CallFailed(value), name)
        except CallFailed as failed:
            raise self._error(failed, name)  # noqa: B904 - its cause is the remote traceback
        except RPCTimeout:
            raise self._timeout(name, timeout) from None
        finally:
            await _aclose(events)
        return None

    async def _items(
        self,
        name: str,
        events: AsyncIterator[tuple[str, Any]],
        sink: OutputCallback | None,
        timeout: float | None,
    ) -> AsyncIterator[Any]:
        try:
            async for kind, value in events:
                if _handle(kind, value, sink):
                    continue
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise self._error(CallFailed(value), name)
        except CallFailed as failed:
            raise self._error(failed, name)  # noqa: B904 - its cause is the remote traceback
        except RPCTimeout:
            raise self._timeout(name, timeout) from None
        finally:
            await _aclose(events)

    def _submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> asyncio.Task[Any]:
        if info.streams:
            raise TypeError(
                f"{info.name}() is a generator function; use 'async for' over it instead"
            )
        return asyncio.ensure_future(self._invoke(info, args, kwargs, opts))
