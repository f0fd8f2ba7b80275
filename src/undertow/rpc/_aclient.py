"""The async client, and ``rpc``: the low-level async proxy for a HandlerServer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from undertow.rpc._async_conn import AsyncConnection
from undertow.rpc._calls import Call, FunctionInfo, OutputCallback, Protocol
from undertow.rpc._client import DEFAULT_TIMEOUT, DESCRIBE, _ClientBase, _timeout_error
from undertow.rpc._functions import CallOptions
from undertow.security import client_key
from undertow.wire import MsgpackCodec

__all__ = ["AsyncClient", "connect_async", "rpc"]


class AsyncClient(_ClientBase):
    """The asyncio twin of :class:`~undertow.Client`: the same functions, awaited.

    ::

        async with undertow.AsyncClient("tcp://127.0.0.1:5555") as client:
            await client.add(1, 2)
            task = client.add.submit(1, 2)        # an asyncio.Task
            async for row in client.rows(10): ...

    It belongs to the event loop it was opened on. Arguments are those of ``Client``.
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
        self._connect_timeout = connect_timeout
        if connect_wait is not None and connect_wait <= 0:
            raise ValueError(
                f"connect_wait must be a positive number of seconds or None, not {connect_wait!r}"
            )
        self._connect_wait = connect_wait
        self._conn: AsyncConnection | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._lookup(name)

    async def open(self) -> AsyncClient:
        """Connect and learn the server's functions (``async with`` does this for you)."""
        if self._conn is None:
            self._conn = AsyncConnection(
                self.address,
                connect_wait=self._connect_wait,
                key=self._proto.key,
                curve_server_key=self._curve,
            )
        try:
            await self.refresh(timeout=self._connect_timeout or self.timeout)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def refresh(self, timeout: float | None = None) -> None:
        """Ask the server again for its functions."""
        info = FunctionInfo(DESCRIBE, input="msgpack", output="msgpack")
        body = await self._invoke(
            info, (), {}, CallOptions(timeout=timeout or self.timeout, output=False)
        )
        self._install(body, self._invoke, self._submit)

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
        if self._conn is not None:
            self._conn.close()

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _connection(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError(
                "AsyncClient is not open: use 'async with AsyncClient(...)' or await open()"
            )
        return self._conn

    def _invoke(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        conn = self._connection()
        call, frames, deadline, timeout = self._prepare(info, args, kwargs, opts)
        if info.streams:
            if conn.connect_wait is None:
                conn.start(call, frames)
                return _AsyncStream(self, call, timeout)
            return _AsyncStream(self, call, timeout, unsent=frames)  # sent on the first item
        if conn.connect_wait is not None:
            return self._start_and_finish(conn, call, frames, deadline, timeout)
        conn.start(call, frames)
        return self._finish(conn, call, deadline, timeout)

    async def _start_and_finish(
        self,
        conn: AsyncConnection,
        call: Call,
        frames: list[Any],
        deadline: float | None,
        timeout: float | None,
    ) -> Any:
        await conn.start_connected(call, frames)
        return await self._finish(conn, call, deadline, timeout)

    async def _finish(
        self, conn: AsyncConnection, call: Call, deadline: float | None, timeout: float | None
    ) -> Any:
        try:
            done = await conn.wait(call, lambda: call.done, deadline)
        except BaseException:  # cancelled, the connection lost: stop the call, forget it
            self._abandon(call)
            raise
        if not done:
            self._abandon(call)
            raise _timeout_error(self._proto, call.name, timeout)
        return self._proto.outcome(call)

    def _submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> asyncio.Task[Any]:
        if info.streams:
            raise TypeError(
                f"{info.name}() is a generator function; use 'async for' over it instead"
            )
        return asyncio.ensure_future(self._invoke(info, args, kwargs, opts))

    def _abandon(self, call: Call) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.forget(call)
            conn.send(self._proto.cancel_frames(call.call_id))


class _AsyncStream(AsyncIterator[Any]):
    def __init__(
        self,
        client: AsyncClient,
        call: Call,
        timeout: float | None,
        unsent: list[Any] | None = None,
    ) -> None:
        self._client = client
        self._call = call
        #: the request, when it goes out with the first item (a connection to wait for)
        self._unsent = unsent
        self._timeout = timeout
        self._finished = False
        self._consumed = 0

    async def __anext__(self) -> Any:
        call, proto = self._call, self._client._proto
        if self._finished:
            raise StopAsyncIteration
        if self._unsent is not None:
            frames, self._unsent = self._unsent, None
            try:
                await self._client._connection().start_connected(call, frames)
            except BaseException:
                self._finished = True
                raise
        if not call.items and not call.done:
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            try:
                ready = await self._client._connection().wait(
                    call, lambda: bool(call.items) or call.done, deadline
                )
            except BaseException:  # the awaiting task was cancelled: stop the generator too
                await self.aclose()
                raise
            if not ready:
                await self.aclose()
                raise _timeout_error(proto, call.name, self._timeout)
        if call.items:
            header, frames = call.items.popleft()
            self._consumed += 1
            credit = proto.credit_frames(call.call_id, self._consumed)
            if credit is not None and not call.done:
                self._client._connection().send(credit)
            return proto.decode_value(call, header, frames)
        self._finished = True
        proto.outcome(call)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the stream early."""
        if not self._finished:
            self._finished = True
            if not self._call.done:
                self._client._abandon(self._call)


async def connect_async(address: str, **options: Any) -> Any:
    """Open an :class:`AsyncClient` to ``address``; options are those of ``AsyncClient``.
    An ``http://`` or ``https://`` address gives an ``AsyncHttpClient``."""
    if address.startswith(("http://", "https://")):
        from undertow.rpc._http_client import AsyncHttpClient

        return await AsyncHttpClient(address, **options).open()
    return await AsyncClient(address, **options).open()


_MSGPACK = MsgpackCodec()


class rpc:
    """A low-level proxy to a :class:`~undertow.core.HandlerServer`.

    Attribute calls send keyword arguments as msgpack and are awaitable::

        async with rpc("tcp://127.0.0.1:5555") as remote:
            total = await remote.add(x=1, y=2)

    Args:
        address: the server's address.
        timeout: deadline of each call in seconds (None waits forever).
        token: sign every message with this token (``NAME.SECRET``), for a server with an
            authenticator; answers must then be signed too. None: unsigned.
    """

    def __init__(
        self, address: str, *, timeout: float | None = DEFAULT_TIMEOUT, token: str | None = None
    ) -> None:
        self.address = address
        self.timeout = timeout
        key = client_key(token) if token else None
        self._proto = Protocol(address, key=key, codecs=None, safe_exceptions=())
        self._conn: AsyncConnection | None = None

    def __repr__(self) -> str:
        return f"<rpc {self.address}>"

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def send(**kwargs: Any) -> Any:
            return await self._call(name, kwargs)

        send.__name__ = name
        return send

    async def _call(self, name: str, kwargs: dict[str, Any]) -> Any:
        if self._conn is None:
            self._conn = AsyncConnection(self.address, key=self._proto.key)
        conn = self._conn
        call = Call(self._proto.next_id(), name, None)
        payload = _MSGPACK.encode(kwargs)
        conn.start(
            call,
            self._proto.call_frames(
                call.call_id, name, payload, _MSGPACK.name, timeout=self.timeout
            ),
        )
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if not await conn.wait(call, lambda: call.done, deadline):
            conn.forget(call)
            raise _timeout_error(self._proto, name, self.timeout)
        return self._proto.outcome(call)

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def __aenter__(self) -> rpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
