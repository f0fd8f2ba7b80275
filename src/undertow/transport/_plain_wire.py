"""The framing of plain stream sockets (see ``_plain.py``): messages in and out of a byte
stream, within limits.

After an 8-byte greeting each way (:data:`GREETING`), a message is its frame count (4 bytes,
big-endian), each frame's length (8 bytes each), then the frames; on a signed connection a
16-byte tag follows each message.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

from undertow.errors import UndertowError
from undertow.security import TAG_SIZE, StreamSession

__all__ = ["GREETING", "MAX_FRAMES", "PlainFrame", "pack_message"]

#: what each side sends first: a peer that is not an undertow plain socket is told apart
GREETING = b"\x00UTWplain"[:8]
_COUNT = struct.Struct(">I")
_CHUNK = 256 * 1024
#: the most frames a message may have (as over ZeroMQ)
MAX_FRAMES = 65536
#: messages smaller than this are joined into one buffer and sent with one system call
_JOIN_BELOW = 64 * 1024


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
