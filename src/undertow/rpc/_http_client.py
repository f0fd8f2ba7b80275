"""Clients for servers reached over HTTP: ``undertow.connect("http://host:port")``.

The same API as the ZeroMQ clients: remote functions as attributes with their signatures
and docstrings, ``.submit()`` futures, ``.options()``, live remote output, remote errors
raised as their own types, deadlines, generators streamed. Calls go out as msgpack and come
back as an NDJSON stream (``transport/_http_client.py``), so output appears while a call runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import msgspec

from undertow.errors import RPCTimeout
from undertow.rpc._calls import Description, FunctionInfo, OutputCallback
from undertow.rpc._functions import CallOptions, RemoteFunctions
from undertow.rpc._plane import make_pointer
from undertow.security import find_client_token
from undertow.transport import AsyncHttpCaller, CallFailed, HttpCaller
from undertow.wire import POINTER_TYPE, ErrorInfo, rebuild

__all__ = ["AsyncHttpClient", "HttpClient"]

DEFAULT_TIMEOUT = 30.0
_encode = msgspec.msgpack.Encoder().encode
#: what :meth:`_HttpBase._event` returns for an event that does not end the call
_MORE = object()


class _HttpBase(RemoteFunctions):
    """What both HTTP clients share: settings, the function table, and what each event of a
    call's stream means."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None,
        token: str | bool | None,
        safe_exceptions: Iterable[type[BaseException]],
        output: bool | OutputCallback,
    ) -> None:
        super().__init__(address.rstrip("/"), timeout=timeout, output=output)
        self._token = find_client_token(token)
        self._safe = tuple(safe_exceptions)

    def _install(self, described: dict[str, Any], invoke: Any, submit: Any) -> None:
        self._install_functions(msgspec.convert(described, Description), invoke, submit)

    def _plan(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> tuple[bytes, float | None, OutputCallback | None]:
        """The request body, the call's timeout and where its output goes."""
        timeout, _, sink = self._settings(opts)
        return _encode({"args": list(args), "kwargs": kwargs}), timeout, sink

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
        if type(value) is dict and value.get("type") == POINTER_TYPE:
            return make_pointer(value, self)
        return value

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

    @contextlib.contextmanager
    def _translated(self, name: str, timeout: float | None) -> Iterator[None]:
        """The transport's failures as the errors a caller gets."""
        try:
            yield
        except CallFailed as failed:
            raise self._error(failed, name)  # noqa: B904 - its cause is the remote traceback
        except RPCTimeout:
            raise RPCTimeout(
                f"{name}() at {self.address} did not answer within {timeout:g} s "
                "(raise the deadline with .options(timeout=...))"
            ) from None


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


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

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._caller.closed

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _invoke(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        body, timeout, sink = self._plan(args, kwargs, opts)
        if info.streams:  # as over ZeroMQ, the deadline is for each item
            items = self._caller.events(info.name, body, None, wait=timeout)
            return self._items(info.name, items, sink, timeout)
        events = self._caller.events(info.name, body, _deadline(timeout))
        with self._translated(info.name, timeout), contextlib.closing(events):
            for kind, value in events:
                if (result := self._event(kind, value, sink, info.name)) is not _MORE:
                    return result
        return None

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
                    yield value
                else:
                    self._event(kind, value, sink, name)

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
        body, timeout, sink = self._plan(args, kwargs, opts)
        if info.streams:  # as over ZeroMQ, the deadline is for each item
            items = self._caller.events(info.name, body, None, wait=timeout)
            return self._items(info.name, items, sink, timeout)
        events = self._caller.events(info.name, body, _deadline(timeout))
        return self._finish(info.name, events, sink, timeout)

    async def _finish(
        self,
        name: str,
        events: AsyncIterator[tuple[str, Any]],
        sink: OutputCallback | None,
        timeout: float | None,
    ) -> Any:
        with self._translated(name, timeout):
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for kind, value in events:
                    if (result := self._event(kind, value, sink, name)) is not _MORE:
                        return result
        return None

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
                        yield value
                    else:
                        self._event(kind, value, sink, name)

    def _submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> asyncio.Task[Any]:
        if info.streams:
            raise TypeError(
                f"{info.name}() is a generator function; use 'async for' over it instead"
            )
        return asyncio.ensure_future(self._invoke(info, args, kwargs, opts))
