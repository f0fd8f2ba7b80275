"""A server's plain-socket listener and its connections (see ``_plain.py`` for the framing).

One selector watches the listener, every connection and a wake-up pipe; whichever receiver
thread holds the receive role reads what is ready, and each connection's messages come out
whole and in order. Answers go out from any thread, under a lock per connection.

A connection whose first message is a handshake (a client holding a token) is signed from
then on: the hub checks the tag of each message it reads, tags each it sends, and gives each
message with the identity its connection proved.
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
from undertow.transport._plain import _parse_plain, _widen
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


def _listen(address: str) -> tuple[socket.socket, str, str | None]:
    """A listening socket for ``address``, the address it is reached at (the real port),
    and its file (a Unix socket's) to remove on close."""
    family, where = _parse_plain(address)
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
            shown = f"tcp+plain://[{host}]:{port}" if ":" in host else f"tcp+plain://{host}:{port}"
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
        "shared",
        "sock",
        "started",
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
    """

    def __init__(
        self,
        address: str,
        *,
        max_message_size: int | None = None,
        keys: KeyFinder | None = None,
        local: str | None = None,
    ) -> None:
        listener, self.address, path = _listen(address)
        self._listeners = [listener]
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
            else:
                self._read(data)
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

    def _read(self, conn: _Conn) -> None:
        room = conn.reader.room()
        try:
            # the rest of a large body goes straight into its buffer
            target = self._chunk if room is None else room
            n = read_into(conn.sock, target, socket.MSG_DONTWAIT, conn.reader)
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
        reader, sock = conn.reader, conn.sock
        while (room := reader.room()) is not None and len(room):
            try:
                n = read_into(sock, room, socket.MSG_DONTWAIT, reader)
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
                if conn.key is not None:
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
        """Every :data:`RECHECK` seconds, whether a signed connection's key is still known
        with the same secret: once a token is withdrawn from the server's authenticator, the
        connections it signed speak for nobody (their calls are refused as unsigned ones)."""
        now = time.monotonic()
        if now < conn.recheck_at:
            return
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
        if self._conns.pop(conn.peer, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
            with contextlib.suppress(OSError):
                conn.sock.close()
            conn.reader.close()

    def send(self, peer: bytes, frames: Sequence[Any], *, hold: bool = False) -> None:
        """Send ``frames`` to ``peer`` from any thread; a peer that is gone is skipped."""
        conn = self._conns.get(peer)
        if conn is None:
            return
        with conn.lock:  # tags and descriptors go in the order the messages do
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
