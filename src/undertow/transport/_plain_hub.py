"""A server's plain-socket listener and its connections (see ``_plain.py`` for the framing).

One selector watches the listener, every connection and a wake-up pipe; whichever receiver
thread holds the receive role reads what is ready, and each connection's messages come out
whole and in order. Answers go out from any thread, under a lock per connection.

A connection whose first message is a handshake (a client holding a token) is signed from
then on: the hub checks the tag of each message it reads, tags each it sends, and gives each
message with the identity its connection proved.

A TCP listener given TLS (``_plain_tls.py``) wraps each connection it accepts and lets the
selector drive its handshake: no thread waits on a client that stalls, and a handshake not
done within its timeout closes the connection. The greeting and everything after it then
travel inside TLS.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from undertow.errors import ConnectError, UndertowError
from undertow.security import HELLO, StreamSession, server_hello
from undertow.transport._plain import SEND_WAIT, _parse_plain, _widen
from undertow.transport._plain_tls import ServerTls, TlsStream, is_tls
from undertow.transport._plain_wire import (
    _CHUNK,
    GREETING,
    PlainFrame,
    _Reader,
    read_into,
    write_message,
)
from undertow.transport._shm import sending
from undertow.transport._spin import Spinner

__all__ = ["PlainHub"]

log = logging.getLogger(__name__)

#: seconds between looks at whether a signed connection's key is still valid
RECHECK = 10.0
#: seconds the listener is set aside when the process is out of file descriptors
_PAUSE = 0.1

#: finds a key id's ``(identity, secret)`` for a handshake; None: not known here
KeyFinder = Callable[[str], "tuple[str, bytes] | None"]


def _listen(address: str, tls: bool = False) -> tuple[socket.socket, str, str | None]:
    """A listening socket for ``address``, the address it is reached at (the real port;
    ``tls+plain://`` if ``tls``), and its file (a Unix socket's) to remove on close."""
    family, where = _parse_plain(address)
    if is_tls(address) and not tls:
        raise ConnectError(f"cannot listen on {address!r} without tls_cert (and tls_key)")
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(where).st_mode):
                    os.unlink(where)  # a socket left by a server that died (not a file)
            old = os.umask(0o177)  # the socket file: readable and writable by its user only
            try:
                listener.bind(where)
            finally:
                os.umask(old)
            shown = address
        else:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(where)
            host, port = listener.getsockname()[:2]
            scheme = "tls+plain" if tls else "tcp+plain"
            shown = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise ConnectError(f"cannot listen on {address!r}: {exc.strerror}") from exc
    listener.setblocking(False)
    return listener, shown, where if family == socket.AF_UNIX else None


def _nobody(key_id: str) -> None:
    return None


class _Conn:
    __slots__ = (
        "greeted",
        "key",
        "lock",
        "peer",
        "reader",
        "recheck_at",
        "session",
        "shake_until",
        "shared",
        "sock",
        "started",
        "tls",
    )

    def __init__(self, sock: socket.socket, peer: bytes, limit: int | None, shared: bool) -> None:
        self.sock = sock
        self.peer = peer
        unix = sock.family == socket.AF_UNIX
        self.reader = _Reader(limit, fds=unix)
        #: large answers go through shared memory
        self.shared = unix and shared
        self.lock = threading.Lock()
        self.greeted = b""
        self.started = False  # a first message came (only the first may be a handshake)
        self.session: StreamSession | None = None
        self.key: tuple[str, tuple[str, bytes]] | None = None  # key id, (identity, secret)
        self.recheck_at = 0.0
        #: a TLS connection's stream (None: the socket carries the bytes in clear)
        self.tls: TlsStream | None = None
        #: when a TLS handshake under way is given up (0: none under way)
        self.shake_until = 0.0


def _pull(conn: _Conn, buffer: Any) -> int:
    """Bytes that have arrived on ``conn`` into ``buffer`` (0: it closed); BlockingIOError
    when there are none yet."""
    tls = conn.tls
    if tls is None:
        return read_into(conn.sock, buffer, socket.MSG_DONTWAIT, conn.reader)
    return tls.recv_into(buffer)


