"""Plain stream sockets: the same multipart messages over TCP or a Unix socket, no ZeroMQ.

A blocking call on ZeroMQ crosses libzmq's I/O thread twice on each side (a wake-up each
way); a plain socket read and written by the calling thread does not. Servers listen on one
next to their ZeroMQ address; clients use it for blocking calls (``rpc/_plain_link.py``).

Addresses: ``tcp+plain://host:port``, ``tls+plain://host:port`` and ``unix:///absolute/path``.

Framing, after an 8-byte greeting each way (:data:`GREETING`): a message is its frame count
(4 bytes, big-endian), each frame's length (8 bytes each), then the frames. A reader checks
the count and the total against its limits before it allocates anything, and reads the
whole body into one buffer; frames are views of it.

A client holding a token signs its connection instead of each message's header
(:mod:`undertow.security._stream`): its first message is a handshake, and from the answer on
every message each way is followed by a 16-byte tag.

``tls+plain://host:port``: the same inside TLS (``_plain_tls.py``), greetings included.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import select
import socket
import ssl
import stat
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from undertow.errors import AuthenticationError, ConnectError, ConnectionLost, UndertowError
from undertow.security import SigningKey, StreamSession, client_session
from undertow.transport._plain_tls import TlsStream, is_tls
from undertow.transport._plain_wire import (
    _CHUNK,
    GREETING,
    PlainFrame,
    _Reader,
    _send_all,
    pack_message,
    read_into,
    write_message,
)
from undertow.transport._shm import sending
from undertow.transport._spin import Spinner, spin_budget

__all__ = [
    "GREETING",
    "PlainFrame",
    "PlainSocket",
    "local_address",
    "pack_message",
    "spin_budget",
]

#: seconds a client's send of a large message may wait for the kernel to take it
SEND_WAIT = 60.0
#: seconds unused after which a client looks whether the server closed the connection
IDLE_LOOK = 0.05


def local_address(name: str) -> str | None:
    """A ``unix://`` address for a server's local socket (this host's clients; large frames
    through shared memory), in a directory of this user's own (``/tmp/undertow-UID``, mode
    700; a directory there that is not a real directory of ours is not used); None where
    Unix sockets or that directory are not to be had."""
    if not hasattr(socket, "AF_UNIX") or not hasattr(os, "getuid"):
        return None
    folder = os.path.join(tempfile.gettempdir(), f"undertow-{os.getuid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # someone else's, a link, or open to others: not ours to trust
    _sweep(folder)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
    path = os.path.join(folder, f"{safe}-{os.getpid()}-{secrets.token_hex(4)}.sock")
    return f"unix://{path}"


def _sweep(folder: str) -> None:
    """Remove the sockets of servers that died without closing them (SIGKILL): their names
    end in ``-PID-RANDOM.sock``, and that process is gone."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            parts = entry.name.rsplit("-", 2)
            if len(parts) != 3 or not parts[1].isdigit() or not entry.name.endswith(".sock"):
                continue
            try:
                os.kill(int(parts[1]), 0)
                continue  # alive (or someone else's, which we may not signal)
            except ProcessLookupError:
                pass
            except OSError:
                continue
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(entry.path).st_mode):
                    os.unlink(entry.path)


