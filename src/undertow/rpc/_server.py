"""The function server: register functions, configure them by glob, serve them.

A call's checks and answer: ``_dispatch.py``; the server under it: ``_core.py``; HTTP
(``_gateway.py``) comes in through ``function``, ``authenticate``, ``dispatch``, ``cancel``."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from undertow.config import ServerSettings
from undertow.errors import ConfigError, UndertowError
from undertow.rpc._calls import FunctionInfo
from undertow.rpc._core import HandlerServer
from undertow.rpc._dispatch import Dispatcher
from undertow.rpc._entry import Entry
from undertow.rpc._incoming import Incoming, RawHandler
from undertow.rpc._metrics import CallStats
from undertow.rpc._observe import snapshot, stats_handler
from undertow.rpc._options import GlobTable
from undertow.rpc._plane import make_data_plane, make_job_plane, make_pipe_plane
from undertow.rpc._receivers import Job
from undertow.rpc._setup import (
    accept_user_token,
    checked_auth,
    describe,
    plain_to_serve,
    refuse_user_token_beyond_loopback,
    runs_code,
    server_settings,
    tls_of,
)
from undertow.rpc._tracing import configured_tracer
from undertow.security import Authenticator, ServerSeal
from undertow.transport import load_secret
from undertow.wire import ErrorInfo, MsgpackCodec

__all__ = ["Server"]

F = TypeVar("F", bound=Callable[..., Any])

_MSGPACK = MsgpackCodec()


class Server:
    """Serves Python functions to undertow clients.

    ::

        server = undertow.Server(name="lab")

        @server.register
        def add(x: int, y: int = 1) -> int:
            "Add two numbers."
            print("adding", x, y)          # appears in the caller's output, live
            return x + y

        server.config({"*_np": {"input_serialization": "pickle", "output_serialization": "pickle"}})
        server.serve_forever("127.0.0.1", 5555)      # or: address = server.start()

    Plain functions run in a bounded pool of threads, ``async def`` functions on the event loop
    and generator functions stream their items. Options are chosen per function by the first
    matching glob given to :meth:`config`; :meth:`describe` shows the outcome.

    Its settings (:class:`~undertow.config.ServerSettings`) come from ``settings=``, or else
    from the keyword options below, each one not given taken from ``UNDERTOW_<OPTION>`` in
    the environment, then ``[server]`` in ``~/.undertow/config.toml``, then its default.

    With no ``auth`` and no ``token``, a server that serves pickle (which runs code when
    decoded) and listens on loopback accepts the token of the user who runs it
    (:func:`undertow.security.user_token`, made on first use, readable by that user only),
    and so do the clients of that user, with nothing to set up; other callers reach only the
    functions that do not take or return pickle. Beyond loopback, give it tokens.

    Args:
        name: the server's name, shown to clients.
        settings: all the options below at once, as a ``ServerSettings``.
        max_workers: how many plain functions may run at once (default: ``min(32, cpus + 4)``);
            the pool has one thread more, which always stays free to receive.
        auth: an :class:`~undertow.security.Authenticator` (such as ``TokenAuth``): every
            message must then be signed by a key it knows, replies are signed back, and
            functions that take or return pickle may be served.
        token: shorthand for ``auth=TokenAuth([token])``: one user.
        allow_anonymous: with ``auth``, still serve callers that sign nothing (identity
            None), but never functions that take or return pickle.
        insecure: allow serving on an interface other than loopback without ``auth``.
        max_message_size: the largest message accepted, in bytes (None: no limit). A client
            learns it and refuses to send a larger call; a peer that sends one anyway is
            refused (or, for one frame over it, disconnected by ZeroMQ).
        curve_secret: a CURVE secret key (Z85 text, or the ``.key_secret`` file from
            ``undertow keygen``): every connection is encrypted.
        replay_window: seconds a signed message's timestamp may differ from this clock.
        plain: a plain socket for sync clients' blocking calls: ``"auto"`` (TCP beside a TCP
            address, a free port), ``tcp+plain://host:port``, ``unix:///path`` or None.
        tls_cert: a PEM certificate chain: the plain TCP socket speaks TLS (``tls+plain://``).
        tls_key: its private key's PEM file (None: in ``tls_cert``).
        tls_handshake_timeout: seconds a TLS connection may take over its handshake.
        data_dir: where the server's data store spills values past ``memory_limit``
            (default: ``~/.undertow/data/<name>``); spilled values survive a restart.
        memory_limit: bytes of values (results kept with ``return_pointer``, uploads with
            :func:`undertow.put`) held in memory before the least recently used spill.
        data_calls: let pointer holders call public methods of the values
            (``ptr.call("sum")``); False allows items, attributes and lengths only.
    """

    #: the host name pointers carry when the server listens on every interface
    advertise: str | None = None
    #: the backend the jobs of queued functions go through (None: the default one)
    job_backend: str | None = None
    #: the registry its pipelines find the next stages in (None: the default one)
    registry_url: str | None = None
    loop: asyncio.AbstractEventLoop | None = None  #: the event loop it serves on, once it does

    def __init__(
        self,
        name: str | None = None,
        *,
        settings: ServerSettings | None = None,
        auth: Authenticator | None = None,
        token: str | None = None,
        **options: Any,
    ) -> None:
        settings = server_settings(name, settings, options)
        auth = checked_auth(auth, token)
        self._tls = tls_of(settings)  # bad certificate files fail here, before anything is made
        #: the settings it was made with
        self.settings = settings
        self.name = settings.name
        #: the data server: values kept here, served to pointer holders
        # the token is shown to other data servers this one fetches from
        self.data = make_data_plane(
            self,
            directory=settings.data_dir,
            memory_limit=settings.memory_limit,
            calls=settings.data_calls,
            token=token,
        )
        #: the server's part in masters, pipelines and sinks
        self.pipes = make_pipe_plane(self, token=token)
        self._max_workers = settings.max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._auth = auth
        #: the user's own token, if it is what the server accepts (given none, it serves pickle)
        self._user_token: str | None = None
        self._insecure = settings.insecure
        self._plain = settings.plain
        curve = settings.curve_secret
        self._curve = None if curve is None else load_secret(curve)
        self._fns: dict[str, Callable[..., Any]] = {}
        self._globs = GlobTable()
        self._entries: dict[str, Entry] = {}
        self._core = HandlerServer(name=self.name)
        self._core.seal = None if auth is None else ServerSeal(auth, settings.replay_window)
        self._core.allow_anonymous = settings.allow_anonymous
        self._core.max_message_size = settings.max_message_size
        self._calls = Dispatcher(self.name, self._core, self.data)
        self._core.on_cancel = self._calls.cancel
        self._rebuild({}, self._globs)
        self._http: Any = None  # the HTTP server, while one serves
        self._gateway: Any = None  # what the HTTP server calls
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    def __repr__(self) -> str:
        where, count = self._core.address or "not serving", len(self._fns)
        return f"<Server {self.name!r} {where} [{count} function{'' if count == 1 else 's'}]>"

    @property
    def call_stats(self) -> CallStats:
        """The counts behind :meth:`stats` (every transport adds to them)."""
        return self._core.stats

    def stats(self) -> dict[str, Any]:
        """Its figures: calls by function (answered, errors, time, bytes, output lines), calls
        in flight, its data, what it passed on in a pattern (docs/guide.md, "Observing");
        ``/metrics`` says the same."""
        c = self._core
        return snapshot(self.name, c.address, c.stats, len(c._active), self.data, self.pipes)

    @property
    def address(self) -> str:
        """Where the server listens (empty until it serves)."""
        return self._core.address

    @property
    def http_address(self) -> str:
        """Where the server listens for HTTP (``http://host:port``; empty if it does not)."""
        return "" if self._http is None else str(self._http.address)

    @property
    def plain_address(self) -> str:
        """Where the server listens on a plain socket (empty if it does not)."""
        return self._core.plain_address or ""

    @property
    def local_address(self) -> str:
        """The Unix socket for clients on this host (empty: none; ``plain="auto"`` has one)."""
        return self._core.local_address or ""

    @property
    def authenticates(self) -> bool:
        """True when callers must (or, with ``allow_anonymous``, may) sign their messages."""
        return self._auth is not None

    @property
    def curve_public_key(self) -> str | None:
        """The public half of the CURVE key (Z85), which clients need; None without CURVE."""
        return None if self._curve is None else self._curve[0]

    # -- registration and options ------------------------------------------------------------

    @overload
    def register(self, name: F, fn: None = None) -> F: ...
    @overload
    def register(self, name: str, fn: F) -> F: ...
    @overload
    def register(self, name: str | None = None, fn: None = None) -> Callable[[F], F]: ...

    def register(self, name: Any = None, fn: Any = None) -> Any:
        """Serve ``fn`` under ``name``; also a decorator, bare or with a name.

        ``server.register("add", add)``, ``@server.register`` or ``@server.register("add")``.
        Registering a name again replaces the function.
        """
        if callable(name) and fn is None:
            return self.register(name.__name__, name)
        if fn is None:
            return lambda f: self.register(f.__name__ if name is None else name, f)
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ConfigError(
                f"function name {name!r} must be a Python identifier not starting with '_'"
            )
        if not callable(fn):
            raise ConfigError(f"cannot register {fn!r} as {name!r}: it is not callable")
        self._rebuild({**self._fns, name: fn}, self._globs)
        return fn

    def config(self, table: Mapping[str, Mapping[str, Any]]) -> None:
        """Set options by glob; replaces any earlier table. The first matching glob wins.

        Options: ``input_serialization``, ``output_serialization`` (``"msgpack"``,
        ``"json"``, ``"pickle"`` or an object with dumps/loads), ``timeout`` (seconds),
        ``output`` (forward stdout/stderr), ``auth`` (a rule
        ``(identity, name, args, kwargs) -> bool`` that allows or denies each call, such as
        ``undertow.security.allow("alice")``), and the reserved ``return_pointer``.
        """
        self._rebuild(self._fns, self._globs.replaced(table))

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each function's kind, the glob that chose its options, and those options."""
        return {
            name: {"mode": e.mode, "glob": e.glob, **e.options.summary()}
            for name, e in sorted(self._entries.items())
        }

    def info(self) -> list[FunctionInfo]:
        """What clients learn about each function on connect: name, signature, docstring,
        kind and codecs, in registration order."""
        return [e.info for e in self._entries.values()]

    def _rebuild(self, fns: dict[str, Callable[..., Any]], globs: GlobTable) -> None:
        """Work out every function's options; commit only if all of them are valid."""
        entries = {}
        for name, fn in fns.items():
            glob, options = globs.lookup(name)
            entries[name] = Entry(name, fn, glob, options)
        if self._auth is None and runs_code(entries):
            refuse_user_token_beyond_loopback(self.address, entries)
            accept_user_token(self)
        self._fns, self._globs, self._entries = dict(fns), globs, entries
        self._calls.entries = entries
        handlers: dict[str, RawHandler] = dict.fromkeys(entries, self._calls.handle)
        handlers["_describe"] = self._describe
        handlers["_stats"] = stats_handler(self.stats, _MSGPACK.encode)
        handlers.update(self.data.handlers())
        handlers.update(self.pipes.handlers())
        self._core.raw_handlers = handlers

    def accept_user_token(self) -> None:
        """Take pickle from the user who runs the server (its own token), as a server with
        pickle functions does, for pickle that comes another way (the patterns' messages);
        nothing changes for a server given tokens. Other callers stay anonymous."""
        accept_user_token(self)

    def description(self, challenge: str | None = None) -> dict[str, Any]:
        """What a client is told on connect (over every transport): name, functions, whether
        it checks signatures, its size limit, its plain and local sockets, and (``user``) whose
        own token it accepts, if it serves pickle with no tokens given; given a ``challenge``,
        its proof that it holds that token (``proof``), asked before an HTTP bearer is sent."""
        queued = any(e.options.queue for e in self._entries.values())
        return describe(self, self._core, self._user_token, queued, challenge)

    def _describe(self, incoming: Incoming) -> Job | None:
        incoming.reply(_MSGPACK.encode(self.description()), _MSGPACK.name)
        return None

    # -- serving -----------------------------------------------------------------------------

    async def serve(
        self,
        address: str = "tcp://127.0.0.1:0",
        *,
        ready: Callable[[str], None] | None = None,
        http_port: int | None = None,
        plain: str | None = "",
    ) -> None:
        """Serve on the running loop until :meth:`stop` (or cancellation).

        ``http_port``: also serve the functions over HTTP on this port (0: a free one) of
        the same interface (see :attr:`http_address`; needs ``pip install 'undertow[http]'``).
        ``plain``: a plain socket for sync clients' blocking calls (default: the ``plain``
        setting, ``"auto"``; see the class)."""
        plain = self._plain if plain == "" else plain
        plain = plain_to_serve(plain, curve=self._curve is not None, tls=self._tls is not None)
        if self._user_token is not None:
            refuse_user_token_beyond_loopback(address, self._entries)
        self.loop = self._calls.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._core.stats.tracer = configured_tracer()  # spans of calls, if set up
        try:
            real = await self._listen(address, http_port, plain)
            if ready is not None:
                ready(real)
            jobs = make_job_plane(self)  # calls of queued functions are jobs: run them
            if jobs is not None:
                jobs.start()
            try:
                await self._stop.wait()
            finally:
                if jobs is not None:
                    await jobs.close(timeout=10.0)
        finally:
            if self._http is not None:
                await self._http.close()
                self._http = None
                self._gateway.close()
            self.pipes.close()
            self.data.stopped()  # values in shared memory: peers ask again (and find nobody)
            await self._core.close()

    async def _listen(self, address: str, http_port: int | None, plain: str | None) -> str:
        """Listen on ZeroMQ, then the plain socket and HTTP if asked; the ZeroMQ address.
        Receivers: ``max_workers`` + 1 threads a transport, ``max_workers`` running in all."""
        threads = self._max_workers + 1
        real = await self._core.listen(
            address,
            threads=threads,
            insecure=self._insecure,
            curve_secret=None if self._curve is None else self._curve[1],
        )
        if plain is not None:
            self._core.listen_plain(plain, threads=threads, insecure=self._insecure, tls=self._tls)
        if http_port is not None:
            from undertow.rpc._gateway import serve_gateway  # starlette: only when asked

            self._gateway, self._http = await serve_gateway(self, real, http_port)
        return real

    def serve_forever(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        address: str | None = None,
        quiet: bool = False,
        http_port: int | None = None,
    ) -> None:
        """Serve until SIGINT or SIGTERM, then stop cleanly. Binds 127.0.0.1 unless told otherwise.

        Prints ``undertow: serving NAME on ADDRESS`` once listening (unless ``quiet``), and
        ``undertow: serving NAME over HTTP on URL`` with ``http_port``.
        """
        target = address or f"tcp://{host}:{port}"

        def announce(real: str) -> None:
            if not quiet:
                print(f"undertow: serving {self.name!r} on {real}", flush=True)  # noqa: T201
                if self._http is not None:
                    http = f"undertow: serving {self.name!r} over HTTP on {self.http_address}"
                    print(http, flush=True)  # noqa: T201

        async def main() -> None:
            loop = asyncio.get_running_loop()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.stop)
            await self.serve(target, ready=announce, http_port=http_port)

        asyncio.run(main())

    def start(
        self,
        address: str = "tcp://127.0.0.1:0",
        *,
        timeout: float = 10.0,
        http_port: int | None = None,
        plain: str | None = "",
    ) -> str:
        """Serve from a background thread (for notebooks and tests); returns the real address
        (with ``http_port``, :attr:`http_address` says where HTTP is served; with ``plain``,
        :attr:`plain_address` where the plain socket is)."""
        if self._thread is not None:
            raise UndertowError(f"server {self.name!r} is already serving on {self.address}")
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            ready, http = (lambda _: started.set()), http_port
            try:
                asyncio.run(self.serve(address, ready=ready, http_port=http, plain=plain))
            except BaseException as exc:  # reported to the thread that called start()
                failure.append(exc)
                started.set()

        name = f"undertow-server-{self.name}"
        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise UndertowError(f"server {self.name!r} did not start within {timeout:g} s")
        if failure:
            self._thread = None
            raise failure[0]
        return self.address

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving; from another thread, waits up to ``timeout`` for the server to close."""
        loop, stop = self.loop, self._stop
        if loop is None or stop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop is already closed
            return
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Server:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- calls that other transports (the HTTP gateway) receive: ZeroMQ's checks and code ----

    @property
    def max_message_size(self) -> int | None:
        """The largest message (HTTP: request body) accepted, in bytes; None: no limit."""
        return self._core.max_message_size

    @property
    def max_workers(self) -> int:
        """How many plain functions may run at once."""
        return self._max_workers

    @property
    def allows_anonymous(self) -> bool:
        """True when callers that present no token are served (always, without ``auth``)."""
        return self._auth is None or self._core.allow_anonymous

    @property
    def authenticator(self) -> Authenticator | None:
        """Who may call (and whose pickled jobs its worker runs); None for anyone."""
        return self._auth

    def authenticate(self, token: str) -> str | None:
        """The identity whose token ``token`` is (a bearer token, say); None when no key of
        the server's authenticator matches, or the server authenticates nobody."""
        return None if self._auth is None else self._auth.authenticate(token)

    def function(self, name: str) -> Entry | None:
        """The registered function ``name`` with its options; None if there is none."""
        return self._entries.get(name)

    def dispatch(self, incoming: Incoming) -> Job | None:
        """Check and start a call that another transport received, as if it had come over
        ZeroMQ: a registered function, or a function every server has (``_data_*``); any
        other name is answered "not found". From the server's loop. Returns a job for a pool
        thread (a plain function), which the transport runs; None: the call was answered, or
        it runs on the loop. Its answers go to ``incoming`` (a subclass says where)."""
        handler = self._core.raw_handlers.get(incoming.header.name)
        if handler is None:
            incoming.fail(self._core.not_found(incoming.header.name))
            return None
        return handler(incoming)

    def cancel(self, incoming: Incoming) -> None:
        """From the server's loop: stop a call whose caller went away (an ``async`` function
        is cancelled; a plain function's ``incoming.cancelled`` is set)."""
        self._calls.cancel(incoming)

    def not_found(self, name: str) -> ErrorInfo:
        """The error for a call to ``name``, which is not served here."""
        return self._core.not_found(name)
