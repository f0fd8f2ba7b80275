"""The low-level server: a table of named handlers on an asyncio loop, over ZeroMQ.

Like the foundations of dask.distributed, but over ZeroMQ multipart messages::

    async def add(x, y):
        return x + y

    server = HandlerServer({"add": add, "ping": lambda: "pong"})
    address = await server.listen("tcp://127.0.0.1:0")
    async with rpc(address) as remote:
        assert await remote.add(x=1, y=2) == 3

Handlers take keyword arguments and return a value; both travel as msgpack. A plain function
runs inline on the loop (keep it short), a coroutine function runs as a task. The high-level
:class:`undertow.Server` is built on this class: it adds *raw* handlers, which receive the
:class:`Incoming` message itself, may answer from any thread, and may return a job for a
pool thread; and it has the socket read by a :class:`ReceiverPool` instead of the loop.

Each message is checked here (size, signature) before anything in it is decoded; a call
becomes an :class:`Incoming` (``_incoming.py``), through which whoever runs it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import operator
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import zmq

from undertow._util import address_host, is_loopback
from undertow.errors import AuthenticationError, ConfigError, UndertowError
from undertow.rpc._incoming import Incoming, RawHandler
from undertow.rpc._metrics import CallStats
from undertow.rpc._receivers import Job, ReceiverPool
from undertow.security import ENVELOPE_MAGIC, Authenticator, ServerSeal, strip_envelope
from undertow.transport import PlainHub, ServerSocket, ServerTls, bind_router, local_address
from undertow.wire import (
    ErrorInfo,
    Header,
    Kind,
    MsgpackCodec,
    decode_header,
    encode_error,
    error_info,
    pack,
    pack_batch,
    payload_of,
    split_batch,
)

__all__ = ["MAX_FRAMES", "HandlerServer", "check_exposure"]

log = logging.getLogger(__name__)

_MSGPACK = MsgpackCodec()
_CALL, _CANCEL, _CREDIT = Kind.CALL, Kind.CANCEL, Kind.CREDIT
_buffer = operator.attrgetter("buffer")  # a ZeroMQ frame's memoryview, without a Python call


class HandlerServer:
    """An asyncio server with a table of named handlers.

    Args:
        handlers: name -> function taking keyword arguments (sync or ``async def``).
        name: shown in errors and reprs.
        on_cancel: called on the loop with the :class:`Incoming` a caller cancelled.
        auth: an authenticator (``undertow.security.TokenAuth``, say): every message must
            be signed by a key it knows, and answers are signed back (see :attr:`seal`).
    """

    def __init__(
        self,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
        *,
        name: str = "core",
        on_cancel: Callable[[Incoming], None] | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        self.name = name
        #: called on the loop with each call a caller cancelled (None: nobody is told)
        self.on_cancel = on_cancel
        self.handlers: dict[str, Callable[..., Any]] = dict(handlers or {})
        self.raw_handlers: dict[str, RawHandler] = {}
        self._sock: ServerSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._address = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active: dict[tuple[bytes, int], Incoming] = {}
        self.stats = CallStats()  #: every answered call, by function (``/metrics``)
        self._drain_scheduled = False
        self._pool: ReceiverPool | None = None
        self._loop_thread = 0
        #: checks signed messages and signs answers (None: nobody is authenticated)
        self.seal: ServerSeal | None = None if auth is None else ServerSeal(auth)
        #: with a seal: also serve callers that sign nothing (as identity None)
        self.allow_anonymous = False
        #: refuse messages larger than this many bytes (None: no limit)
        self.max_message_size: int | None = None
        self._refusals = 0
        self._next_refusal_log = 0.0
        self._hub: PlainHub | None = None
        self._plain_pool: ReceiverPool | None = None

    def __repr__(self) -> str:
        state = self._address or "not listening"
        return f"<HandlerServer {self.name!r} {state} [{len(self._active)} active]>"

    @property
    def address(self) -> str:
        """The address the server listens on (empty before :meth:`listen`)."""
        return self._address

    def names(self) -> list[str]:
        """Every name callers can use, sorted."""
        return sorted(n for n in {*self.handlers, *self.raw_handlers} if not n.startswith("_"))

    async def listen(
        self,
        address: str = "tcp://127.0.0.1:0",
        *,
        threads: int = 0,
        slow_after: float = 0.005,
        insecure: bool = False,
        curve_secret: str | None = None,
    ) -> str:
        """Bind ``address`` and start serving; returns the real address (port 0 is resolved).

        With ``threads=0`` the event loop reads the socket and jobs returned by raw handlers
        run in the loop's default executor. With ``threads >= 2`` a :class:`ReceiverPool`
        of that many threads reads it and runs jobs inline (see ``_receivers.py``).

        An address other than this machine's loopback is refused unless the server
        authenticates its callers (:attr:`seal`) or ``insecure`` says to serve anyone who
        can reach it. ``curve_secret`` (a Z85 secret key) encrypts every connection.
        """
        if self._sock is not None:
            raise UndertowError(f"server {self.name!r} already listens on {self._address}")
        check_exposure(address, authenticated=self.seal is not None, insecure=insecure)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        sock, self._address = bind_router(
            address, max_message_size=self.max_message_size, curve_secret=curve_secret
        )
        if threads:
            self._sock = ServerSocket(sock, coalesce=pack_batch, split=split_batch)
            self._pool = ReceiverPool(
                self._sock, self._dispatch, threads=threads, slow_after=slow_after, name=self.name
            )
            self._pool.start()
        else:
            # the loop owns the socket and waits on its descriptor
            self._sock = ServerSocket(sock, on_input=self._wake, split=split_batch)
            self._sock.own()
            self._loop.add_reader(self._sock.fd, self._drain)
            self._drain()
        log.info("server %r listening on %s", self.name, self._address)
        return self._address

    @property
    def plain_address(self) -> str | None:
        """The plain-socket address served next to ZeroMQ (None: none)."""
        return None if self._hub is None else self._hub.address

    @property
    def local_address(self) -> str | None:
        """The Unix socket also served for this host's clients (None: none)."""
        return None if self._hub is None else self._hub.local_address

    def listen_plain(
        self,
        address: str,
        *,
        threads: int,
        slow_after: float = 0.005,
        insecure: bool = False,
        tls: ServerTls | None = None,
    ) -> str | None:
        """Also serve on a plain socket (``tcp+plain://host:port``, ``unix:///path``; see
        ``transport/_plain.py``), read by a receiver pool of its own; the real address, or
        None for ``"auto"`` (TCP on the ZeroMQ address's interface) beside ipc or inproc.
        ``tls``: the TCP socket speaks TLS (``tls+plain://``)."""
        if self._sock is None:
            raise UndertowError(f"server {self.name!r}: listen() on ZeroMQ first")
        local = None
        if address == "auto":
            if not self._address.startswith("tcp://"):
                return None
            address = f"tcp+plain://{self._address[len('tcp://') :].rpartition(':')[0]}:0"
            local = local_address(self.name)  # this host's clients: shared memory for bulk
        if self._hub is not None:
            raise UndertowError(f"server {self.name!r} already listens on {self._hub.address}")
        if address.startswith(("tcp+plain://", "tls+plain://")):
            where = "tcp://" + address.partition("://")[2]
            check_exposure(where, authenticated=self.seal is not None, insecure=insecure)
        hub = PlainHub(
            address,
            max_message_size=self.max_message_size,
            keys=self._stream_key,
            local=local,
            tls=tls,
        )
        pool = ReceiverPool(
            hub,  # type: ignore[arg-type]  # a ServerSocket's shape, over plain sockets
            functools.partial(self._dispatch, via=hub),
            threads=max(2, threads),
            slow_after=slow_after,
            name=f"{self.name}-plain",
            # max_workers bounds the functions running over both transports together
            slots=None if self._pool is None else self._pool.slots,
        )
        self._hub, self._plain_pool = hub, pool
        pool.start()
        log.info("server %r also listening on %s", self.name, hub.address)
        return hub.address

    def _stream_key(self, key_id: str) -> tuple[str, bytes] | None:
        """The identity and secret of a key a plain connection's handshake names (None: not
        known, or this server authenticates nobody)."""
        key = None if self.seal is None else self.seal.auth.signing_key(key_id)
        return None if key is None else (key.identity, key.secret)

    async def close(self) -> None:
        """Stop serving: unanswered calls are dropped and running handler tasks cancelled."""
        if self._sock is None:
            return
        assert self._loop is not None
        if self._plain_pool is not None and self._hub is not None:
            hub, pool = self._hub, self._plain_pool
            await asyncio.to_thread(pool.stop)
            hub.close()
            self._hub = self._plain_pool = None
        if self._pool is not None:
            await asyncio.to_thread(self._pool.stop)
            self._pool = None
        else:
            self._loop.remove_reader(self._sock.fd)
        self._sock.close()
        self._sock = None  # the server may listen again
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        log.info("server %r on %s closed", self.name, self._address)

    def on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the server's event loop, from any thread."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    # -- plumbing -------------------------------------------------------------------------

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None and not self._drain_scheduled:
            self._drain_scheduled = True
            with contextlib.suppress(RuntimeError):  # loop closed while a worker finished
                loop.call_soon_threadsafe(self._drain)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a coroutine as a task the server tracks and cancels on close."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _drain(self) -> None:
        self._drain_scheduled = False
        sock = self._sock
        if sock is None:
            return
        while True:
            received = sock.recv_nowait()
            if received is None:
                return
            try:
                job = self._dispatch(*received)
            except Exception:  # one bad message must never stop the server
                log.exception("server %r: error while dispatching a message", self.name)
                continue
            if job is not None and self._loop is not None:
                self._loop.run_in_executor(None, job[1])

    def _dispatch(
        self, peer: bytes, frames: list[Any], identity: str | None = None, via: Any = None
    ) -> Job | None:
        """Handle one message from ``peer`` in whichever thread received it; may return a job
        to run. ``identity``: who signed the plain connection it came on (checked by the hub);
        ``via``: the plain-socket hub it came through (None: the ZeroMQ socket).

        Its size and signature are checked before anything in it is decoded.
        """
        view = frames[0].buffer
        rest = list(map(_buffer, frames[1:])) if len(frames) > 1 else []
        too_large = self._too_large(frames, view, rest) if rest else None
        if too_large is not None:
            self._refuse(peer, frames, too_large, code="too_large", via=via)
            return None
        seal = None
        if identity is not None:
            pass  # every message of its connection is checked (and answers tagged) by the hub
        elif view[:2] == ENVELOPE_MAGIC:
            try:
                if self.seal is None:  # nobody is authenticated here: serve it as anonymous
                    view = strip_envelope(view)
                else:
                    identity, seal, view = self.seal.open(view, rest)
            except AuthenticationError as exc:  # the peer is told little; the log says why
                self._refuse(peer, frames, _AUTH_FAILED, detail=str(exc), via=via)
                return None
        elif self.seal is not None and not self.allow_anonymous:
            self._refuse(peer, frames, self._unsigned_refused(), via=via)
            return None
        try:
            header = decode_header(view)
        except UndertowError as exc:
            log.debug("dropped a message from a peer: %s", exc)
            return None
        payload = payload_of(header, rest)
        if header.kind != _CALL:
            self._control(peer, header, payload)
            return None
        incoming = Incoming(self, peer, header, payload, identity, seal, via)
        self._active[(peer, header.call_id)] = incoming
        raw = self.raw_handlers.get(header.name)
        if raw is not None:
            return raw(incoming)
        handler = self.handlers.get(header.name)
        if handler is not None:
            self.on_loop(self._run_handler, incoming, handler)
        else:
            incoming.fail(self.not_found(header.name))
        return None

    def _too_large(self, frames: list[zmq.Frame], view: memoryview, rest: list[Any]) -> str | None:
        """Why a message is over the limits, or None. ZeroMQ itself drops a peer that sends
        one frame over ``max_message_size``; several frames under it may still add up to more."""
        if len(frames) > MAX_FRAMES:
            return f"a message of {len(frames):,} frames is over the limit of {MAX_FRAMES:,}"
        limit = self.max_message_size
        if limit is not None and rest:
            size = len(view) + sum(map(len, rest))
            if size > limit:
                return (
                    f"a message of {size:,} bytes is over this server's limit of {limit:,} "
                    "(max_message_size)"
                )
        return None

    def _refuse(
        self,
        peer: bytes,
        frames: list[zmq.Frame],
        reason: str,
        code: str = "auth",
        detail: str | None = None,
        via: Any = None,
    ) -> None:
        """Answer a message that is not served, without decoding it: an error for call 0,
        which the client applies to every call waiting on that socket. ``detail`` goes to
        the log only."""
        self._refusals += 1
        now = time.monotonic()
        if now >= self._next_refusal_log:  # at most one line per interval, however many come
            self._next_refusal_log = now + _REFUSAL_LOG_EVERY
            try:
                source = frames[0].get("Peer-Address")
            except (zmq.ZMQError, AttributeError):
                source = "a local peer"
            log.warning(
                "server %r refused a message from %s (%d refused so far): %s",
                self.name,
                source,
                self._refusals,
                detail or reason,
            )
        sock = self._sock if via is None else via
        if sock is not None:  # answered after the log line, so that the line is there first
            error = ErrorInfo("AuthenticationError", reason, code=code)
            sock.send(peer, pack(Kind.ERROR, 0, [encode_error(error)]))

    def _unsigned_refused(self) -> str:
        return (
            f"server {self.name!r} requires authentication: connect with token=... "
            "(or set UNDERTOW_TOKEN)"
        )

    def _control(self, peer: bytes, header: Header, payload: list[Any]) -> None:
        """A message about a call under way (CANCEL, CREDIT); anything else is dropped."""
        if header.kind not in (_CANCEL, _CREDIT):
            log.debug("dropped a %s message: servers take only CALL and CANCEL", header.kind.name)
            return
        incoming = self._active.get((peer, header.call_id))
        if incoming is None:
            return
        credit = incoming.credit
        if header.kind == Kind.CANCEL:
            incoming.cancelled = True
            if credit is not None:
                credit.close()
            if self.on_cancel is not None:
                self.on_loop(self.on_cancel, incoming)
        elif credit is not None and payload:
            with contextlib.suppress(UndertowError, TypeError, ValueError):
                credit.grant(int(_MSGPACK.decode(payload)))

    def not_found(self, name: str) -> ErrorInfo:
        """The error sent for a call to a name that is not served."""
        names = self.names()
        return ErrorInfo(
            type=name,
            message=(
                f"server {self.name!r} at {self._address} has no function {name!r}; "
                f"available: {names}"
            ),
            code="not_found",
            available=names,
        )

    def _run_handler(self, incoming: Incoming, handler: Callable[..., Any]) -> None:
        try:
            kwargs = (
                _MSGPACK.decode(incoming.frames) if incoming.frames and incoming.frames[0] else {}
            )
            if not isinstance(kwargs, dict):
                raise TypeError(
                    f"arguments must be a mapping of keyword arguments, not {type(kwargs).__name__}"
                )
            result = handler(**kwargs)
        except Exception as exc:  # handler failures go back to the caller
            incoming.fail(error_info(exc))
            return
        if inspect.isawaitable(result):
            self.spawn(self._finish_async(incoming, result))
        else:
            _reply_msgpack(incoming, result)

    async def _finish_async(self, incoming: Incoming, awaitable: Any) -> None:
        try:
            result = await awaitable
        except Exception as exc:  # handler failures go back to the caller
            incoming.fail(error_info(exc))
            return
        _reply_msgpack(incoming, result)


