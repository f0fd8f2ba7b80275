"""Signed messages: an HMAC-SHA256 envelope in front of frame 0, and replay protection.

On an authenticated connection every message carries, before its header, an envelope of
fixed layout (read with :mod:`struct`, so nothing is deserialised before it is checked)::

    b"UA"        2 bytes   magic
    version      1 byte    ENVELOPE_VERSION
    n            1 byte    length of the key id (1-64)
    key id       n bytes   UTF-8: which secret signed the message (a token's name)
    timestamp    8 bytes   nanoseconds since the epoch, big-endian
    session      8 bytes   random, one per sending socket (requests) or server (replies)
    counter      8 bytes   big-endian, counts up from 1 within the session
    mac         32 bytes   HMAC-SHA256

The MAC covers a direction byte (requests and replies cannot be swapped), the envelope up to
the MAC, then each frame, frame 0's rest included, preceded by its length (8 bytes). A reply
is bound to the request's socket: its MAC also covers that socket's session, so a reply
cannot be replayed to another client. The receiver checks, in this order: the layout, the key
id, the timestamp (within ``window`` seconds of its own clock), the MAC (in constant time),
then the counter (never seen before in that session, and not too far behind the newest).
"""

from __future__ import annotations

import hmac
import itertools
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from undertow.errors import AuthenticationError
from undertow.security._tokens import Authenticator, SigningKey

__all__ = [
    "DEFAULT_WINDOW",
    "ENVELOPE_MAGIC",
    "ClientSeal",
    "ReplayWindow",
    "ServerSeal",
    "envelope_size",
    "strip_envelope",
]

ENVELOPE_MAGIC = b"UA"
ENVELOPE_VERSION = 1
MAC_SIZE = 32
#: seconds a message's timestamp may differ from the receiver's clock
DEFAULT_WINDOW = 60.0
#: how far behind the newest counter of a session a message may still arrive
REPLAY_SPAN = 4096
_TAIL = struct.Struct(">Q8sQ")  # timestamp, session, counter
_LENGTH = struct.Struct(">Q")
_REQUEST, _REPLY = b"Q", b"R"
_FIXED = 4 + _TAIL.size + MAC_SIZE  # everything but the key id
_SPAN_MASK = (1 << REPLAY_SPAN) - 1


def envelope_size(frame0: bytes | memoryview) -> int:
    """The length of the envelope at the start of ``frame0``; raises if it is malformed."""
    if len(frame0) < _FIXED + 1 or frame0[:2] != ENVELOPE_MAGIC:
        raise AuthenticationError("malformed signature envelope")
    if frame0[2] != ENVELOPE_VERSION:
        raise AuthenticationError(f"signature envelope version {frame0[2]} is not supported")
    n = frame0[3]
    if not 1 <= n <= 64 or len(frame0) < _FIXED + n:
        raise AuthenticationError("malformed signature envelope")
    return _FIXED + n


def strip_envelope(frame0: memoryview) -> memoryview:
    """Frame 0 without its envelope, unchecked: for a server that authenticates nobody."""
    return frame0[envelope_size(frame0) :]


def _mac(base: Any, direction: bytes, head: Any, rest0: Any, frames: Sequence[Any]) -> bytes:
    """HMAC-SHA256 of a message; ``base`` is an HMAC object already keyed (copying it skips
    deriving the key's pads again for every message)."""
    mac = base.copy()
    mac.update(b"".join((direction, head, _LENGTH.pack(len(rest0)), rest0)))
    for frame in frames:
        mac.update(_LENGTH.pack(len(frame)))
        mac.update(frame)
    digest: bytes = mac.digest()
    return digest


def _prefix(key_id: bytes) -> bytes:
    """The envelope's fixed start for ``key_id``: magic, version, key id."""
    return ENVELOPE_MAGIC + bytes((ENVELOPE_VERSION, len(key_id))) + key_id


def _parse(frame0: memoryview) -> tuple[int, bytes, int, bytes, int]:
    """``(size, key id, timestamp, session, counter)`` of an envelope, unchecked."""
    size = envelope_size(frame0)
    n = frame0[3]
    timestamp, session, counter = _TAIL.unpack_from(frame0, 4 + n)
    return size, bytes(frame0[4 : 4 + n]), timestamp, session, counter


def _check_time(timestamp: int, window_ns: int) -> None:
    skew = abs(time.time_ns() - timestamp)
    if skew > window_ns:
        raise AuthenticationError(
            f"message timestamp is {skew / 1e9:.0f} s away from this clock (limit "
            f"{window_ns / 1e9:g} s): a replayed message, a call that waited that long to be "
            "delivered, or clocks that need syncing"
        )


def _bad_signature(key_id: bytes) -> AuthenticationError:
    return AuthenticationError(
        f"bad signature from key {key_id.decode(errors='replace')!r}: a wrong token, or a "
        "message changed on the way"
    )


class ReplayWindow:
    """Which counters of one session were seen: the newest, and a bitmap of the
    :data:`REPLAY_SPAN` before it. Not thread-safe; callers lock."""

    __slots__ = ("bits", "top")

    def __init__(self) -> None:
        self.top = 0
        self.bits = 0  # bit i: counter top - i was seen

    def accept(self, counter: int) -> bool:
        """True the first time ``counter`` is seen; False for a repeat or one too old."""
        if counter > self.top:
            shift = counter - self.top
            # a jump past the span forgets everything (and never builds a giant integer)
            self.bits = 1 if shift >= REPLAY_SPAN else ((self.bits << shift) | 1) & _SPAN_MASK
            self.top = counter
            return True
        offset = self.top - counter
        if offset >= REPLAY_SPAN or (self.bits >> offset) & 1:
            return False
        self.bits |= 1 << offset
        return True


