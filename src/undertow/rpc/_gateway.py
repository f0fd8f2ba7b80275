"""The function server seen from HTTP: what ``transport/_http.py`` calls to run a function.

A call that arrives over HTTP goes through the same checks and the same code as one that
arrives over ZeroMQ (:meth:`Server.dispatch`): it becomes an :class:`Incoming` whose answers,
instead of going to a socket, are handed to the HTTP request waiting for them. Its arguments,
which the HTTP app decoded from JSON or msgpack, reach the function as they are when the
function's input codec would give them unchanged; only for a codec that could change them
(json from a msgpack body, a codec of the user's, a number too large for msgpack) are they
encoded with it first. Results and items come back as Python values, which the app encodes
once, in the form the client asked for.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from undertow._util import address_host, is_loopback
from undertow.errors import ConfigError, UndertowError
from undertow.rpc._calls import FunctionInfo
from undertow.rpc._entry import Entry
from undertow.rpc._incoming import VALUE, Arguments, Incoming
from undertow.rpc._metrics import CallStats
from undertow.rpc._observe import prometheus_text
from undertow.rpc._receivers import Job
from undertow.transport import CallFailed, failure
from undertow.wire import (
    Codec,
    ErrorInfo,
    Flags,
    Header,
    JsonCodec,
    Kind,
    MsgpackCodec,
    PickleCodec,
    decode_error,
    error_info,
    resolve_codec,
)

if TYPE_CHECKING:
    from undertow.transport import ServerSocket

__all__ = ["ServerGateway", "Serving"]

log = logging.getLogger(__name__)

_ids = itertools.count(1)
_MSGPACK = resolve_codec("msgpack")
_PICKLE = resolve_codec("pickle")
_NO_OUTPUT = int(Flags.NO_OUTPUT)
_POINTER = int(Flags.POINTER)
#: a number of 19 digits or more may be out of msgpack's range (64 bits)
_LONG_NUMBER = re.compile(rb"\d{19}").search


class Serving(Protocol):
    """What the gateway uses of a :class:`~undertow.Server`: its public call surface."""

    name: str

    @property
    def authenticates(self) -> bool: ...
    @property
    def allows_anonymous(self) -> bool: ...
    @property
    def max_message_size(self) -> int | None: ...
    @property
    def max_workers(self) -> int: ...
    def info(self) -> list[FunctionInfo]: ...
    def description(self, challenge: str | None = None) -> dict[str, Any]: ...
    def authenticate(self, token: str) -> str | None: ...
    def function(self, name: str) -> Entry | None: ...
    def dispatch(self, incoming: Incoming) -> Job | None: ...
    def cancel(self, incoming: Incoming) -> None: ...
    def not_found(self, name: str) -> ErrorInfo: ...
    def stats(self) -> dict[str, Any]: ...
    @property
    def call_stats(self) -> CallStats: ...


#: an answer as it waits for the request: (kind, payload, codec, stream name)
_Message = tuple[Kind, Any, str, str]


class _Unlisted:
    """The call table of calls from HTTP: no socket (answers go to their requests), and no
    table of open calls (a request that ends stops its call itself)."""

    def __init__(self, stats: CallStats) -> None:
        self._sock: ServerSocket | None = None
        self._active: dict[tuple[bytes, int], Incoming] = {}
        #: the server's own: a call from HTTP counts as any other
        self.stats = stats


class _HttpIncoming(Incoming):
    """A call from HTTP: its answers, Python values, wait on the server's loop for
    :meth:`next` to take them."""

    __slots__ = ("_loop", "_mail", "_waiter", "arguments", "closed")
    #: pointers to what such a call keeps point at the server's HTTP address
    protocol = "http"
    values = True

    def __init__(
        self,
        table: _Unlisted,
        peer: bytes,
        header: Header,
        frames: list[Any],
        identity: str | None,
        arguments: Arguments | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(table, peer, header, frames, identity)
        self.arguments = arguments
        self._loop = loop
        #: nobody reads the answers any more (the request ended): they are dropped
        self.closed = False
        self._mail: collections.deque[_Message] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    async def next(self) -> _Message:
        """The next answer: (kind, payload, codec, stream name)."""
        while not self._mail:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._mail.popleft()

    def _put(self, message: _Message) -> None:
        if self.closed:
            return
        if asyncio._get_running_loop() is self._loop:  # the low-level form: no exception
            self._deliver(message)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._deliver, message)

    def _deliver(self, message: _Message) -> None:
        self._mail.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _send(
        self, kind: Kind, payload: Any, *, name: str = "", codec: str = "", ends: bool = False
    ) -> None:
        if ends:
            self._count(kind, time.perf_counter_ns())
        self._put((kind, payload, codec, name))

    def fail(self, info: ErrorInfo) -> bool:
        if not self._finish():
            return False
        self._count(Kind.ERROR, time.perf_counter_ns())
        self._put((Kind.ERROR, info, "", ""))
        return True

    def output(self, stream: str, text: str) -> None:
        if self._once:
            self._put((Kind.OUTPUT, text, "", stream))


class ServerGateway:
    """Runs a :class:`~undertow.Server`'s functions for the HTTP transport."""

    def __init__(self, server: Serving) -> None:
        self._server = server
        self.name = server.name
        self.max_message_size = server.max_message_size
        self._peer = b"http:" + os.urandom(8)
        self._table = _Unlisted(server.call_stats)
        # plain functions run here, as many at once as the server allows; not in the loop's
        # default executor, whose shutdown would wait for every running call
        self._pool = concurrent.futures.ThreadPoolExecutor(
            server.max_workers, thread_name_prefix=f"undertow-http-{server.name}"
        )

    @property
    def authenticates(self) -> bool:
        """True when callers may sign (the server's, now: a server that starts serving
        pickle with no tokens given begins to accept its user's own token)."""
        return self._server.authenticates

    def close(self) -> None:
        """Stop taking calls; running ones finish in their threads, unwaited for."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def functions(self) -> list[dict[str, Any]]:
        return [msgspec.structs.asdict(info) for info in self._server.info()]

    def description(self, challenge: str | None = None) -> dict[str, Any]:
        """What a ZeroMQ client is told on connect (:meth:`Server.description`), every field
        of it, in plain values (functions as dicts)."""
        described: dict[str, Any] = msgspec.to_builtins(self._server.description(challenge))
        return described

    def metrics(self) -> bytes:
        """The server's figures in Prometheus' text format (``GET /metrics``)."""
        return prometheus_text(self._server.stats)

    def identify(self, bearer: str | None) -> str | None:
        server = self._server
        if not server.authenticates:
            return None  # nobody is authenticated here: a token changes nothing
        if bearer is None:
            if server.allows_anonymous:
                return None
            raise failure(
                "auth",
                "AuthenticationError",
                f"server {self.name!r} requires authentication: send "
                "'Authorization: Bearer <token>'",
            )
        identity = server.authenticate(bearer)
        if identity is None:
            raise failure(
                "auth", "AuthenticationError", "authentication failed: an unknown or wrong token"
            )
        return identity

    def sends_arrays(self, name: str) -> bool:
        entry = self._server.function(name)
        # json and msgpack carry no arrays: such a function returning one fails as over ZeroMQ
        return entry is None or not isinstance(
            entry.options.output_serialization, MsgpackCodec | JsonCodec
        )

    async def call(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        *,
        body: bytes = b"",
        body_codec: str = "json",
        pointer: bool = False,
    ) -> Any:
        final: Any = None
        flags = _NO_OUTPUT | (_POINTER if pointer else 0)  # no stream: prints stay on the server
        events = self._events(name, args, kwargs, identity, body, body_codec, flags)
        async for kind, value in events:
            if kind in ("result", "items"):
                final = value
        return final

    def events(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        *,
        body: bytes = b"",
        body_codec: str = "json",
        pointer: bool = False,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        flags = _POINTER if pointer else 0
        return self._events(name, args, kwargs, identity, body, body_codec, flags)

    async def _events(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        body: bytes,
        body_codec: str,
        flags: int,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """The call's events as they happen: ``("stdout"|"stderr", text)``, ``("item",
        value)``, then ``("result", value)`` or, for a generator, ``("items", [...])`` with
        every item (empty when they were streamed); raises :class:`CallFailed`. ``flags``:
        those of a ZeroMQ call (no output, return a pointer)."""
        entry = self._server.function(name)
        output = not flags & _NO_OUTPUT
        incoming = self._start(name, entry, args, kwargs, identity, body, body_codec, flags)
        items = _Collected(name, entry, self.max_message_size)
        consumed = 0  # items handed on: the generator may run a window ahead of them
        try:
            while True:
                kind, payload, codec, stream = await incoming.next()
                if kind == Kind.OUTPUT:
                    yield stream, payload
                elif kind == Kind.ITEM:
                    item = _value(codec, payload)
                    if output:
                        yield "item", item
                    else:
                        items.add(item, payload, codec)
                    consumed += 1
                    if incoming.credit is not None:
                        incoming.credit.grant(consumed)
                elif kind == Kind.RESULT:
                    yield "result", _value(codec, payload)
                    return
                elif kind == Kind.END:
                    yield "items", items.items
                    return
                elif kind == Kind.ERROR:
                    info = payload if isinstance(payload, ErrorInfo) else decode_error(payload[0])
                    raise _failed(info)
        except BaseException:  # the client went away, or the call failed: stop it
            self._server.cancel(incoming)
            raise
        finally:
            incoming.closed = True
            if incoming.credit is not None:  # a generator's: it stops waiting for credit
                incoming.credit.close()

    def _start(
        self,
        name: str,
        entry: Entry | None,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        body: bytes,
        body_codec: str,
        flags: int,
    ) -> _HttpIncoming:
        server = self._server
        if entry is not None:
            codec = entry.options.input_serialization
        elif name.startswith("_data_"):  # the data functions every server has, for pointers
            codec = _PICKLE if body_codec == "pickle" else _MSGPACK
        else:
            raise _failed(server.not_found(name))
        if body_codec == "pickle" and codec.name != "pickle":
            raise failure(
                "unsupported",
                "UnsupportedMediaType",
                f"{name}() takes {codec.name}, not pickle: send JSON",
            )
        frames, arguments = _payload(entry, codec, args, kwargs, body, body_codec)
        loop = asyncio.get_running_loop()
        header = Header(Kind.CALL, next(_ids), name, codec.name, len(frames) - 1, None, flags)
        incoming = _HttpIncoming(self._table, self._peer, header, frames, identity, arguments, loop)
        job = server.dispatch(incoming)
        if job is not None:
            # not run_in_executor: its future would wake the loop a second time, for nothing
            self._pool.submit(job[1]).add_done_callback(_log_failure)
        return incoming


def _payload(
    entry: Entry | None,
    codec: Codec,
    args: list[Any],
    kwargs: dict[str, Any],
    body: bytes,
    body_codec: str,
) -> tuple[list[Any], Arguments | None]:
    """The call's frames, and its arguments when they go to the function (or the data
    function, ``entry`` None) as they are. The body stays the first frame: the server searches
    it for pointers (and unpickles a pickle only once the caller and the function's rule
    allow it)."""
    if body_codec == "pickle":
        return [body], None
    if _as_they_are(codec, body, body_codec):
        return [body], (args, kwargs)
    try:
        return list(codec.encode((args, kwargs))), None
    except UndertowError as exc:
        raise _failed(error_info(exc, code="bad_request")) from None


def _as_they_are(codec: Codec, body: bytes, body_codec: str) -> bool:
    """True when ``codec`` would give the arguments decoded from ``body`` (in ``body_codec``,
    json or msgpack) back unchanged, so that they need not go through it."""
    from_json = body_codec == "json"
    if from_json and b"\\u" in body:
        return False  # an escape could hide a pointer from the search of the body
    if isinstance(codec, PickleCodec):
        return True
    if isinstance(codec, MsgpackCodec):
        return not from_json or _LONG_NUMBER(body) is None
    return isinstance(codec, JsonCodec) and from_json


class _Collected:
    """The items of a generator whose caller takes them all at once, within the size limit
    (measured in the function's output codec, as a caller over ZeroMQ would receive them)."""

    __slots__ = ("_entry", "_held", "_limit", "items", "name")

    def __init__(self, name: str, entry: Entry | None, limit: int | None) -> None:
        self.name = name
        self.items: list[Any] = []
        self._entry = entry
        self._limit = limit
        self._held = 0

    def add(self, item: Any, payload: Any, codec: str) -> None:
        if self._limit is not None:
            frames = payload if codec != VALUE else None
            self._held += _size(item, frames, self._entry)
            if self._held > self._limit:
                raise failure(
                    "too_large",
                    "MessageTooLarge",
                    f"the items of {self.name}() come to over {self._limit:,} bytes; stream "
                    "them (Accept: application/x-ndjson)",
                )
        self.items.append(item)


def _size(item: Any, frames: Any, entry: Entry | None) -> int:
    """Bytes of an item as it travels: its frames, or the item encoded by its function's
    output codec."""
    if frames is None:
        codec = _MSGPACK if entry is None else entry.options.output_serialization
        try:
            frames = codec.encode(item)
        except UndertowError as exc:
            raise _failed(error_info(exc, code="serialization")) from None
    return sum(memoryview(frame).nbytes for frame in frames)


def _log_failure(done: concurrent.futures.Future[None]) -> None:
    """A job answers its call whatever happens; what escapes it anyway is logged."""
    if not done.cancelled() and done.exception() is not None:
        log.error("an HTTP call failed outside its function", exc_info=done.exception())


def _value(codec: str, payload: Any) -> Any:
    """An answer's value: as it came (a Python value), or decoded from its frames."""
    if codec == VALUE:
        return payload[0]
    if not codec:
        return None
    try:
        return resolve_codec(codec).decode(payload)
    except UndertowError as exc:
        raise _failed(error_info(exc, code="serialization")) from None


def _failed(info: ErrorInfo) -> CallFailed:
    """A server's error description as the HTTP transport's failure."""
    return CallFailed(msgspec.structs.asdict(info))


async def serve_gateway(server: Any, address: str, port: int) -> tuple[ServerGateway, Any]:
    """Serve ``server``'s functions over HTTP on ``port`` of the interface of its ZeroMQ
    ``address``: (the gateway, the HTTP server)."""
    try:
        from undertow.transport import http_app, serve_http
    except ImportError as exc:
        raise ConfigError(
            f"serving HTTP needs starlette and uvicorn ({exc.name} is missing): "
            "pip install 'undertow[http]'"
        ) from exc
    host = address_host(address) if address.startswith("tcp://") else "127.0.0.1"
    local = is_loopback(host)
    if not local and not server._insecure:
        raise ConfigError(
            f"refusing to serve HTTP on {host}: plain HTTP carries bearer tokens (the same "
            "secrets that sign ZeroMQ messages) in clear, so anyone who sees one request "
            "can call as that user. Serve HTTP on 127.0.0.1 behind a TLS proxy, or pass "
            "insecure=True (--insecure) on a network you trust"
        )
    gateway: Any = ServerGateway(server)
    return gateway, await serve_http(http_app(gateway, local_only=local), host, port)
