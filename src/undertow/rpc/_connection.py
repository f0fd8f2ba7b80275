"""What a client asks of its connection, and which connection an address gets.

There is one :class:`~undertow.Client` and one :class:`~undertow.AsyncClient`; what differs
per transport is the connection object they hold, chosen by the address's scheme from
:data:`SCHEMES` (``tcp://``, ``ipc://``, ``inproc://`` and a bare ``host:port``: ZeroMQ;
``http://``, ``https://``: HTTP). A connection is small (:class:`ClientConnection`,
:class:`AsyncClientConnection`): describe the server's functions, make a call (a result, a
stream of items, a future), close. Everything else (the function table, per-call settings,
lookup, the context managers) is the client's, written once.

A call is cancelled through what it returned: a future's ``cancel()``, a stream's
``close()``, a task's cancellation, or its deadline passing; each connection then tells its
server to stop the call.

This module is also the one defaults place of the clients (:data:`DEFAULT_TIMEOUT`) and the
one place that words a client's :class:`~undertow.errors.RPCTimeout`.
"""

from __future__ import annotations

import concurrent.futures
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from undertow.errors import ConfigError, RPCTimeout
from undertow.rpc._calls import Description, FunctionInfo, OutputCallback

__all__ = [
    "DEFAULT_TIMEOUT",
    "SCHEMES",
    "AsyncClientConnection",
    "ClientConnection",
    "ConnectOptions",
    "Scheme",
    "Settings",
    "scheme_of",
    "timeout_error",
]

#: a call's default deadline in seconds, for every client and transport
DEFAULT_TIMEOUT = 30.0

#: a call's settings as the client resolved them: its deadline in seconds (None: none),
#: whether it wants remote output, where that output goes, and whether its result is to stay
#: on the server (a pointer comes back instead)
Settings = tuple[float | None, bool, OutputCallback | None, bool]


@dataclass(frozen=True)
class ConnectOptions:
    """The client options a connection is made with (the rest are the client's own)."""

    #: the client's token (``NAME.SECRET``), None for none
    token: str | None = None
    codecs: Mapping[str, Any] | None = None
    safe_exceptions: tuple[type[BaseException], ...] = ()
    connect_wait: float | None = None
    curve_server_key: Any = None
    #: makes a :class:`~undertow.Pointer` of a pointer's JSON form in an answer
    pointer: Callable[[dict[str, Any]], Any] | None = field(default=None, compare=False)
    #: verifies a server's ``tls+plain://`` socket (an ``ssl.SSLContext``; None: not used)
    tls_ca: Any = field(default=None, compare=False)