def _widen(sock: socket.socket) -> None:
    """Give a Unix socket a send buffer of :data:`UNIX_BUFFER`: with the default (about
    200 KiB), a large message crosses in small pieces, each waking the reader (measured,
    100 MB: 213-1,135 MB/s erratic, against TCP's autotuned windows at 1,500-2,100)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_BUFFER)


#: bytes of send buffer asked for on a Unix socket (the kernel caps it at ``wmem_max``)
UNIX_BUFFER = 4 << 20


def _parse_plain(address: str) -> tuple[int, Any]:
    """(socket family, bind/connect address) of a plain-socket address."""
    if address.startswith("unix://"):
        path = address[len("unix://") :]
        if not path.startswith("/"):
            raise ConnectError(f"a unix:// address takes an absolute path, not {address!r}")
        return socket.AF_UNIX, path
    scheme, _, rest = address.partition("://")
    host, sep, port = rest.rpartition(":")
    if scheme not in ("tcp+plain", "tls+plain") or not sep or not port.isdigit():
        raise ConnectError(
            f"a plain TCP address is tcp+plain://host:port (tls+plain:// with TLS), not {address!r}"
        )
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def _greet(sock: socket.socket, deadline: float) -> None:
    """Send the greeting and read the peer's; ConnectError if it is not one."""
    sock.sendall(GREETING)
    got = b""
    while len(got) < len(GREETING):
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            chunk = sock.recv(len(GREETING) - len(got))
        except TimeoutError:
            raise ConnectError("no greeting from the plain socket in time") from None
        if not chunk:
            raise ConnectError("the peer closed the connection before greeting")
        got += chunk
    if got != GREETING:
        raise ConnectError("the peer is not an undertow plain socket (wrong greeting)")


def _next(reader: _Reader) -> list[PlainFrame] | None:
    try:
        return reader.next_message()
    except UndertowError as exc:
        raise ConnectError(f"a malformed answer to the connection's handshake: {exc}") from exc


def _handshake(
    sock: socket.socket, reader: _Reader, key: SigningKey, deadline: float
) -> StreamSession:
    """Sign a new connection with ``key`` (see :mod:`undertow.security._stream`);
    ConnectError if the server does not take it (the calls then go over ZeroMQ, which says
    why in full)."""
    hello, finish = client_session(key.key_id, key.secret)
    _send_all(sock, pack_message(hello))
    while (answer := _next(reader)) is None:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            chunk = sock.recv(_CHUNK)
        except TimeoutError:
            raise ConnectError("no answer to the connection's handshake in time") from None
        if not chunk:
            raise ConnectError("the server closed the connection during the handshake")
        reader.feed(chunk)
    try:
        session: StreamSession = finish([bytes(frame.buffer) for frame in answer])
    except AuthenticationError as exc:
        raise ConnectError(str(exc)) from exc
    reader.sign(session)
    return session


def _open(
    address: str,
    timeout: float,
    reader: _Reader,
    key: SigningKey | None,
    tls: ssl.SSLContext | None,
    server_name: str | None,
) -> tuple[socket.socket, StreamSession | None]:
    """A connected socket that greeted the server (TLS, if ``address`` is ``tls+plain://``:
    its certificate verified for ``server_name``), and its session if ``key`` signed it."""
    family, where = _parse_plain(address)
    if is_tls(address) and tls is None:
        raise ConnectError(
            f"{address} speaks TLS: give the client tls_ca= (the certificate authority "
            "that signed the server's certificate) to use it"
        )
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(where)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            _widen(sock)
        if tls is not None and is_tls(address):  # verified: the chain, and the name
            sock = tls.wrap_socket(sock, server_hostname=server_name or where[0])
        deadline = time.monotonic() + timeout
        _greet(sock, deadline)
        session = None if key is None else _handshake(sock, reader, key, deadline)
    except OSError as exc:
        sock.close()
        raise ConnectError(f"cannot connect to {address}: {exc}") from exc
    except ConnectError:
        sock.close()
        raise
    return sock, session


