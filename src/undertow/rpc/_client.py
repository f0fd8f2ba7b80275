"""The client: remote functions as attributes, called from any number of threads.

One :class:`Client` for every transport: what differs is its connection, chosen by the
address's scheme (``rpc/_connection.py``). The ZeroMQ connection does its blocking I/O in the
calling thread (``rpc/_conn_zmq.py``), the HTTP one over httpx (``rpc/_conn_http.py``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from undertow._util import is_local_address
from undertow.rpc._calls import Description, FunctionInfo, OutputCallback
from undertow.rpc._conn_zmq import CallFuture
from undertow.rpc._connection import (
    DEFAULT_TIMEOUT,
    ClientConnection,
    ConnectOptions,
    Scheme,
    connect_options,
    scheme_of,
)
from undertow.rpc._functions import CallOptions, RemoteFunctions
from undertow.rpc._plane import make_pointer
from undertow.rpc._timing import explain_call
from undertow.security import find_client_token, parse_token, user_proof, user_token
from undertow.transport import client_tls

#: the built-in function that answers a server's figures
STATS_FUNCTION = FunctionInfo("_stats", forwards_output=False)

__all__ = [
    "DEFAULT_TIMEOUT",
    "CallFuture",
    "Client",
    "challenge_for",
    "connect",
    "functions",
    "prepare",
    "user_token_for",
]

log = logging.getLogger(__name__)


def prepare(
    client: RemoteFunctions,
    *,
    token: str | bool | None,
    codecs: Mapping[str, Any] | None,
    safe_exceptions: Iterable[type[BaseException]],
    connect_wait: float | None,
    curve_server_key: Any,
    tls_ca: Any = None,
) -> tuple[Scheme, ConnectOptions]:
    """The transport of ``client``'s address and the options of its connection, checked
    against it (for :class:`Client` and ``AsyncClient``)."""
    scheme = scheme_of(client.address)
    client._token = find_client_token(token)
    # where no plain socket is used, none is looked for in the environment or settings file
    unused = tls_ca is None and "tls_ca" in scheme.refuses
    options = connect_options(
        token=client._token,
        codecs=codecs,
        safe_exceptions=safe_exceptions,
        connect_wait=connect_wait,
        curve_server_key=curve_server_key,
        pointer=functools.partial(make_pointer, via=client),
        tls_ca=None if unused else client_tls(tls_ca),
    )
    scheme.check(options)
    return scheme, options


def challenge_for(scheme: Scheme) -> str | None:
    """What a client asks a server on connect to prove it holds the user's own token: a
    fresh random text where tokens travel as they are (HTTP), None where only signatures
    travel (ZeroMQ: a server that does not hold the token learns nothing from them)."""
    return secrets.token_hex(16) if scheme.bearer else None


def user_token_for(
    client: RemoteFunctions,
    explicit: str | bool | None,
    desc: Description,
    challenge: str | None,
) -> str | None:
    """The user's own token, when ``client`` has no token (none given, found in the
    environment or the settings file, nor refused with ``token=False``), the server on this
    machine says it accepts that user's token, this process can read it and, given a
    ``challenge``, the server proved that it holds the token."""
    if client._token is not None or explicit is False or not desc.user:
        return None
    found = user_token(create=False) if is_local_address(client.address) else None
    if found is None or parse_token(found)[0] != desc.user:
        return None
    if challenge is not None:
        proof = user_proof(found, challenge)
        if desc.proof is None or not hmac.compare_digest(desc.proof, proof):
            log.warning(
                "the server at %s says it takes the token of %r but did not prove it holds "
                "it; your token is not sent to it",
                client.address,
                desc.user,
            )
            return None
    return found


class Client(RemoteFunctions):
    """A connection to an undertow server whose attributes are the server's functions.

    On creation it asks the server for its functions, waiting up to ``connect_timeout`` for
    the server to come up. Each remote function carries its real signature and docstring::

        client = undertow.connect("tcp://127.0.0.1:5555")
        client.add(1, 2)                       # blocks, prints remote output as it comes
        future = client.add.submit(1, 2)       # concurrent.futures-style, also awaitable
        client.add.options(timeout=5)(1, 2)    # per-call deadline
        for row in client.rows(10): ...        # generator functions stream

    A function whose name collides with a method of the client is reachable as
    ``client["close"]``. The client is safe to use from many threads at once.

    The address's scheme picks the transport (see ``SCHEMES`` in ``rpc/_connection.py``):
    ZeroMQ for ``tcp://host:port``, ``host:port``, ``ipc://path`` and ``inproc://name``; HTTP
    for ``http://`` and ``https://`` (the ``http`` extra), where arguments and results are
    plain values and the options that only mean something to ZeroMQ (``connect_wait``,
    ``curve_server_key``) are refused with a :class:`~undertow.errors.ConfigError`.

    Args:
        address: where the server listens, as above.
        timeout: default deadline of each call in seconds (None waits forever).
        connect_timeout: how long to wait for the server on creation (default: ``timeout``).
        token: this client's token (``NAME.SECRET``): every message is signed with it and
            the server's replies must be signed with it too. Default: ``$UNDERTOW_TOKEN``,
            else ``token`` in ``~/.undertow/config.toml``, else, for a server on this machine
            that says it accepts it, the user's own token
            (:func:`undertow.security.user_token`); False: no token at all.
        codecs: extra codecs by name, for functions with a custom serialization.
        safe_exceptions: exception types raised as themselves when the server raises them.
        output: True prints remote output locally, False drops it (and asks the server not
            to send it), or a callable ``(stream, text)`` that receives it.
        connect_wait: None (default): a call made while the server is away waits for it
            within its deadline. A number of seconds: calls are sent only over an
            established connection; one waits at most this long for it and then raises
            :class:`~undertow.errors.NotConnected` (nothing was sent), and a blocking call
            whose connection drops raises :class:`~undertow.errors.ConnectionLost` at once.
            For clients that can go elsewhere, such as a service's several instances.
        curve_server_key: the server's CURVE public key (Z85 text, or its ``.key`` file):
            the connection is encrypted, and only that server can answer.
        tls_ca: the PEM file of the certificate authority that signed the certificate of a
            server whose plain socket speaks TLS (``tls+plain://``), or an
            :class:`ssl.SSLContext`: blocking calls then go over that socket, the server's
            certificate verified for the host of ``address``. Default: ``$UNDERTOW_TLS_CA``,
            else ``tls_ca`` in ``~/.undertow/config.toml``; without one (or with False),
            such a server's calls stay on ZeroMQ.
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
        scheme, options = prepare(
            self,
            token=token,
            codecs=codecs,
            safe_exceptions=safe_exceptions,
            connect_wait=connect_wait,
            curve_server_key=curve_server_key,
            tls_ca=tls_ca,
        )
        self._conn_options = options
        self._conn: ClientConnection = scheme.connection(address, options)
        self.address = self._conn.address
        try:
            self._open(token, connect_timeout if connect_timeout is not None else timeout)
        except BaseException:
            self._conn.close()
            raise

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._bound:
            self.refresh()
        return self._lookup(name)

    def _open(self, token: str | bool | None, timeout: float | None) -> None:
        """Learn the server's functions; sign from now on with the user's own token if the
        server asks for it (a new connection: each has its signing session)."""
        scheme = scheme_of(self.address)
        challenge = challenge_for(scheme)
        desc = self._conn.describe(timeout, challenge)
        found = user_token_for(self, token, desc, challenge)
        if found is not None:
            options = dataclasses.replace(self._conn_options, token=found)
            self._conn.close()
            self._token = found
            self._conn = scheme.connection(self.address, options)
            desc = self._conn.describe(timeout)
        self._install_functions(desc, self._invoke, self._submit)

    def refresh(self, timeout: float | None = None) -> None:
        """Ask the server again for its functions (after it added or changed some)."""
        desc = self._conn.describe(timeout or self.timeout)
        self._install_functions(desc, self._invoke, self._submit)

    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the remote function ``name``; the same as ``client.name(*args, **kwargs)``."""
        return self._lookup(name)(*args, **kwargs)

    def submit(self, name: str, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Start the remote function ``name`` and return a future for its result (a
        :class:`CallFuture` over ZeroMQ, also awaitable; a plain one over HTTP). Its
        ``cancel()`` works until the result arrives and stops the remote call."""
        fn: Any = self._lookup(name)
        result: concurrent.futures.Future[Any] = fn.submit(*args, **kwargs)
        return result

    def _explain_call(self) -> str:
        """``undertow.explain(client)``: where the time of the last blocking call made
        through this client went."""
        call = getattr(self._conn, "last_call", None)
        if call is None:
            return f"no call made through the client for {self.address} has been timed"
        return explain_call(call, self.address)

    def close(self) -> None:
        """Close the connection; calls still waiting raise :class:`ConnectionClosed`."""
        self._conn.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._conn.closed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the calls ----------------------------------------------------------------------------

    def _invoke(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        if info.streams:
            return self._conn.stream(info, args, kwargs, self._settings(opts))
        return self._conn.call(info, args, kwargs, self._settings(opts))

    def _post(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
    ) -> None:
        """A one-way call over ZeroMQ (the patterns' messages between servers): sent, never
        answered; :class:`NotConnected` if it could not be sent."""
        post = getattr(self._conn, "post", None)
        if post is None:
            raise TypeError(f"one-way calls go over ZeroMQ, not {self.address}")
        post(info, args, kwargs, timeout)

    def _submit(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> Any:
        if info.streams:
            raise TypeError(
                f"{info.name}() is a generator function; iterate over {info.name}(...) instead"
            )
        return self._conn.submit(info, args, kwargs, self._settings(opts))


def functions(client: RemoteFunctions) -> dict[str, Callable[..., Any]]:
    """The remote functions of a ``Client`` or ``AsyncClient``, by name, as last described."""
    return dict(client._bound)


def connect(address: str, **options: Any) -> Client:
    """Connect to the server at ``address``; options are those of :class:`Client`, whose
    transport the address's scheme picks (``http://`` and ``https://``: HTTP)."""
    return Client(address, **options)


def stats(target: Any, timeout: float | None = None) -> dict[str, Any]:
    """The figures of a :class:`Server` (``server.stats()``), of the server a sync
    :class:`Client` is connected to (asked over the connection), or of a
    :class:`~undertow.Cluster` or job queue (``.stats()``). A function, not a client method:
    ``client.stats`` stays the server's own function of that name, if it has one."""
    if isinstance(target, Client):
        options = CallOptions(timeout=timeout or target.timeout, output=False)
        figures: dict[str, Any] = target._invoke(STATS_FUNCTION, (), {}, options)
        return figures
    asked = getattr(type(target), "stats", None)
    if asked is None:
        raise TypeError(
            f"undertow.stats() takes a Server, a Client, a Cluster or a JobQueue, not "
            f"{type(target).__name__}"
        )
    figures = asked(target)
    return figures
