"""The message header: the first ZeroMQ frame of every undertow message.

A message is a list of frames::

    frame 0      header   b"UT" + version byte + msgpack array (fields below)
    frame 1      body     the payload, encoded by the codec the header names (may be empty)
    frame 2..n   buffers  pickle protocol 5 out-of-band buffers, one frame each (``nbuffers``)

On a server's ROUTER socket ZeroMQ puts the peer's routing id in front of frame 0; it never
reaches this module. The header holds only small fields, so a 100 MB numpy array travels as
its own frame and is never copied into the header or the body.

Header fields, in order (msgpack array, so unknown trailing fields can be added later):

    ===========  =====================================================================
    kind         :class:`Kind`: what this message is
    call_id      correlation id chosen by the caller; replies echo it
    name         CALL: function name; OUTPUT: ``"stdout"`` or ``"stderr"``
    codec        name of the codec that encoded frame 1 (``""``: frame 1 is empty)
    nbuffers     how many out-of-band buffer frames follow frame 1
    timeout      CALL: seconds the caller will wait (``None``: no deadline)
    flags        CALL: :class:`Flags`
    body         a body of at most INLINE_BODY bytes, carried here instead of in frame 1
    timing       RESULT, ERROR, END: where the call's time went on the server, in whole
                 nanoseconds: ``[before, ran, after]`` (from its arrival to the function's
                 start; the function; from its return to this answer); else ``None``
    ===========  =====================================================================

On an authenticated connection frame 0 starts with a signature envelope (``b"UA"``, see
``undertow.security``) and the header follows it in the same frame.

A server answering calls that arrive back to back may put several one-frame messages for the
same client into one BATCH message: its body is a msgpack array of their header frames, in
order. A client submitting calls while earlier ones are still running does the same with its
small CALLs (each signed on its own, as if it travelled alone); the server takes them one at a
time, in order (:func:`split_batch`). A batch never holds another batch.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import msgspec

from undertow.errors import WireError

__all__ = [
    "INLINE_BODY",
    "MAGIC",
    "PROTOCOL_VERSION",
    "STREAM_WINDOW",
    "Flags",
    "Header",
    "Kind",
    "batch_frames",
    "decode_header",
    "encode_header",
    "pack",
    "pack_batch",
    "payload_of",
    "split_batch",
    "unbatch",
]

MAGIC = b"UT"
#: A stream may run this many items ahead of what its caller has consumed; the caller
#: grants more with CREDIT messages (every half window), so a fast generator cannot flood it.
STREAM_WINDOW = 64
#: 2: BATCH; 3: no token in the header (messages are signed instead); 4: clients batch too
PROTOCOL_VERSION = 4
_PREFIX = MAGIC + bytes([PROTOCOL_VERSION])


class Kind(enum.IntEnum):
    """What a message is."""

    CALL = 1  # client -> server: run a function
    RESULT = 2  # server -> client: the return value; ends the call
    ERROR = 3  # server -> client: an ErrorInfo; ends the call
    OUTPUT = 4  # server -> client: text the function wrote to stdout/stderr
    ITEM = 5  # server -> client: one item yielded by a generator function
    END = 6  # server -> client: the generator is exhausted; ends the call
    CANCEL = 7  # client -> server: the caller gave up on call_id
    CREDIT = 8  # client -> server: body = msgpack int, items of a stream consumed so far
    BATCH = 9  # either way: several one-frame messages, in order (see pack_batch)


class Flags(enum.IntFlag):
    """Options of a CALL."""

    NONE = 0
    NO_OUTPUT = 1  # do not forward stdout/stderr for this call
    POINTER = 2  # leave the result on the server and answer with a pointer to it
    NO_REPLY = 4  # the caller waits for no answer: the server sends none (a one-way message)


class Header(msgspec.Struct, array_like=True, frozen=True):
    """The decoded first frame of a message."""

    kind: Kind
    call_id: int
    name: str = ""
    codec: str = ""
    nbuffers: int = 0
    timeout: float | None = None
    flags: int = 0
    #: a small body travels inside the header frame: one ZeroMQ frame fewer to send and receive
    body: bytes = b""
    #: an answer's server-side timings in nanoseconds: before the function ran, while it
    #: ran, after it returned (``undertow.explain`` of a call shows them)
    timing: tuple[int, int, int] | None = None

    def __repr__(self) -> str:  # the body may be large
        return (
            f"Header({self.kind.name}, call_id={self.call_id}, name={self.name!r}, "
            f"codec={self.codec!r}, nbuffers={self.nbuffers})"
        )


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Header)


def encode_header(header: Header) -> bytes:
    """Encode a header into frame 0."""
    return _PREFIX + _encoder.encode(header)


#: Bodies up to this size travel inside the header frame.
INLINE_BODY = 16384


def pack(
    kind: Kind,
    call_id: int,
    payload: Sequence[Any] = (),
    *,
    name: str = "",
    codec: str = "",
    timeout: float | None = None,
    flags: int = 0,
    timing: tuple[int, int, int] | None = None,
) -> list[Any]:
    """The frames of a message; a lone small body goes inside the header frame.

    Built in one go (no intermediate header): this runs for every call and every reply.
    """
    if len(payload) == 1:
        body = payload[0]
        if type(body) is bytes and len(body) <= INLINE_BODY:
            header = Header(kind, call_id, name, codec, 0, timeout, flags, body, timing)
            return [_PREFIX + _encoder.encode(header)]
    nbuffers = len(payload) - 1 if payload else 0
    header = Header(kind, call_id, name, codec, nbuffers, timeout, flags, b"", timing)
    return [_PREFIX + _encoder.encode(header), *payload]


_frames_encoder = msgspec.msgpack.Encoder()
_frames_decoder = msgspec.msgpack.Decoder(list[bytes])


def pack_batch(frames: Sequence[bytes]) -> bytes:
    """One BATCH header frame carrying these one-frame messages, in order."""
    return _PREFIX + _encoder.encode(Header(Kind.BATCH, 0, body=_frames_encoder.encode(frames)))


def batch_frames(header: Header) -> list[bytes]:
    """The one-frame messages inside a BATCH, undecoded (each may carry a signature)."""
    try:
        return _frames_decoder.decode(header.body)
    except (msgspec.DecodeError, ValueError) as exc:
        raise WireError(f"malformed batch: {exc}") from exc


class InnerFrame:
    """One message of a received batch, shaped like a received frame (``buffer``)."""

    __slots__ = ("buffer",)

    def __init__(self, data: bytes) -> None:
        self.buffer = memoryview(data)

    def __len__(self) -> int:
        return len(self.buffer)


#: where a header frame's kind sits: after the prefix and the msgpack array's first byte
_KIND_AT = len(_PREFIX) + 1
#: the largest batch a server takes apart, in bytes and in messages: clients send at most 16
#: calls of at most 4 KiB; a peer's larger batch (anyone may send one before any signature is
#: checked) is dropped whole rather than turned into millions of tiny messages
BATCH_MAX_BYTES = 1 << 20
BATCH_MAX_MESSAGES = 1024


def split_batch(frames: Sequence[Any]) -> list[list[Any]] | None:
    """The messages a received BATCH carries, each as a one-frame message (an empty list
    for a malformed batch: nothing in it is taken); None for any other message.

    Runs on every message a server receives, so it looks at one byte before decoding
    anything; the messages themselves are checked (signature, header) as if each had come
    alone, and a batch inside a batch is dropped as an unknown kind would be.
    """
    if len(frames) != 1:
        return None
    view = frames[0].buffer
    if len(view) <= _KIND_AT or view[_KIND_AT] != Kind.BATCH or view[:3] != _PREFIX:
        return None
    if len(view) > BATCH_MAX_BYTES:
        return []
    try:
        header = decode_header(view)
        if header.kind != Kind.BATCH:
            return None
        inner = batch_frames(header)
    except WireError:
        return []
    if len(inner) > BATCH_MAX_MESSAGES:
        return []
    return [[InnerFrame(frame)] for frame in inner]


def unbatch(header: Header) -> list[Header]:
    """The messages inside a BATCH, decoded; raises :class:`WireError` if it is malformed."""
    headers = [decode_header(frame) for frame in batch_frames(header)]
    if any(h.kind == Kind.BATCH for h in headers):
        raise WireError("malformed batch: a batch inside a batch")
    return headers


def payload_of(header: Header, frames: list[Any]) -> list[Any]:
    """The body and buffers of a message, given the frames after its header frame."""
    if header.body:
        return [header.body, *frames]
    return frames


def decode_header(frame: bytes | memoryview) -> Header:
    """Decode frame 0, raising :class:`WireError` for anything that is not a valid header."""
    view = memoryview(frame)
    if view[:3] != _PREFIX:  # one look on the common path; the cases below say what is wrong
        _bad_prefix(view)
    try:
        return _decoder.decode(view[3:])
    except (msgspec.DecodeError, ValueError) as exc:
        raise WireError(f"malformed header: {exc}") from exc


def _bad_prefix(view: memoryview) -> None:
    """Raise the :class:`WireError` that says what is wrong with a frame's first bytes."""
    if len(view) < 3:
        raise WireError(f"truncated header: {len(view)} bytes, at least 3 expected")
    if view[:2] != MAGIC:
        raise WireError("not an undertow message (bad magic bytes)")
    raise WireError(
        f"protocol version {view[2]} is not supported (this side speaks {PROTOCOL_VERSION}); "
        "upgrade the older side"
    )