class PlainSocket:
    """A client's connection over a plain socket, used by one thread at a time.

    ``send`` writes a whole message; ``recv`` reads the next one within a timeout. The
    attributes match :class:`~undertow.transport.OwnedSocket`'s where the sync client
    uses them (``lock``, ``closed``, ``lost()``). A ``tls+plain://`` address needs ``tls``,
    which verifies the server's certificate for ``server_name`` (default: the address's
    host); ConnectError when it does not verify (:func:`cert_refused` tells).
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 5.0,
        limit: int | None = None,
        key: SigningKey | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        family, _ = _parse_plain(address)
        reader = _Reader(limit, fds=family == socket.AF_UNIX)
        sock, session = _open(address, timeout, reader, key, tls, server_name)
        #: the TLS connection (None: the socket itself carries the bytes)
        self._tls = TlsStream(sock) if isinstance(sock, ssl.SSLSocket) else None
        # blocking: one system call a send or a read, waits are polls; TLS: non-blocking, so
        # that a record that stops halfway never holds the thread past its deadline
        sock.settimeout(None if self._tls is None else 0.0)
        self.address = address
        self.sock = sock
        self.lock = threading.Lock()
        self.closed = False
        self._lost = False
        self._reader = reader
        #: signs and checks every message of a client holding a token (None: unsigned)
        self.session = session
        #: large frames go through shared memory (a Unix socket; ``UNDERTOW_SHM``)
        self.shared = family == socket.AF_UNIX and sending()
        self._chunk = bytearray(_CHUNK)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._used = time.monotonic()
        self._spinner = Spinner()  # looks for an answer without sleeping first (_spin.py)
        self._look = functools.partial(self._poll.poll, 0)

    def alive(self) -> bool:
        """False if the peer has closed the connection (a server that stopped, say). Looked
        at (one ``poll`` that does not wait) only after :data:`IDLE_LOOK` seconds unused:
        calls back to back never pay for it."""
        if self._lost or self.closed:
            return False
        if time.monotonic() - self._used < IDLE_LOOK or not self._poll.poll(0):
            return True  # nothing waiting: the normal case between calls
        if self._tls is not None and self._tls.pending():
            return True
        try:  # the bytes on the wire, TLS or not; ready, so this returns at once
            peeked = socket.socket.recv(self.sock, 1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            peeked = b""
        if not peeked:
            self._lost = True
            return False
        return True  # a late answer to a call given up on: the next recv drops it

    def send(self, frames: Sequence[Any]) -> None:
        """Send one message (a large one waits :data:`SEND_WAIT` at most for the kernel)."""
        sock = self.sock
        try:
            if self._tls is not None:
                self._tls.send_message(frames, self.session, SEND_WAIT)
            elif len(frames) == 1:  # small (a header): the kernel's buffer takes it at once
                write_message(sock, frames, self.session, False)
            else:
                sock.settimeout(SEND_WAIT)
                try:
                    write_message(sock, frames, self.session, self.shared)
                finally:
                    sock.settimeout(None)
        except OSError as exc:
            self._lost = True
            raise ConnectionLost(f"the connection to {self.address} dropped: {exc}") from exc

    def recv(self, timeout_ms: int) -> list[PlainFrame] | None:
        """The next message, or None after ``timeout_ms`` (or once the peer is gone: see
        :meth:`lost`). A message half read when the time runs out stays for the next call."""
        reader = self._reader
        found = reader.next_message()
        if found is not None:
            return found
        deadline = time.monotonic() + timeout_ms / 1000
        chunk = memoryview(self._chunk)
        tls = self._tls
        while True:
            # bytes TLS decrypted already are no news to poll: take them first
            if not (tls is not None and tls.pending()) and not self._spinner.look(self._look):
                left = int((deadline - time.monotonic()) * 1000)
                if not self._poll.poll(max(0, left)):
                    return None
            room = reader.room()
            target = chunk if room is None else room
            try:
                n = (
                    read_into(self.sock, target, 0, reader)
                    if tls is None
                    else tls.recv_into(target)
                )
            except BlockingIOError:
                continue  # part of a TLS record: wait for the rest
            except OSError:
                n = 0
            except UndertowError:  # descriptors cut off, or too many
                self._lost = True
                raise
            if n == 0:
                self._lost = True
                return None
            if room is None:
                reader.feed(chunk[:n])
            else:
                reader.filled(n)
            try:
                found = reader.next_message()
            except AuthenticationError:
                self._lost = True  # nothing more can be trusted on this connection
                raise
            if found is not None:
                self._used = time.monotonic()
                return found

    def lost(self) -> bool:
        """True once the connection dropped."""
        return self._lost

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):  # TLS: never under a send in another thread
                (self.sock if self._tls is None else self._tls).close()
            self._reader.close()
