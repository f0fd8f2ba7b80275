"""Plain stream sockets: the same multipart messages over TCP or a Unix socket, no ZeroMQ.

A blocking call on ZeroMQ crosses libzmq's I/O thread twice on each side (a wake-up each
way); a plain socket read and written by the calling thread does not. Servers listen on one
next to their ZeroMQ address; clients use it for blocking calls (``rpc/_plain_link.py``).

Addresses: ``tcp+plain://host:port`` and ``unix:///absolute/path``.

Framing, after an 8-byte greeting each way (:data:`GREETING`): a message is its frame count
(4 bytes, big-endian), each frame's length (8 bytes each), then the frames. A reader checks
the count and the total against its limits before it allocates anything, and reads the
whole body into one buffer; frames are views of it.

A client holding a token signs its connection instead of each message's header
(:mod:`undertow.security._stream`): its first message is a handshake, and from the answer on
every message each way is followed by a 16-byte tag.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

from undertow.errors import AuthenticationError, ConnectError, ConnectionLost, UndertowError
from undertow.security import TAG_SIZE, SigningKey, StreamSession, client_session

__all__ = [
    "GREETING",
    "PlainFrame",
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
#: seconds a client's send of a large message may wait for the kernel to take it
SEND_WAIT = 60.0
#: seconds unused after which a client looks whether the server closed the connection
IDLE_LOOK = 0.05
#: microseconds a thread waiting for an answer looks for it without sleeping, first
#: (``UNDERTOW_SPIN_US``; 0: never): see :class:`_Spin`
SPIN_ENV = "UNDERTOW_SPIN_US"
DEFAULT_SPIN_US = 300


class _Spin:
    """Waiting for a quick answer without going to sleep first.

    A thread that blocks in ``poll`` lets its CPU go idle; on a virtual machine an idle
    virtual CPU is halted, and waking it for the answer costs more than a loopback round
    trip (50 µs a wake-up measured on the 2-core test machine, where a raw TCP echo takes
    130 µs blocking and 28 µs when the client looks for the answer without sleeping). So a
    client thread waiting for an answer first polls without waiting for up to ``budget``
    seconds, then sleeps in ``poll`` as before. That costs CPU only while it spins, and it
    spins only where it pays:

    * at most one thread of a process spins at a time (others sleep at once: several
      spinning threads would fight for the GIL and for the CPU the server needs);
    * never on a machine with one CPU (the server would wait for the spinner's time slice);
    * a socket whose last answer came later than the budget stops spinning, and tries again
      every :attr:`RETRY` waits (a server of slow functions costs one spin in eight).
    """

    RETRY = 8

    def __init__(self, setting: str | None, cpus: int | None) -> None:
        #: seconds a wait may spin (0: never)
        self.budget = spin_budget(setting, cpus)
        #: a thread of this process is spinning now
        self.busy = False


def spin_budget(setting: str | None, cpus: int | None) -> float:
    """Seconds of spinning before a wait sleeps, from :data:`SPIN_ENV`'s value (microseconds,
    at most 10,000) and the CPU count; 0 on one CPU or when the setting is 0."""
    if setting is None or not setting.strip():
        micros = float(DEFAULT_SPIN_US)
    else:
        try:
            micros = float(setting)
        except ValueError:
            warnings.warn(
                f"{SPIN_ENV}={setting!r} is not a number of microseconds: spinning "
                f"{DEFAULT_SPIN_US} µs (0 turns it off)",
                stacklevel=2,
            )
            micros = float(DEFAULT_SPIN_US)
    if (cpus or 1) < 2 or not micros > 0:
        return 0.0
    return min(micros, 10_000.0) / 1e6


_spin = _Spin(os.environ.get(SPIN_ENV), os.cpu_count())


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


def _send_parts(sock: socket.socket, parts: list[Any]) -> None:
    """Send small ``parts`` with one system call where the kernel takes them whole."""
    sent = sock.sendmsg(parts)
    total = sum(map(len, parts))
    if sent < total:  # interrupted partway (a signal): send the rest
        sock.sendall(b"".join(parts)[sent:])


class _Reader:
    """Reassembles messages from what a stream socket delivers, within limits.

    Small messages are cut out of a buffer that collects what arrives. Once a message's head
    announces a large body, the body gets a buffer of its own that the socket reads into
    directly (:meth:`room`), so a large message is copied once from the kernel and a peer
    that stops halfway holds no thread, only its buffer.
    """

    __slots__ = ("_body", "_buf", "_got", "_head", "_limit", "_session", "_sizes", "_start", "_tag")

    def __init__(self, limit: int | None) -> None:
        self._buf = bytearray()
        self._start = 0
        self._limit = limit
        self._body: memoryview | None = None  # a large message's body being filled
        self._head = b""  # and its head, which its tag covers too
        self._sizes: tuple[int, ...] = ()
        self._got = 0
        self._session: StreamSession | None = None
        self._tag = 0  # bytes of tag after each message

    def sign(self, session: StreamSession) -> None:
        """Every message from now on is followed by a tag that ``session`` checks."""
        self._session = session
        self._tag = TAG_SIZE

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
            if self._session is not None:
                end = len(body) - TAG_SIZE
                self._session.check((self._head, body[:end]), body[end:])
                body = body[:end]
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
        end = head + total + self._tag
        if have < end and total >= _CHUNK:  # large: a buffer of its own (its tag at the end)
            self._body = memoryview(bytearray(total + self._tag))
            self._sizes, self._got = sizes, 0
            if self._session is not None:
                self._head = bytes(buf[start : start + head])
            rest = self._buf[start + head :]  # what came after the head: the body's start
            self._buf, self._start = bytearray(), 0
            self.feed(rest)
            return self.next_message()
        if have < end:
            return None
        with memoryview(buf) as whole:
            if self._session is not None:
                at = start + head + total
                self._session.check((whole[start:at],), whole[at : at + TAG_SIZE])
            body = memoryview(whole[start + head : start + head + total].tobytes())
        self._consume(start + end)
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


class PlainSocket:
    """A client's connection over a plain socket, used by one thread at a time.

    ``send`` writes a whole message; ``recv`` reads the next one within a timeout. The
    attributes match :class:`~undertow.transport.OwnedSocket`'s where the sync client
    uses them (``lock``, ``closed``, ``lost()``).
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 5.0,
        limit: int | None = None,
        key: SigningKey | None = None,
    ) -> None:
        family, where = _parse_plain(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        reader = _Reader(limit)
        session = None
        try:
            sock.settimeout(timeout)
            sock.connect(where)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.monotonic() + timeout
            _greet(sock, deadline)
            if key is not None:
                session = _handshake(sock, reader, key, deadline)
        except OSError as exc:
            sock.close()
            raise ConnectError(f"cannot connect to {address}: {exc}") from exc
        except ConnectError:
            sock.close()
            raise
        sock.settimeout(None)  # blocking: one system call a send or a read; waits are polls
        self.address = address
        self.sock = sock
        self.lock = threading.Lock()
        self.closed = False
        self._lost = False
        self._reader = reader
        #: signs and checks every message of a client holding a token (None: unsigned)
        self.session = session
        self._chunk = bytearray(_CHUNK)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._used = time.monotonic()
        self._misses = 0  # waits since one ended within the spin (see _Spin)

    def alive(self) -> bool:
        """False if the peer has closed the connection (a server that stopped, say). Looked
        at (one ``poll`` that does not wait) only after :data:`IDLE_LOOK` seconds unused:
        calls back to back never pay for it."""
        if self._lost or self.closed:
            return False
        if time.monotonic() - self._used < IDLE_LOOK or not self._poll.poll(0):
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
        """Send one message (a large one waits :data:`SEND_WAIT` at most for the kernel)."""
        buffers = pack_message(frames)
        sock = self.sock
        session = self.session
        try:
            if len(buffers) == 1:  # small: the kernel's buffer takes it at once
                if session is None:
                    sock.sendall(buffers[0])
                else:
                    _send_parts(sock, [buffers[0], session.tag(buffers)])
            else:
                if session is not None:
                    buffers.append(session.tag(buffers))
                sock.settimeout(SEND_WAIT)
                try:
                    _send_all(sock, buffers)
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
        while True:
            if not self._spun():
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
            try:
                found = reader.next_message()
            except AuthenticationError:
                self._lost = True  # nothing more can be trusted on this connection
                raise
            if found is not None:
                self._used = time.monotonic()
                return found

    def _spun(self) -> bool:
        """Look for input without sleeping for up to the spin budget (see :class:`_Spin`);
        True if some arrived."""
        spin = _spin
        if not spin.budget or spin.busy:
            return False
        misses = self._misses
        if misses and misses % spin.RETRY:
            self._misses = misses + 1
            return False
        spin.busy = True  # one spinner a process (a race lets two spin once: harmless)
        try:
            poll, clock = self._poll.poll, time.perf_counter
            end = clock() + spin.budget
            while clock() < end:
                if poll(0):
                    self._misses = 0
                    return True
        finally:
            spin.busy = False
        self._misses = misses + 1
        return False

    def lost(self) -> bool:
        """True once the connection dropped."""
        return self._lost

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.close()
