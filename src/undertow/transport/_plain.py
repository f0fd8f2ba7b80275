"""Plain stream sockets: the same multipart messages over TCP or a Unix socket, no ZeroMQ.

A blocking call on ZeroMQ crosses libzmq's I/O thread twice on each side (a wake-up each
way); a plain socket read and written by the calling thread does not. Servers listen on one
next to their ZeroMQ address; clients use it for blocking calls (``rpc/_plain_link.py``).

Addresses: ``tcp+plain://host:port`` and ``unix:///absolute/path``.

Framing, after an 8-byte greeting each way (:data:`GREETING`): a message is its frame count
(4 bytes, big-endian), each frame's length (8 bytes each), then the frames. A reader checks
the count and the total against its limits before it allocates anything, and reads the
whole body into one buffer; frames are views of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from undertow.errors import ConnectError, ConnectionLost, UndertowError

__all__ = [
    "GREETING",
    "PlainFrame",
    "PlainHub",
    "PlainSocket",
    "pack_message",
]

#: what each side sends first: a peer that is not an undertow plain socket is told apart
GREETING = b"\x00UTWplain"[:8]
_COUNT = struct.Struct(">I")
_CHUNK = 256 * 1024
#: the most frames a message may have (as over ZeroMQ)
MAX_FRAMES = 65536
#: messages smaller than this are joined into one buffer and sent with one system call
_JOIN_BELOW = 64 * 1024
#: seconds a client's send may wait for the kernel to take a message
SEND_WAIT = 60.0


class PlainFrame:
    """One frame of a message read from a plain socket (``buffer``: a view of it), shaped
    like a ZeroMQ frame where the rpc layer reads one."""

    __slots__ = ("buffer",)

    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def bytes(self) -> bytes:
        return bytes(self.buffer)


def pack_message(frames: Sequence[Any]) -> list[Any]:
    """The buffers that carry ``frames`` on the wire (one when the message is small)."""
    sizes = [memoryview(f).nbytes if not isinstance(f, bytes) else len(f) for f in frames]
    head = _COUNT.pack(len(frames)) + struct.pack(f">{len(frames)}Q", *sizes)
    if sum(sizes) < _JOIN_BELOW:
        return [b"".join([head, *frames])]
    return [head, *frames]


def _send_all(sock: socket.socket, buffers: list[Any]) -> None:
    for buffer in buffers:
        sock.sendall(buffer)


class _Reader:
    """Reassembles messages from what a stream socket delivers, within limits.

    Small messages are cut out of a buffer that collects what arrives. Once a message's head
    announces a large body, the body gets a buffer of its own that the socket reads into
    directly (:meth:`room`), so a large message is copied once from the kernel and a peer
    that stops halfway holds no thread, only its buffer.
    """

    __slots__ = ("_body", "_buf", "_got", "_limit", "_sizes", "_start")

    def __init__(self, limit: int | None) -> None:
        self._buf = bytearray()
        self._start = 0
        self._limit = limit
        self._body: memoryview | None = None  # a large message's body being filled
        self._sizes: tuple[int, ...] = ()
        self._got = 0

    def room(self) -> memoryview | None:
        """Where the next bytes should go: the rest of a large body, or None (feed them)."""
        body = self._body
        return None if body is None else body[self._got :]

    def filled(self, n: int) -> None:
        """``n`` bytes were read into :meth:`room`."""
        self._got += n

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        body = self._body
        if body is not None:  # the start of what follows a large head goes to the body
            take = min(len(data), len(body) - self._got)
            body[self._got : self._got + take] = data[:take]
            self._got += take
            data = data[take:]
        if data:
            self._buf += data

    def next_message(self) -> list[PlainFrame] | None:
        """The next whole message, or None until more is fed."""
        body = self._body
        if body is not None:
            if self._got < len(body):
                return None
            self._body = None
            return _frames(body, self._sizes)
        buf, start = self._buf, self._start
        have = len(buf) - start
        if have < 4:
            return None
        (count,) = _COUNT.unpack_from(buf, start)
        if not 0 < count <= MAX_FRAMES:
            raise UndertowError(f"a message of {count} frames (1 to {MAX_FRAMES} allowed)")
        head = 4 + 8 * count
        if have < head:
            return None
        sizes = struct.unpack_from(f">{count}Q", buf, start + 4)
        total = sum(sizes)
        if self._limit is not None and total > self._limit:
            raise UndertowError(
                f"a message of {total:,} bytes is over the limit of {self._limit:,}"
            )
        if have < head + total and total >= _CHUNK:  # large: a buffer of its own
            self._body, self._sizes, self._got = memoryview(bytearray(total)), sizes, 0
            rest = self._buf[start + head :]  # what came after the head: the body's start
            self._buf, self._start = bytearray(), 0
            self.feed(rest)
            return self.next_message()
        if have < head + total:
            return None
        with memoryview(buf) as whole:
            body = memoryview(whole[start + head : start + head + total].tobytes())
        self._consume(start + head + total)
        return _frames(body, sizes)

    def _consume(self, upto: int) -> None:
        buf = self._buf
        if upto == len(buf):
            buf.clear()
            self._start = 0
        elif upto > _CHUNK:
            del buf[:upto]
            self._start = 0
        else:
            self._start = upto


def _frames(body: memoryview, sizes: tuple[int, ...]) -> list[PlainFrame]:
    frames = []
    at = 0
    for size in sizes:
        frames.append(PlainFrame(body[at : at + size]))
        at += size
    return frames


def _parse_plain(address: str) -> tuple[int, Any]:
    """(socket family, bind/connect address) of a plain-socket address."""
    if address.startswith("unix://"):
        path = address[len("unix://") :]
        if not path.startswith("/"):
            raise ConnectError(f"a unix:// address takes an absolute path, not {address!r}")
        return socket.AF_UNIX, path
    rest = address[len("tcp+plain://") :]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ConnectError(f"a tcp+plain:// address is tcp+plain://host:port, not {address!r}")
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


class PlainSocket:
    """A client's connection over a plain socket, used by one thread at a time.

    ``send`` writes a whole message; ``recv`` reads the next one within a timeout. The
    attributes match :class:`~undertow.transport.OwnedSocket`'s where the sync client
    uses them (``lock``, ``closed``, ``lost()``).
    """

    def __init__(self, address: str, *, timeout: float = 5.0, limit: int | None = None) -> None:
        family, where = _parse_plain(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(where)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _greet(sock, time.monotonic() + timeout)
        except OSError as exc:
            sock.close()
            raise ConnectError(f"cannot connect to {address}: {exc}") from exc
        except ConnectError:
            sock.close()
            raise
        sock.settimeout(SEND_WAIT)  # bounds a send; waits for input are polls (below)
        self.address = address
        self.sock = sock
        self.lock = threading.Lock()
        self.closed = False
        self._lost = False
        self._reader = _Reader(limit)
        self._chunk = bytearray(_CHUNK)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    def alive(self) -> bool:
        """False if the peer has closed the connection (a server that stopped, say); a look
        that does not wait (one ``poll``)."""
        if self._lost or self.closed:
            return False
        if not self._poll.poll(0):
            return True  # nothing waiting: the normal case between calls
        try:
            peeked = self.sock.recv(1, socket.MSG_PEEK)  # ready: returns at once
        except OSError:
            peeked = b""
        if not peeked:
            self._lost = True
            return False
        return True  # a late answer to a call given up on: the next recv drops it

    def send(self, frames: Sequence[Any]) -> None:
        """Send one message (:data:`SEND_WAIT` at most for the kernel to take it)."""
        try:
            _send_all(self.sock, pack_message(frames))
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
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if not self._poll.poll(max(0, left)):
                return None
            room = reader.room()
            try:
                n = self.sock.recv_into(chunk if room is None else room)
            except OSError:
                n = 0
            if n == 0:
                self._lost = True
                return None
            if room is None:
                reader.feed(chunk[:n])
            else:
                reader.filled(n)
            found = reader.next_message()
            if found is not None:
                return found

    def lost(self) -> bool:
        """True once the connection dropped."""
        return self._lost

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.close()


class _Conn:
    __slots__ = ("greeted", "lock", "peer", "reader", "sock")

    def __init__(self, sock: socket.socket, peer: bytes, limit: int | None) -> None:
        self.sock = sock
        self.peer = peer
        self.reader = _Reader(limit)
        self.lock = threading.Lock()
        self.greeted = b""


class PlainHub:
    """A server's plain-socket listener and its connections, read like a
    :class:`~undertow.transport.ServerSocket`: :meth:`recv` gives ``(peer, frames)`` from any
    connection to one thread at a time (a :class:`~undertow.rpc.ReceiverPool` drives it);
    :meth:`send` answers a peer from any thread.

    Args:
        address: ``tcp+plain://host:port`` (port 0: a free one) or ``unix:///path``.
        max_message_size: a connection that announces a larger message is closed.
    """

    def __init__(self, address: str, *, max_message_size: int | None = None) -> None:
        family, where = _parse_plain(address)
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_UNIX:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(where)  # a socket file left by a server that died
                old = os.umask(0o177)  # the socket file: readable and writable by its user only
                try:
                    listener.bind(where)
                finally:
                    os.umask(old)
                self.address = address
            else:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(where)
                host, port = listener.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                self.address = f"tcp+plain://{shown}:{port}"
            listener.listen(128)
        except OSError as exc:
            listener.close()
            raise ConnectError(f"cannot listen on {address!r}: {exc.strerror}") from exc
        listener.setblocking(False)
        self._family = family
        self._path = where if family == socket.AF_UNIX else None
        self._listener = listener
        self._limit = max_message_size
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[bytes, _Conn] = {}
        self._ready: deque[tuple[bytes, list[PlainFrame]]] = deque()
        self._chunk = bytearray(_CHUNK)
        self.closed = False

    def own(self) -> None:
        """Nothing to do: any thread may send on a plain socket (a lock per connection)."""

    def recv(self, timeout_ms: int = -1) -> tuple[bytes, list[PlainFrame]] | None:
        """The next message from any connection, or None after ``timeout_ms`` or a wake-up."""
        if self._ready:
            return self._ready.popleft()
        if self.closed:
            return None
        for key, _ in self._selector.select(None if timeout_ms < 0 else timeout_ms / 1000):
            data = key.data
            if data is None:
                self._accept()
            elif data == "wake":
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
            else:
                self._read(data)
        return self._ready.popleft() if self._ready else None

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, OSError):
                return
            sock.setblocking(True)
            if self._family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = b"\x02" + os.urandom(15)  # no ZeroMQ routing id is chosen like this
            conn = _Conn(sock, peer, self._limit)
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
            if room is not None:  # the rest of a large body, straight into its buffer
                n = conn.sock.recv_into(room, 0, socket.MSG_DONTWAIT)
            else:
                n = conn.sock.recv_into(self._chunk, _CHUNK, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n == 0:
            self._drop(conn)
            return
        if room is not None:
            conn.reader.filled(n)
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

    def _collect(self, conn: _Conn) -> None:
        try:
            while True:
                found = conn.reader.next_message()
                if found is None:
                    return
                self._ready.append((conn.peer, found))
        except UndertowError:
            self._drop(conn)  # over the limits: nothing more is taken from it

    def _drop(self, conn: _Conn) -> None:
        if self._conns.pop(conn.peer, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
            with contextlib.suppress(OSError):
                conn.sock.close()

    def send(self, peer: bytes, frames: Sequence[Any], *, hold: bool = False) -> None:
        """Send ``frames`` to ``peer`` from any thread; a peer that is gone is skipped."""
        conn = self._conns.get(peer)
        if conn is None:
            return
        buffers = pack_message(frames)
        with conn.lock:
            try:
                _send_all(conn.sock, buffers)
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
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self._selector.close()