class ClientSeal:
    """Signs one socket's messages with a client's key and checks the replies it gets.

    Every socket has a session of its own, so its counter and the server's replies to it stay
    in order.
    """

    __slots__ = ("_count", "_key", "_lock", "_prefix", "_replies", "_window_ns", "session")

    def __init__(self, key: SigningKey, window: float = DEFAULT_WINDOW) -> None:
        self._key = key
        self._prefix = _prefix(key.key_id.encode())
        self.session = os.urandom(8)
        self._count = itertools.count(1)
        self._window_ns = int(window * 1e9)
        self._replies: dict[bytes, ReplayWindow] = {}  # by the server's session
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ClientSeal {self._key.identity!r}>"

    def seal(self, frames: Sequence[Any]) -> list[Any]:
        """``frames`` with the envelope put in front of frame 0."""
        head = self._prefix + _TAIL.pack(time.time_ns(), self.session, next(self._count))
        first, rest = frames[0], frames[1:]
        mac = _mac(self._key.mac, _REQUEST, head, first, rest)
        return [b"".join((head, mac, first)), *rest]

    def open(self, frame0: memoryview, frames: Sequence[Any]) -> memoryview:
        """Check a signed reply; returns frame 0 without its envelope, or raises
        :class:`AuthenticationError`."""
        size, key_id, timestamp, session, counter = _parse(frame0)
        if key_id != self._key.key_id.encode():
            raise AuthenticationError("a reply signed for another key")
        _check_time(timestamp, self._window_ns)
        cut = size - MAC_SIZE
        rest0 = frame0[size:]
        head = b"".join((frame0[:cut], self.session))  # a reply is bound to this session
        expected = _mac(self._key.mac, _REPLY, head, rest0, frames)
        if not hmac.compare_digest(expected, frame0[cut:size]):
            raise _bad_signature(key_id)
        with self._lock:
            window = self._replies.get(session)
            if window is None:
                if len(self._replies) >= 8:  # a server restarted many times: forget the oldest
                    self._replies.pop(next(iter(self._replies)))
                window = self._replies[session] = ReplayWindow()
            if not window.accept(counter):
                raise AuthenticationError("a replayed reply")
        return rest0


class _Peer:
    """What a server keeps about one signing session of a client."""

    __slots__ = ("key", "seal", "seen", "window")

    def __init__(self, key: SigningKey, session: bytes) -> None:
        self.key = key
        self.window = ReplayWindow()
        self.seen = 0.0
        prefix = _prefix(key.key_id.encode())
        # the replies to this session count from 1 in a session of their own: if this entry
        # is forgotten and made again, its replies cannot look like replays of earlier ones
        server_session = os.urandom(8)
        count = itertools.count(1)

        def seal(frames: list[Any]) -> list[Any]:
            head = prefix + _TAIL.pack(time.time_ns(), server_session, next(count))
            first, rest = frames[0], frames[1:]
            mac = _mac(key.mac, _REPLY, head + session, first, rest)
            return [b"".join((head, mac, first)), *rest]

        #: signs a reply to this session
        self.seal = seal


class ServerSeal:
    """Checks signed requests against an :class:`Authenticator` and signs the replies.

    Sessions not heard from for twice the window are forgotten: any message of theirs that
    could still be replayed would be refused for its timestamp anyway.
    """

    def __init__(self, auth: Authenticator, window: float = DEFAULT_WINDOW) -> None:
        self.auth = auth
        self.window = window
        self._window_ns = int(window * 1e9)
        self._peers: dict[tuple[bytes, bytes], _Peer] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def open(
        self, frame0: memoryview, frames: Sequence[Any]
    ) -> tuple[str, Callable[[list[Any]], list[Any]], memoryview]:
        """Check a signed request: its identity, a function that signs replies to it, and
        frame 0 without the envelope. Raises :class:`AuthenticationError` (nothing decoded)."""
        size, key_id, timestamp, session, counter = _parse(frame0)
        key = self.auth.signing_key(key_id.decode(errors="replace"))
        if key is None:
            raise AuthenticationError(f"unknown key {key_id.decode(errors='replace')!r}")
        _check_time(timestamp, self._window_ns)
        cut = size - MAC_SIZE
        rest0 = frame0[size:]
        if not hmac.compare_digest(
            _mac(key.mac, _REQUEST, frame0[:cut], rest0, frames), frame0[cut:size]
        ):
            raise _bad_signature(key_id)
        now = time.monotonic()
        with self._lock:
            slot = (key_id, session)
            peer = self._peers.get(slot)
            if peer is None:
                peer = self._peers[slot] = _Peer(key, session)
            if not peer.window.accept(counter):
                raise AuthenticationError(
                    f"a replayed message signed by {key_id.decode(errors='replace')!r}"
                )
            peer.seen = now
            if now >= self._next_sweep:
                self._sweep(now)
        return key.identity, peer.seal, rest0

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.window
        stale = [slot for slot, peer in self._peers.items() if now - peer.seen > 2 * self.window]
        for slot in stale:
            del self._peers[slot]
