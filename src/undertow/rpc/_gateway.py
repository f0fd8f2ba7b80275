"""The function server seen from HTTP: what ``transport/_http.py`` calls to run a function.

A call that arrives over HTTP goes through the same checks and the same code as one that
arrives over ZeroMQ: it becomes an :class:`Incoming` whose answers, instead of going to a
socket, are handed to the HTTP request waiting for them. Its JSON (or msgpack) arguments are
encoded with the function's own input codec first, so the function cannot tell the
difference.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from undertow.errors import UndertowError
from undertow.rpc._core import Incoming
from undertow.rpc._receivers import Job
from undertow.transport import CallFailed, failure
from undertow.wire import ErrorInfo, Flags, Header, Kind, decode_error, error_info, resolve_codec

if TYPE_CHECKING:
    from undertow.rpc._server import Server

__all__ = ["ServerGateway"]

_ids = itertools.count(1)


class _HttpIncoming(Incoming):
    """A call from HTTP: its answers go to a queue on the server's loop."""

    __slots__ = ("_loop", "_queue", "closed")
    #: pointers to what such a call keeps point at the server's HTTP address
    protocol = "http"

    def __init__(self, *args: Any, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop = loop
        #: nobody reads the answers any more (the request ended): they are dropped
        self.closed = False
        self._queue: asyncio.Queue[tuple[Kind, list[Any], str, str]] = asyncio.Queue()

    def _send(
        self,
        kind: Kind,
        payload: Any,
        *,
        name: str = "",
        codec: str = "",
        ends: bool = False,
    ) -> None:
        if self.closed:
            return
        message = (kind, list(payload), codec, name)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._queue.put_nowait(message)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._queue.put_nowait, message)


class ServerGateway:
    """Runs a :class:`Server`'s functions for the HTTP transport."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self.name = server.name
        self.max_message_size = server._core.max_message_size
        self.authenticates = server.authenticates
        self._peer = b"http:" + os.urandom(8)
        # plain functions run here, as many at once as the server allows; not in the loop's
        # default executor, whose shutdown would wait for every running call
        self._pool = concurrent.futures.ThreadPoolExecutor(
            server._max_workers, thread_name_prefix=f"undertow-http-{server.name}"
        )

    def close(self) -> None:
        """Stop taking calls; running ones finish in their threads, unwaited for."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def functions(self) -> list[dict[str, Any]]:
        return [msgspec.structs.asdict(info) for info in self._server.info()]

    def identify(self, bearer: str | None) -> str | None:
        auth = self._server._auth
        if auth is None:
            return None  # nobody is authenticated here: a token changes nothing
        if bearer is None:
            if self._server._core.allow_anonymous:
                return None
            raise failure(
                "auth",
                "AuthenticationError",
                f"server {self.name!r} requires authentication: send "
                "'Authorization: Bearer <token>'",
            )
        identity = auth.authenticate(bearer)
        if identity is None:
            raise failure(
                "auth", "AuthenticationError", "authentication failed: an unknown or wrong token"
            )
        return identity

    async def call(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        pickled: bytes | None = None,
    ) -> Any:
        final: Any = None
        events = self.events(name, args, kwargs, identity, pickled, output=False)
        async for kind, value in events:
            if kind in ("result", "items"):
                final = value
        return final

    async def events(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        pickled: bytes | None = None,
        *,
        output: bool = True,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """The call's events as they happen: ``("stdout"|"stderr", text)``, ``("item",
        value)``, then ``("result", value)`` or, for a generator, ``("items", [...])`` with
        every item (empty when they were streamed); raises :class:`CallFailed`."""
        incoming = self._start(name, args, kwargs, identity, pickled, output)
        items: list[Any] = []
        consumed = 0  # items handed on: the generator may run a window ahead of them
        held = 0  # bytes of the items collected for an answer that does not stream
        limit = self.max_message_size
        try:
            while True:
                kind, payload, codec, stream = await incoming._queue.get()
                if kind == Kind.OUTPUT:
                    text = bytes(payload[0]).decode("utf-8", "replace") if payload else ""
                    yield stream, text
                elif kind == Kind.ITEM:
                    item = _decode(codec, payload)
                    if output:
                        yield "item", item
                    else:
                        held += sum(memoryview(frame).nbytes for frame in payload)
                        if limit is not None and held > limit:
                            raise failure(
                                "too_large",
                                "MessageTooLarge",
                                f"the items of {name}() come to over {limit:,} bytes; stream "
                                "them (Accept: application/x-ndjson)",
                            )
                        items.append(item)
                    consumed += 1
                    if incoming.credit is not None:
                        incoming.credit.grant(consumed)
                elif kind == Kind.RESULT:
                    yield "result", _decode(codec, payload)
                    return
                elif kind == Kind.END:
                    yield "items", items
                    return
                elif kind == Kind.ERROR:
                    raise _failed(decode_error(payload[0] if payload else b""))
        except BaseException:  # the client went away, or the call failed: stop it
            incoming.cancelled = True
            self._server._on_cancel(incoming)
            raise
        finally:
            incoming.closed = True
            if incoming.credit is not None:  # a generator's: it stops waiting for credit
                incoming.credit.close()

    def _start(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        pickled: bytes | None,
        output: bool,
    ) -> _HttpIncoming:
        server = self._server
        entry = server._entries.get(name)
        handle: Callable[[Incoming], Job | None]
        if entry is not None:
            codec = entry.options.input_serialization
            handle = server._handle
        elif name.startswith("_data_") and name in server._core.raw_handlers:
            # the data functions every server has, which pointers over HTTP use
            codec = resolve_codec("pickle" if pickled is not None else "msgpack")
            handle = server._core.raw_handlers[name]
        else:
            raise _failed(server._core.not_found(name))
        if pickled is not None:
            if codec.name != "pickle":
                raise failure(
                    "unsupported",
                    "UnsupportedMediaType",
                    f"{name}() takes {codec.name}, not pickle: send JSON",
                )
            payload: list[Any] = [pickled]  # the server checks the caller before unpickling
        else:
            try:
                payload = codec.encode((args, kwargs))
            except UndertowError as exc:
                raise _failed(error_info(exc, code="bad_request")) from None
        loop = asyncio.get_running_loop()
        header = Header(
            Kind.CALL,
            next(_ids),
            name,
            codec.name,
            len(payload) - 1,
            None,
            0 if output else int(Flags.NO_OUTPUT),  # without a stream, prints stay on the server
        )
        incoming = _HttpIncoming(
            server._core, self._peer, header, list(payload), identity, None, loop=loop
        )
        job = handle(incoming)
        if job is not None:
            loop.run_in_executor(self._pool, job[1])
        return incoming


def _decode(codec: str, payload: list[Any]) -> Any:
    if not codec:
        return None
    try:
        return resolve_codec(codec).decode(payload)
    except UndertowError as exc:
        raise _failed(error_info(exc, code="serialization")) from None


def _failed(info: ErrorInfo) -> CallFailed:
    """A server's error description as the HTTP transport's failure."""
    return CallFailed(msgspec.structs.asdict(info))