class ClientConnection(Protocol):
    """A sync client's connection to one server; blocking methods block the calling thread."""

    #: the server's address as the connection names it
    address: str

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""

    def describe(self, timeout: float | None, challenge: str | None = None) -> Description:
        """The server's functions; raises :class:`RPCTimeout` if it does not answer. A
        transport whose tokens travel as they are (HTTP bearers) passes ``challenge`` on, for
        the server to prove it holds the user's own token before the client sends it."""

    def call(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> Any:
        """Run a function (not a generator) and return its result; remote output goes to
        the settings' sink as it comes, and a remote error is raised as its own type."""

    def stream(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> Iterator[Any]:
        """Start a generator function; its items as they arrive (each within the deadline)."""

    def submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> concurrent.futures.Future[Any]:
        """Start a function; a future whose ``cancel()`` stops the remote call."""

    def close(self) -> None:
        """Close; calls still waiting raise :class:`~undertow.errors.ConnectionClosed`."""


class AsyncClientConnection(Protocol):
    """An async client's connection, used on the event loop it was opened on."""

    address: str

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""

    async def describe(self, timeout: float | None, challenge: str | None = None) -> Description:
        """The server's functions."""

    def call(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> Awaitable[Any]:
        """Start a function; awaiting the result waits for it (cancelling stops the call)."""

    def stream(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> AsyncIterator[Any]:
        """Start a generator function; its items as they arrive."""

    async def aclose(self) -> None:
        """Close the connection."""


@dataclass(frozen=True)
class Scheme:
    """How addresses of one scheme are reached: its connection classes (``module:Class``,
    imported on first use) and the client options that mean nothing over that transport,
    each with the reason."""

    transport: str
    sync_class: str
    async_class: str
    refuses: Mapping[str, str] = field(default_factory=dict)
    #: tokens travel as they are (HTTP bearers), not as signatures: a client sends the
    #: user's own token only to a server that proved it holds it
    bearer: bool = False

    def connection(self, address: str, options: ConnectOptions) -> ClientConnection:
        """A sync connection to ``address``."""
        made: ClientConnection = _load(self.sync_class)(address, options)
        return made

    def async_connection(self, address: str, options: ConnectOptions) -> AsyncClientConnection:
        """An async connection to ``address`` (made on the running loop)."""
        made: AsyncClientConnection = _load(self.async_class)(address, options)
        return made

    def check(self, options: ConnectOptions) -> None:
        """Refuse options that do not apply over this transport, naming them and why."""
        for name, why in self.refuses.items():
            if getattr(options, name) is not None:
                raise ConfigError(f"{name} does not apply to {self.transport} addresses: {why}")


def _load(name: str) -> Any:
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


ZEROMQ = Scheme(
    "ZeroMQ", "undertow.rpc._conn_zmq:ZmqConnection", "undertow.rpc._conn_azmq:AsyncZmqConnection"
)
HTTP = Scheme(  # its module imports httpx: only when an HTTP address is used
    "HTTP",
    "undertow.rpc._conn_http:HttpConnection",
    "undertow.rpc._conn_http:AsyncHttpConnection",
    bearer=True,
    refuses={
        "connect_wait": "an HTTP call never waits for a connection; one that cannot connect "
        "fails at once with ConnectError",
        "curve_server_key": "CURVE encrypts ZeroMQ connections; for HTTP, put a TLS proxy "
        "in front of the server and use its https:// address",
        "tls_ca": "it verifies a server's tls+plain:// socket, which only ZeroMQ clients use",
    },
)

#: the connection of each address scheme; an address without one (``host:port``) is ZeroMQ's
SCHEMES: dict[str, Scheme] = {
    "tcp": ZEROMQ,
    "ipc": ZEROMQ,
    "inproc": ZEROMQ,
    "http": HTTP,
    "https": HTTP,
}


def scheme_of(address: str) -> Scheme:
    """The :class:`Scheme` that reaches ``address``."""
    scheme, sep, _ = address.partition("://")
    if not sep:
        return ZEROMQ  # host:port
    found = SCHEMES.get(scheme.lower())
    if found is None:
        raise ConfigError(
            f"no transport for {scheme}:// addresses (in {address!r}); use one of "
            f"{', '.join(f'{s}://' for s in SCHEMES)}, or host:port for ZeroMQ over TCP"
        )
    return found


def connect_options(
    *,
    token: str | None,
    codecs: Mapping[str, Any] | None,
    safe_exceptions: Iterable[type[BaseException]],
    connect_wait: float | None,
    curve_server_key: Any,
    pointer: Callable[[dict[str, Any]], Any],
    tls_ca: Any = None,
) -> ConnectOptions:
    """The connection's options, with ``connect_wait`` checked."""
    if connect_wait is not None and connect_wait <= 0:
        raise ValueError(
            f"connect_wait must be a positive number of seconds or None, not {connect_wait!r}"
        )
    return ConnectOptions(
        token, codecs, tuple(safe_exceptions), connect_wait, curve_server_key, pointer, tls_ca
    )


def timeout_error(where: str, timeout: float | None, *, connecting: bool = False) -> RPCTimeout:
    """The error of a call to ``where`` (``"add() at tcp://..."``) that did not answer within
    ``timeout``; ``connecting``: of the client asking the server at ``where`` (an address)
    for its functions, on creation or refresh."""
    within = "in time" if timeout is None else f"within {timeout:g} s"
    if connecting:
        return RPCTimeout(
            f"nothing answered at {where} {within}: is a server running there? To wait "
            "longer for it, pass connect(..., timeout=SECONDS) (or connect_timeout= for the "
            "first answer alone); to fail fast instead, a short connect_timeout"
        )
    return RPCTimeout(
        f"{where} did not answer {within} (is the server running? raise the deadline with "
        ".options(timeout=...))"
    )