class PlainHub:
    """A server's plain-socket listener and its connections, read like a
    :class:`~undertow.transport.ServerSocket`: :meth:`recv` gives ``(peer, frames)`` from any
    connection to one thread at a time (a :class:`~undertow.rpc.ReceiverPool` drives it);
    :meth:`send` answers a peer from any thread.

    Args:
        address: ``tcp+plain://host:port`` (port 0: a free one) or ``unix:///path``.
        max_message_size: a connection that announces a larger message is closed.
        keys: finds the secret of a key id a client's handshake names (None: every
            handshake is refused and clients sign each message, or nothing).
        local: a ``unix://`` address also listened on, for clients on this host (large
            frames in shared memory); if it cannot be had the hub does without it.
        tls: speak TLS on a TCP ``address`` (named ``tls+plain://`` then), each handshake
            driven by the selector and given up after its ``handshake_timeout``.
    """

    def __init__(
        self,
        address: str,
        *,
        max_message_size: int | None = None,
        keys: KeyFinder | None = None,
        local: str | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        listener, self.address, path = _listen(address, tls=tls is not None)
        self._listeners = [listener]
        self._tls = tls
        #: the listener whose connections speak TLS (None: none does)
        self._tls_listener = listener if is_tls(self.address) else None
        #: connections whose TLS handshake is under way, oldest (first to expire) first
        self._shaking: dict[bytes, _Conn] = {}
        self._paths = [] if path is None else [path]
        #: a Unix socket also listened on, for clients on this host (None: none)
        self.local_address: str | None = None
        if local is not None:
            try:
                extra, self.local_address, path = _listen(local)
            except ConnectError as exc:  # only a faster way in: the server does without
                log.info("plain socket: no local socket: %s", exc)
            else:
                self._listeners.append(extra)
                self._paths += [] if path is None else [path]
        self._limit = max_message_size
        self._keys = keys
        #: large answers go through shared memory over Unix sockets (``UNDERTOW_SHM``)
        self._shared = sending()
        self._selector = selectors.DefaultSelector()
        for each in self._listeners:
            self._selector.register(each, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[bytes, _Conn] = {}
        self._ready: deque[tuple[bytes, list[PlainFrame], str | None]] = deque()
        self._chunk = bytearray(_CHUNK)
        self._spinner = Spinner()
        self._look = functools.partial(self._selector.select, 0)
        self._accept_paused = 0.0  # until when the listener is out of the selector (0: not)
        self._warned_at = float("-inf")
        self.closed = False

    def own(self) -> None:
        """Nothing to do: any thread may send on a plain socket (a lock per connection)."""

    def recv(self, timeout_ms: int = -1) -> tuple[bytes, list[PlainFrame], str | None] | None:
        """The next message from any connection, ``(peer, frames, identity)``, or None after
        ``timeout_ms`` or a wake-up. ``identity``: who signed the message's connection (the
        token's identity; None for an unsigned connection)."""
        if self._ready:
            return self._ready.popleft()
        if self.closed:
            return None
        wait = None if timeout_ms < 0 else timeout_ms / 1000
        if self._accept_paused:  # out of descriptors: look at the listener again soon
            if time.monotonic() >= self._accept_paused:
                self._accept_paused = 0.0
                for each in self._listeners:
                    self._selector.register(each, selectors.EVENT_READ, None)
            else:
                wait = _PAUSE if wait is None else min(wait, _PAUSE)
        if self._shaking:  # handshakes that take too long are given up
            wait = self._expire(wait)
        # after a message, look for the next without sleeping first (_spin.py)
        events = self._spinner.look(self._look)
        if not events:
            events = self._selector.select(wait)
        for key, _ in events:
            data = key.data
            if data is None:
                self._accept(key.fileobj)  # type: ignore[arg-type]  # a listener
            elif data == "wake":
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
            elif data.tls is None:
                self._read(data)
            else:
                self._tls_ready(data)
        return self._ready.popleft() if self._ready else None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # the connection waits in the backlog; a listener left in the selector
                    # would report it again at once, round and round: set it aside a moment
                    now = time.monotonic()
                    if now - self._warned_at > 10.0:
                        self._warned_at = now
                        log.warning("plain socket: cannot accept connections now: %s", exc)
                    for each in self._listeners:
                        self._selector.unregister(each)
                    self._accept_paused = time.monotonic() + _PAUSE
                return
            if listener is self._tls_listener:
                self._start_tls(sock)
                continue
            sock.setblocking(True)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                _widen(sock)
            peer = b"\x02" + os.urandom(15)  # no ZeroMQ routing id is chosen like this
            conn = _Conn(sock, peer, self._limit, self._shared)
            try:
                sock.sendall(GREETING)
            except OSError:
                sock.close()
                continue
            self._conns[peer] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _start_tls(self, sock: socket.socket) -> None:
        """Begin a new connection's TLS handshake, which the selector drives (:meth:`_shake`)
        and :meth:`_expire` gives up after the handshake timeout."""
        assert self._tls is not None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            wrapped = self._tls.context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        except OSError:  # gone already
            sock.close()
            return
        conn = _Conn(wrapped, b"\x02" + os.urandom(15), self._limit, False)
        conn.tls = TlsStream(wrapped)
        conn.shake_until = time.monotonic() + self._tls.handshake_timeout
        self._conns[conn.peer] = self._shaking[conn.peer] = conn
        self._selector.register(wrapped, selectors.EVENT_READ, conn)

    def _shake(self, conn: _Conn) -> None:
        """Take a TLS handshake a step further; once it is done, greet the client inside it."""
        tls = conn.tls
        assert tls is not None
        try:
            wanted = tls.handshake()
            if not wanted:
                tls.send([GREETING], SEND_WAIT)  # a few bytes on a new connection: at once
        except (OSError, ValueError) as exc:  # not TLS, not trusting us, or gone
            log.debug("plain socket: a TLS handshake failed: %s", exc)
            self._drop(conn)
            return
        if not wanted:
            del self._shaking[conn.peer]
            conn.shake_until = 0.0
        self._selector.modify(conn.sock, wanted or selectors.EVENT_READ, conn)

    def _expire(self, wait: float | None) -> float | None:
        """Close the connections whose TLS handshake is overdue; ``wait`` cut to the time
        left to the next one's deadline (the first: they all have the same timeout)."""
        now = time.monotonic()
        while self._shaking:
            conn = next(iter(self._shaking.values()))
            left = conn.shake_until - now
            if left > 0:
                return left if wait is None else min(wait, left)
            log.debug("plain socket: a TLS handshake did not finish in time: closed")
            self._drop(conn)
        return wait

    def _tls_ready(self, conn: _Conn) -> None:
        """A TLS connection has bytes (or room) for its handshake, or bytes to read."""
        if conn.shake_until:
            self._shake(conn)
            return
        tls = conn.tls
        assert tls is not None
        self._read(conn)
        # what OpenSSL has decrypted already, the selector cannot see: read it now
        while conn.peer in self._conns and tls.pending():
            self._read(conn)

    def _read(self, conn: _Conn) -> None:
        room = conn.reader.room()
        try:
            # the rest of a large body goes straight into its buffer
            target = self._chunk if room is None else room
            n = _pull(conn, target)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, UndertowError):  # gone; or descriptors cut off, or too many
            n = 0
        if n == 0:
            self._drop(conn)
            return
        if room is not None:
            conn.reader.filled(n)
            self._drain_body(conn)
            self._collect(conn)
            return
        data = memoryview(self._chunk)[:n]
        if len(conn.greeted) < len(GREETING):
            need = len(GREETING) - len(conn.greeted)
            conn.greeted += bytes(data[:need])
            data = data[need:]
            if not GREETING.startswith(conn.greeted):
                self._drop(conn)  # not an undertow plain client
                return
        conn.reader.feed(data)
        self._collect(conn)

    def _drain_body(self, conn: _Conn) -> None:
        """Read as much more of a large body as has arrived, without waiting (one select a
        chunk would cost a pass through the receive loop every few hundred kilobytes)."""
        reader = conn.reader
        while (room := reader.room()) is not None and len(room):
            try:
                n = _pull(conn, room)
            except (BlockingIOError, InterruptedError, OSError, UndertowError):
                return  # nothing more now, or gone: the next select tells
            if n == 0:
                return
            reader.filled(n)

    def _collect(self, conn: _Conn) -> None:
        try:
            while True:
                found = conn.reader.next_message()
                if found is None:
                    return
                if not conn.started:
                    conn.started = True
                    if found[0].buffer == HELLO:
                        self._hello(conn, found)
                        continue
                session = conn.session
                if session is None:
                    self._ready.append((conn.peer, found, None))
                    continue
                if conn.key is not None and time.monotonic() >= conn.recheck_at:
                    self._recheck(conn)
                self._ready.append((conn.peer, found, session.identity))
        except UndertowError as exc:  # over the limits, or a bad tag: nothing more is taken
            log.debug("plain socket: dropped a connection: %s", exc)
            self._drop(conn)

    def _hello(self, conn: _Conn, hello: list[PlainFrame]) -> None:
        """Answer a client's handshake; a refused one, with the reason, closes the connection."""
        keys = self._keys if self._keys is not None else _nobody
        looked: list[tuple[str, tuple[str, bytes] | None]] = []

        def find(key_id: str) -> tuple[str, bytes] | None:
            looked.append((key_id, keys(key_id)))
            return looked[-1][1]

        answer, session, why = server_hello([frame.bytes for frame in hello], find)
        self.send(conn.peer, answer)
        if session is None:
            log.info("plain socket: refused a signed connection: %s", why)
            self._drop(conn)
            return
        key_id, known = looked[0]
        assert known is not None
        conn.key = (key_id, known)
        conn.recheck_at = time.monotonic() + RECHECK
        conn.session = session
        conn.reader.sign(session)

    def _recheck(self, conn: _Conn) -> None:
        """Every :data:`RECHECK` seconds (the caller looks at the clock), whether a signed
        connection's key is still known with the same secret: once a token is withdrawn from
        the server's authenticator, the connections it signed speak for nobody (their calls
        are refused as unsigned ones)."""
        now = time.monotonic()
        assert conn.key is not None
        assert conn.session is not None
        assert self._keys is not None
        key_id, known = conn.key
        if self._keys(key_id) == known:
            conn.recheck_at = now + RECHECK
            return
        log.info("plain socket: key %r was withdrawn: its connection is no longer trusted", key_id)
        conn.key = None
        conn.session.identity = None

    def _drop(self, conn: _Conn) -> None:
        self._shaking.pop(conn.peer, None)
        if self._conns.pop(conn.peer, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
            with contextlib.suppress(OSError):  # TLS: never under a send in another thread
                (conn.sock if conn.tls is None else conn.tls).close()
            conn.reader.close()

    def send(self, peer: bytes, frames: Sequence[Any], *, hold: bool = False) -> None:
        """Send ``frames`` to ``peer`` from any thread; a peer that is gone is skipped."""
        conn = self._conns.get(peer)
        if conn is None:
            return
        with conn.lock:  # tags and descriptors go in the order the messages do
            if conn.tls is not None:
                try:
                    conn.tls.send_message(frames, conn.session, SEND_WAIT)
                except OSError:  # gone, or took nothing for SEND_WAIT: shut for its reader
                    conn.tls.abort()
                return
            try:
                write_message(conn.sock, frames, conn.session, conn.shared)
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
                    raise
                # the reader sees the connection close and drops it

    def wake(self) -> None:
        """Make a :meth:`recv` waiting in another thread return soon."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def close(self) -> None:
        """Close the listener and every connection (and remove a Unix socket's file)."""
        if self.closed:
            return
        self.closed = True
        self.wake()
        for conn in list(self._conns.values()):
            self._drop(conn)
        for listener in self._listeners:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(listener)
            listener.close()
        for path in self._paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self._selector.close()
