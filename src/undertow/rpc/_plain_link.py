"""Blocking calls over a server's plain socket, each thread on a connection of its own.

A server that also serves a plain socket (``Server.serve(plain=...)``) says so when it
describes itself. A sync client then makes its blocking calls over that socket instead of
ZeroMQ: the calling thread writes the request and reads the answer itself, so no I/O thread
wakes on either side. Streams, futures and one-way calls stay on ZeroMQ, as does every call
when the plain socket cannot be reached (it is tried once per thread) or the client
encrypts with CURVE (a plain socket carries calls in clear) and the server's plain socket
does not speak TLS. A ``tls+plain://`` socket is used only by a client given the certificate
authority to verify it with (``tls_ca``), for the host the client asked for.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from undertow.errors import ConnectError, UndertowError
from undertow.rpc._blocking import run_call
from undertow.rpc._calls import Call, Protocol
from undertow.security import SigningKey
from undertow.transport import PlainSocket, cert_refused, is_tls

__all__ = ["PlainLink"]

log = logging.getLogger(__name__)

#: seconds a thread waits for its plain connection before it keeps to ZeroMQ
_CONNECT_WAIT = 2.0
#: seconds a thread whose plain connection could not be made keeps to ZeroMQ
_RETRY_AFTER = 10.0


class PlainLink:
    """The plain-socket connections of one sync client, a thread each.

    Args:
        address: the server's plain address, as it described itself.
        key: signs each connection (a handshake, then a tag a message), None: unsigned.
        limit: the largest message taken from the server (None: no limit).
        on_unreachable: called when a connection cannot be made (at most every 10 s).
        tls: verifies a ``tls+plain://`` server's certificate (None: such a server's calls
            stay on ZeroMQ).
        server_name: the host the client reached the server at (its ZeroMQ address's): a
            TLS certificate must be for it, and it stands in for a wildcard host in
            ``address`` (a server on every interface). None: the address's host.
    """

    def __init__(
        self,
        address: str,
        *,
        key: SigningKey | None,
        limit: int | None,
        on_unreachable: Callable[[], None] | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self.address = address
        self._key = key
        self._limit = limit
        self._tls, self._server_name = tls, server_name
        #: where this client connects: ``address``, reachable from here
        self.target = _reachable(address, server_name)
        #: a TLS socket this client cannot verify: never tried (verification is never skipped)
        self._unverifiable = is_tls(address) and tls is None
        if self._unverifiable:
            log.info(
                "%s speaks TLS and this client has no tls_ca to verify it with: blocking "
                "calls go over ZeroMQ",
                self.target,
            )
        self._warned = False
        #: called (once per retry period) when a connection cannot be made: the server may
        #: have restarted on another port, which describing it again tells
        self._on_unreachable = on_unreachable
        self._told_at = float("-inf")
        self._local = threading.local()
        self._open: weakref.WeakSet[PlainSocket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.closed = False

    def _socket(self) -> PlainSocket | None:
        """This thread's connection (made on first use, and again once the server closed
        it: a server that restarted); None while it cannot be had."""
        local = self._local
        sock: PlainSocket | None = getattr(local, "sock", None)
        if sock is not None:
            if sock.alive():
                return sock
            sock.close()
            local.sock = None
        if self.closed or self._unverifiable or getattr(local, "retry_at", 0.0) > time.monotonic():
            return None
        try:
            sock = PlainSocket(
                self.target,
                timeout=_CONNECT_WAIT,
                limit=self._limit,
                key=self._key,
                tls=self._tls,
                server_name=self._server_name,
            )
        except ConnectError as exc:
            log.debug("calls stay on ZeroMQ for %g s: %s", _RETRY_AFTER, exc)
            now = time.monotonic()
            local.retry_at = now + _RETRY_AFTER
            if cert_refused(exc):  # not a server that moved: say so once, tell nobody
                self._refused(exc)
            elif self._on_unreachable is not None and now - self._told_at >= _RETRY_AFTER:
                self._told_at = now
                self._on_unreachable()
            return None
        # the thread's slot holds the only reference: when the thread ends, the connection is
        # collected and its socket closed (the finalizer must not hold the PlainSocket itself)
        weakref.finalize(sock, _release, sock.sock, sock._reader)
        local.sock = sock
        with self._lock:
            self._open.add(sock)
        return sock

    def _refused(self, exc: ConnectError) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "the TLS certificate of %s did not verify, so blocking calls go over ZeroMQ "
                "(is tls_ca the authority that signed it, and is it for %r?): %s",
                self.target,
                self._server_name or self.target,
                exc,
            )

    def usable(self) -> bool:
        """True when this thread's calls can go over the plain socket now."""
        return self._socket() is not None

    def call(self, call: Call, frames: list[Any], deadline: float | None) -> bool | None:
        """Send ``call`` and read its messages until it is done; False if the deadline passed
        first (the server is then asked to stop the call); None, with nothing sent, when the
        plain socket cannot be had (the call goes over ZeroMQ)."""
        sock = self._socket()
        if sock is None:
            return None
        with sock.lock:
            try:
                # a signed connection checks every message itself: the messages carry no
                # envelope, and what it delivers counts as signed
                return run_call(
                    sock,
                    None,
                    call,
                    frames,
                    deadline,
                    self.target,
                    self,
                    verified=sock.session is not None,
                )
            finally:
                if not call.done and not sock.lost() and not self.closed:
                    with contextlib.suppress(UndertowError):
                        sock.send(Protocol.cancel_frames(call.call_id))

    def close(self) -> None:
        """Close every thread's connection."""
        self.closed = True
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            sock.close()


#: hosts a server names when it listens on every interface, which no client can connect to
_WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 - recognised, not bound


def _reachable(address: str, host: str | None) -> str:
    """``address`` (a plain TCP address) with ``host`` in place of a wildcard host."""
    scheme, sep, rest = address.partition("://")
    where, _, port = rest.rpartition(":")
    if not sep or scheme == "unix" or not host or where.strip("[]") not in _WILDCARDS:
        return address
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _release(raw: Any, reader: Any) -> None:
    """Close a thread's connection once the thread is gone: its socket, and any descriptors
    of shared-memory frames that came with it and were never taken."""
    raw.close()
    reader.close()
