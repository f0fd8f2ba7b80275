"""TLS on the plain TCP socket (stdlib :mod:`ssl`), for hosts whose calls must not travel in
clear.

A server given a certificate chain and its key (settings ``tls_cert``, ``tls_key``) speaks TLS
on its plain TCP listener and names it ``tls+plain://host:port``; inside TLS everything is as
on ``tcp+plain://`` (greetings, framing, the signed connection). A client verifies the
server's certificate against the certificate authority it is given (``tls_ca``), and the host
name it meant; a client without one keeps its calls on ZeroMQ. Unix sockets (one user's,
on one host) never use TLS.

Both sides keep TLS sockets non-blocking. A server's hub drives each handshake from its
selector (:meth:`TlsStream.handshake`) and reads with :meth:`TlsStream.recv_into` until the
stream has nothing more decrypted (:meth:`TlsStream.pending`: bytes OpenSSL already holds are
invisible to a selector). OpenSSL's connection object must not be used by two threads at
once, and a server answers from other threads than the one that reads: every call into it
holds the stream's lock, which is never held while waiting for the network.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from undertow.config import config_file, read_config_file
from undertow.errors import ConfigError
from undertow.security import StreamSession
from undertow.transport._plain_wire import tagged_message

__all__ = [
    "CA_ENV",
    "HANDSHAKE_TIMEOUT",
    "TLS_PREFIX",
    "ServerTls",
    "TlsStream",
    "cert_refused",
    "client_tls",
    "is_tls",
    "server_tls",
]

#: the scheme a server names its plain TCP socket by when it speaks TLS there
TLS_PREFIX = "tls+plain://"
#: seconds a server gives a new connection to finish its TLS handshake
HANDSHAKE_TIMEOUT = 10.0
#: the environment variable a client finds its certificate authority in, if not given one
CA_ENV = "UNDERTOW_TLS_CA"
#: bytes handed to OpenSSL in one write (it cuts them into records of 16 KiB)
_WRITE = 256 * 1024
_FIX_CERT = "give the PEM file of the server's certificate chain (-----BEGIN CERTIFICATE-----)"


def is_tls(address: str | None) -> bool:
    """True when ``address`` (a server's plain address) speaks TLS."""
    return bool(address) and str(address).startswith(TLS_PREFIX)


@dataclass(frozen=True)
class ServerTls:
    """A server's TLS configuration: the context made from its certificate and key, and how
    long a new connection may take over its handshake."""

    context: ssl.SSLContext = field(repr=False)
    #: the certificate chain's file, for messages and reprs
    cert: str
    handshake_timeout: float = HANDSHAKE_TIMEOUT


def _no_passphrase() -> str:
    raise ConfigError("encrypted")


def server_tls(
    cert: str, key: str | None = None, handshake_timeout: float = HANDSHAKE_TIMEOUT
) -> ServerTls:
    """The TLS configuration of a server from the PEM files of its certificate chain (the
    server's certificate first) and of its private key (None: the key is in ``cert``).
    ConfigError naming the file and the fix when they cannot be used."""
    cert = os.path.expanduser(cert)
    key = None if key is None else os.path.expanduser(key)
    for name, path in (("tls_cert", cert), ("tls_key", key)):
        if path is not None and not os.path.isfile(path):
            what = "no such file" if not os.path.exists(path) else "not a file"
            fix = _FIX_CERT if name == "tls_cert" else "give the PEM file of its private key"
            raise ConfigError(f"{name} {path!r}: {what}; {fix}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2 at least, good ciphers
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.num_tickets = 0  # clients never resume a session: tickets would be wasted bytes
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except ConfigError:
        raise ConfigError(
            f"tls_key {key or cert!r} is encrypted with a passphrase, which a server cannot "
            "type: give an unencrypted key file, readable by the server's user only"
        ) from None
    except ssl.SSLError as exc:
        raise ConfigError(_load_problem(cert, key, exc)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read tls_cert {cert!r} or tls_key {key!r}: {exc}") from exc
    return ServerTls(context, cert, handshake_timeout)


def _load_problem(cert: str, key: str | None, exc: ssl.SSLError) -> str:
    """What is wrong with a certificate and key that OpenSSL refused, and the fix."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return (
            f"tls_key {key or cert!r} is not the key of the certificate in tls_cert {cert!r}: "
            "give the private key the certificate was issued for (and put the server's own "
            "certificate first in tls_cert, before the authorities that signed it)"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cert)
    except ssl.SSLError:
        return f"tls_cert {cert!r} holds no PEM certificate: {_FIX_CERT}"
    if key is None:
        return f"tls_cert {cert!r} holds no private key: give its key file as tls_key"
    return f"tls_key {key!r} holds no PEM private key (-----BEGIN PRIVATE KEY-----): {exc}"


def client_tls(explicit: Any) -> ssl.SSLContext | None:
    """What a client verifies a ``tls+plain://`` server with: ``explicit`` (the PEM file of
    the certificate authority that signed the server's certificate, or an
    :class:`ssl.SSLContext` as it is; False: none), else ``$UNDERTOW_TLS_CA``, else
    ``tls_ca = "..."`` in the settings file; None: no TLS (calls stay on ZeroMQ)."""
    if explicit is False:
        return None
    if isinstance(explicit, ssl.SSLContext):
        return explicit
    source = "tls_ca"
    if explicit is None:
        explicit, source = os.environ.get(CA_ENV, "").strip(), f"${CA_ENV}"
        if not explicit:
            file = config_file()
            explicit, source = read_config_file(file).get("tls_ca"), f"tls_ca in {file}"
        if not explicit:
            return None
    if not isinstance(explicit, str | os.PathLike):
        raise ConfigError(
            f"{source} must be a file's path, an ssl.SSLContext or False, not "
            f"{type(explicit).__name__}"
        )
    path = os.path.expanduser(os.fspath(explicit))
    fix = "give the PEM file of the certificate authority that signed the server's certificate"
    try:
        return ssl.create_default_context(cafile=path)  # verifies the certificate and the name
    except ssl.SSLError as exc:
        raise ConfigError(f"{source} {path!r} holds no PEM certificate: {fix}") from exc
    except OSError as exc:
        raise ConfigError(f"{source} {path!r}: {exc.strerror or exc}; {fix}") from exc


def cert_refused(exc: BaseException) -> bool:
    """True when ``exc`` (a ConnectError) says a server's certificate did not verify."""
    return isinstance(exc.__cause__, ssl.SSLCertVerificationError)


class TlsStream:
    """One TLS connection on a non-blocking socket, usable from several threads: each call
    into OpenSSL holds :attr:`lock`, which is never held while waiting for the network."""

    __slots__ = ("lock", "sock")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def handshake(self) -> int:
        """Take the handshake a step further: 0 once it is done, else the selector events
        (``EVENT_READ``, ``EVENT_WRITE``) it waits for. Raises OSError when it failed."""
        with self.lock:
            try:
                self.sock.do_handshake()
            except ssl.SSLWantReadError:
                return selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                return selectors.EVENT_WRITE
        return 0

    def recv_into(self, buffer: Any) -> int:
        """Decrypted bytes into ``buffer``: how many (0: the peer closed the connection);
        BlockingIOError when no whole record has arrived yet."""
        with self.lock:
            try:
                return self.sock.recv_into(buffer)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise BlockingIOError(errno.EAGAIN, "no whole TLS record yet") from None

    def pending(self) -> int:
        """Bytes already decrypted and not yet read, which no selector or poll reports."""
        with self.lock:
            return self.sock.pending()

    def send(self, buffers: Sequence[Any], timeout: float) -> None:
        """Write ``buffers`` whole, waiting at most ``timeout`` seconds in all for the peer
        to take them (TimeoutError after that; OSError if the connection is gone)."""
        deadline = 0.0
        for buffer in buffers:
            view = memoryview(buffer).cast("B")
            while view:
                sent, wanted = 0, select.POLLOUT
                with self.lock:
                    try:  # after a "want", OpenSSL is given the same bytes again
                        sent = self.sock.send(view[:_WRITE])
                    except ssl.SSLWantWriteError:
                        pass
                    except ssl.SSLWantReadError:
                        wanted = select.POLLIN
                if sent:
                    view = view[sent:]
                    continue
                deadline = deadline or time.monotonic() + timeout
                self._wait(wanted, deadline)

    def send_message(
        self, frames: Sequence[Any], session: StreamSession | None, timeout: float
    ) -> None:
        """Send one message as :func:`write_message` would (tagged if ``session``), within
        ``timeout`` seconds (see :meth:`send`)."""
        self.send(tagged_message(frames, session), timeout)

    def _wait(self, events: int, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "the peer took nothing in time")
        poll = select.poll()
        poll.register(self.sock.fileno(), events)
        poll.poll(left * 1000)

    def close(self) -> None:
        """Close the connection, never while another thread is in OpenSSL's object: a send
        that came after it finds the socket closed (one that ran during it could find the
        socket without its TLS object, and would write in clear)."""
        with self.lock:
            self.sock.close()

    def abort(self) -> None:
        """Shut the connection down under its reader, which then sees it close (OpenSSL's
        object is left alone: another thread may be in it)."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
