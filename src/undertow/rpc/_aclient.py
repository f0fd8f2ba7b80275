"""The async client, and ``rpc``: the low-level async proxy for a HandlerServer."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from undertow.rpc._async_conn import AsyncConnection
from undertow.rpc._calls import Call, FunctionInfo, OutputCallback, Protocol
from undertow.rpc._client import challenge_for, prepare, user_token_for
from undertow.rpc._connection import DEFAULT_TIMEOUT, AsyncClientConnection, timeout_error
from undertow.rpc._functions import CallOptions, RemoteFunctions
from undertow.rpc._plane import enqueue_job
from undertow.security import client_key
from undertow.wire import MsgpackCodec

__all__ = ["AsyncClient", "connect_async", "rpc"]


class AsyncClient(RemoteFunctions):
    """The asyncio twin of :class:`~undertow.Client`: the same functions, awaited.

    ::

        async with undertow.AsyncClient("tcp://127.0.0.1:5555") as client:
            await client.add(1, 2)
            task = client.add.submit(1, 2)        # an asyncio.Task
            async for row in client.rows(10): ...

    It belongs to the event loop it was opened on. Arguments, and the transports its
    address's scheme picks, are those of ``Client`` (its calls all go over ZeroMQ, never a
    plain socket: ``tls_ca`` is taken, and checked, for the same signature).
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
        tls_ca: Any = None,
    ) -> None:
        super().__init__(address, timeout=timeout, output=output)
        self._scheme, self._options = prepare(
            self,
            token=token,
            codecs=codecs,
            safe_exceptions=safe_exceptions,
            connect_wait=connect_wait,
            curve_server_key=curve_server_key,
            tls_ca=tls_ca,
        )
        self._token_arg = token
        self._connect_timeout = connect_timeout
        self._conn: AsyncClientConnection | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._lookup(name)

    async def open(self) -> AsyncClient:
        """Connect and learn the server's functions (``async with`` does this for you)."""
        if self._conn is None or self._conn.closed:  # first use, or again after aclose()
            self._conn = self._scheme.async_connection(self.address, self._options)
            self.address = self._conn.address
        wait = self.timeout if self._connect_timeout is None else self._connect_timeout
        try:
            await self._learn(wait)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _learn(self, timeout: float | None) -> None:
        """Learn the server's functions; sign from now on with the user's own token if the
        server asks for it (a new connection: each has its signing session)."""
        challenge = challenge_for(self._scheme)
        desc = await self._connection().describe(timeout, challenge)
        found = user_token_for(self, self._token_arg, desc, challenge)
        if found is not None:
            await self._connection().aclose()
            self._token = found
            self._options = dataclasses.replace(self._options, token=found)
            self._conn = self._scheme.async_connection(self.address, self._options)
            desc = await self._conn.describe(timeout)
        self._install_functions(desc, self._invoke, self._submit)

    async def refresh(self, timeout: float | None = None) -> None:
        """Ask the server again for its functions."""
        desc = await self._connection().describe(timeout or self.timeout)
        self._install_functions(desc, self._invoke, self._submit)

    def _enqueue(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], _: CallOptions
    ) -> Any:
        """As the sync client's, a coroutine: ``await client.f.enqueue(...)``."""
        return enqueue_job(self, info, args, kwargs, True)

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
            await self._conn.aclose()

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._conn is not None and self._conn.closed

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _connection(self) -> AsyncClientConnection:
        if self._conn is None:
            raise RuntimeError(
                "AsyncClient is not open: use 'async with AsyncClient(...)' or await open()"
            )
        return self._conn

    def _invoke(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        if info.streams:
            return self._connection().stream(info, args, kwargs, self._settings(opts))
        return self._connection().call(info, args, kwargs, self._settings(opts))

    def _submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> asyncio.Task[Any]:
        if info.streams:
            raise TypeError(
                f"{info.name}() is a generator function; use 'async for' over it instead"
            )
        return asyncio.ensure_future(self._invoke(info, args, kwargs, opts))


async def connect_async(address: str, **options: Any) -> AsyncClient:
    """Open an :class:`AsyncClient` to ``address``; options are those of ``AsyncClient``."""
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
            raise timeout_error(self._proto.where(name), self.timeout)
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