#: the most frames a message may have (a pickle's out-of-band buffers each take one)
MAX_FRAMES = 65536
#: what a peer whose signature was refused is told (the log says which check failed, and a
#: stranger learns nothing, such as which user names exist)
_AUTH_FAILED = (
    "authentication failed: an unknown or wrong token, a replayed message, or a clock more "
    "than the replay window (60 s by default) away from the server's; the server's log says which"
)
#: seconds between two log lines about refused messages
_REFUSAL_LOG_EVERY = 10.0


def check_exposure(address: str, *, authenticated: bool, insecure: bool) -> None:
    """Refuse to serve beyond this machine without authentication, unless told to."""
    if not address.startswith("tcp://") and "://" in address:
        return  # ipc and inproc stay on this machine
    host = address_host(address if "://" in address else f"tcp://{address}")
    if is_loopback(host) or authenticated:
        return
    if not insecure:
        raise ConfigError(
            f"refusing to serve on {address} without authentication: anyone who can reach "
            f"{host or 'it'} could call every function. Give the server tokens "
            "(Server(auth=TokenAuth(...)) or token=..., --tokens/--token for undertow serve), "
            "or pass insecure=True (--insecure) on a network you trust"
        )
    log.warning(
        "serving on %s WITHOUT authentication (insecure): anyone who can reach it can call "
        "every function",
        address,
    )


def _reply_msgpack(incoming: Incoming, value: Any) -> None:
    try:
        payload = _MSGPACK.encode(value)
    except UndertowError as exc:
        incoming.fail(error_info(exc, code="serialization"))
        return
    incoming.reply(payload, _MSGPACK.name)
