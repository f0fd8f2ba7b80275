"""What both clients share, free of I/O: call state, request encoding, reply decoding.

The sync :class:`~undertow.Client` and the :class:`~undertow.AsyncClient` differ only in how
they wait; everything a message means is decided here, once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import operator
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from undertow.errors import (
    AuthenticationError,
    ConfigError,
    MessageTooLarge,
    SerializationError,
    UndertowError,
)
from undertow.rpc._info import Description, FunctionInfo
from undertow.rpc._tracing import client_span, configured_tracer
from undertow.security import ENVELOPE_MAGIC, ClientSeal, SigningKey
from undertow.wire import (
    POINTER_TYPE,
    STREAM_WINDOW,
    Codec,
    ErrorInfo,
    Flags,
    Header,
    Kind,
    MsgpackCodec,
    batch_frames,
    decode_error,
    decode_header,
    encode_error,
    encode_header,
    pack,
    payload_of,
    rebuild,
    resolve_codec,
)

__all__ = [
    "Call",
    "Description",
    "FunctionInfo",
    "Protocol",
    "deliver_all",
    "write_output",
]

OutputCallback = Callable[[str, str], None]

log = logging.getLogger(__name__)

_NO_OUTPUT = int(Flags.NO_OUTPUT)
_POINTER = int(Flags.POINTER)
_NO_REPLY = int(Flags.NO_REPLY)
_CALL, _RESULT, _ERROR = Kind.CALL, Kind.RESULT, Kind.ERROR
_MSGPACK = MsgpackCodec()
_clock = time.perf_counter


def write_output(stream: str, text: str) -> None:
    """Default sink for remote output: the local stream of the same name."""
    target = sys.stderr if stream == "stderr" else sys.stdout
    target.write(text)
    target.flush()


class Call:
    """One outstanding call, fed by whichever thread or task receives its messages."""

    __slots__ = (
        "answered",
        "call_id",
        "done",
        "items",
        "made",
        "name",
        "notify",
        "on_output",
        "outcome",
        "printed",
        "sent",
        "unsigned",
    )

    def __init__(self, call_id: int, name: str, on_output: OutputCallback | None) -> None:
        #: when it was made, its request went out (0.0: not known, as for calls held for a
        #: batch) and its outcome came back: where its time went (``undertow.explain``)
        self.made = _clock()
        self.sent = self.answered = 0.0
        #: lines of output it printed here and the seconds that took (None: none came)
        self.printed: list[float] | None = None
        self.call_id = call_id
        self.name = name
        self.on_output = on_output
        #: a stream's items not taken yet (made on the first: most calls have none)
        self.items: deque[tuple[Header, list[Any]]] = _NO_ITEMS
        self.outcome: tuple[Header, list[Any]] | None = None
        self.done = False
        self.notify: Callable[[], None] = _nothing
        #: a message of this call came unsigned, so a pickle payload in it is not decoded
        self.unsigned = False

    def feed(self, header: Header, frames: list[Any]) -> None:
        """Apply one message addressed to this call."""
        kind = header.kind
        if kind == Kind.OUTPUT:
            if self.on_output is not None and frames:
                self._print(header.name, bytes(frames[0]).decode("utf-8", "replace"))
            return
        if kind == Kind.ITEM:
            if self.items is _NO_ITEMS:
                self.items = deque()
            self.items.append((header, frames))
        elif kind in (Kind.RESULT, Kind.ERROR, Kind.END):
            self.answered = _clock()
            self.outcome = (header, frames)
            self.done = True
        else:
            return
        if self.notify is not _nothing:
            self.notify()

    def _print(self, stream: str, text: str) -> None:
        """Hand output to the call's sink, counting its lines and the time that takes."""
        assert self.on_output is not None
        start = _clock()
        self.on_output(stream, text)
        printed = self.printed
        if printed is None:
            printed = self.printed = [0, 0.0]
        printed[0] += text.count("\n")
        printed[1] += _clock() - start


def _nothing() -> None:
    pass


#: the items of every call that has none yet (never appended to: ``feed`` makes a deque)
_NO_ITEMS: deque[tuple[Header, list[Any]]] = deque(maxlen=0)


def deliver_all(
    calls: dict[int, Call],
    frames: Sequence[Any],
    source: str,
    seal: ClientSeal | None = None,
    verified: bool = False,
) -> None:
    """Feed what a client received (ZeroMQ frames: one message, or a BATCH of them) to the
    calls in ``calls``, forgetting each call once it is done. A message for a call not in
    ``calls`` (given up on) is dropped; a malformed one, or one whose signature ``seal``
    does not accept, is logged (naming ``source``) and dropped. ``verified``: the frames came
    over a signed connection that checked them already (they count as signed). An error for
    call 0 is the server refusing the socket's messages: every call waiting on it gets it."""
    try:
        received = [_read(seal, frames[0].buffer, list(map(_buffer, frames[1:])))]
        header = received[0][0]
        if header.kind == Kind.BATCH:
            received = []
            for inner in batch_frames(header):
                try:
                    one = _read(seal, memoryview(inner), [])
                    if one[0].kind == Kind.BATCH:
                        raise UndertowError("malformed batch: a batch inside a batch")
                    received.append(one)
                except UndertowError as exc:  # only this message is lost
                    log.warning("dropped a message from %s: %s", source, exc)
    except UndertowError as exc:
        log.warning("dropped a message from %s: %s", source, exc)
        return
    for header, payload, signed in received:
        _feed(calls, header, payload, signed or verified, seal is not None, source)


def _feed(
    calls: dict[int, Call],
    header: Header,
    payload: list[Any],
    signed: bool,
    strict: bool,
    source: str,
) -> None:
    """Give one message to its call; ``strict``: only signed answers are taken."""
    if header.call_id == 0 and header.kind == _ERROR:  # the server refused: fail them all
        for refused in list(calls.values()):
            refused.feed(header, payload)
        calls.clear()
        return
    call = calls.get(header.call_id)
    if call is None:
        return
    if not signed:
        call.unsigned = True
        if strict:  # a client with a token takes signed answers only
            header, payload = _unsigned_answer(header.call_id, source)
    call.feed(header, payload)
    if call.done:
        calls.pop(header.call_id, None)


def _unsigned_answer(call_id: int, source: str) -> tuple[Header, list[Any]]:
    """The error a call gets when a client holding a token receives an unsigned answer."""
    info = ErrorInfo(
        "AuthenticationError",
        f"{source} answered without a signature: it has no tokens (connect with token=False "
        "to use it unauthenticated), or it is not the server you meant",
        code="auth",
    )
    return Header(Kind.ERROR, call_id), [encode_error(info)]


def _read(
    seal: ClientSeal | None, view: memoryview, rest: list[Any]
) -> tuple[Header, list[Any], bool]:
    """One message: its header, its payload, and whether it was signed (and checked)."""
    signed = view[:2] == ENVELOPE_MAGIC
    if signed:
        if seal is None:
            raise AuthenticationError("a signed message, but this client holds no token")
        view = seal.open(view, rest)
    header = decode_header(view)
    return header, payload_of(header, rest), signed


_buffer = operator.attrgetter("buffer")  # a ZeroMQ frame's memoryview, without a Python call
#: bytes kept free under a server's limit for the header and the signature
_HEADROOM = 4096


def _nbytes(buffer: Any) -> int:
    return memoryview(buffer).nbytes


class Protocol:
    """Encodes calls and decodes replies for one client.

    Args:
        address: the server's address, used in error messages.
        key: the key that signs this client's messages (None: they go unsigned).
        codecs: extra codecs by name, for functions configured with a custom serialization.
        safe_exceptions: exception types rebuilt as themselves when raised remotely.
    """

    def __init__(
        self,
        address: str,
        *,
        key: SigningKey | None,
        codecs: Mapping[str, Any] | None,
        safe_exceptions: Iterable[type[BaseException]],
    ) -> None:
        self.address = address
        self.key = key
        #: the server's limit, learnt when it describes itself
        self.max_message_size: int | None = None
        self.codecs: dict[str, Codec] = {
            name: resolve_codec(spec) for name, spec in (codecs or {}).items()
        }
        self.safe_exceptions = tuple(safe_exceptions)
        self._ids = itertools.count(1)
        self._codec_cache: dict[str, Codec] = {}
        #: msgspec's own encoders and decoders by codec name (learnt by :meth:`codec`), for
        #: the common call: they skip the codec's wrapper; on failure the codec runs, to say why
        self._encoders: dict[str, Callable[[Any], bytes]] = {}
        self._decoders: dict[str, Callable[[Any], Any]] = {}
        #: makes a :class:`~undertow.Pointer` of a pointer's JSON form in an answer
        self.pointer: Callable[[dict[str, Any]], Any] | None = None
        #: makes a span of each call's outcome (None: OpenTelemetry is not set up)
        self.tracer = configured_tracer()

    def codec(self, name: str) -> Codec:
        """The codec called ``name``."""
        codec = self._codec_cache.get(name)
        if codec is None:
            codec = self._codec_cache[name] = resolve_codec(name, self.codecs)
            encode, decode = (
                getattr(codec, "encode_body", None),
                getattr(codec, "decode_body", None),
            )
            if encode is not None:  # msgspec's own functions, for the common call
                self._encoders[name] = encode
            if decode is not None:
                self._decoders[name] = decode
        return codec

    def next_id(self) -> int:
        """A new call id (``next`` on a count is atomic under the GIL)."""
        return next(self._ids)

    def where(self, name: str) -> str:
        """How errors name a function on this server."""
        return f"{name}() at {self.address}"

    def request(
        self,
        call_id: int,
        info: FunctionInfo,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None,
        output: bool,
        pointer: bool = False,
        reply: bool = True,
    ) -> list[Any]:
        """Frames of a CALL to ``info`` with these arguments (``pointer``: the result is to
        stay on the server; ``reply=False``: a one-way message, which the server answers
        with nothing)."""
        if info.needs_auth and self.key is None:
            raise AuthenticationError(
                f"{self.where(info.name)} takes or returns pickle, which travels only between "
                "authenticated peers; pass token=... to connect() (or set UNDERTOW_TOKEN)"
            )
        fast = self._encoders.get(info.input)  # msgspec's own encoder (msgpack, json)
        if fast is not None:
            try:
                payload = [fast((args, kwargs))]
            except Exception:  # the codec says why, naming the argument
                payload = encode_arguments(self.codec(info.input), info.name, args, kwargs)
        else:
            payload = self._encode_slowly(info, args, kwargs)
        limit = self.max_message_size
        if limit is not None:
            first = payload[0] if len(payload) == 1 else None
            size = len(first) if type(first) is bytes else sum(map(_nbytes, payload))
            if size > limit - _HEADROOM:
                self.check_size(info.name, size)
        return pack(
            _CALL,
            call_id,
            payload,
            name=info.name,
            codec=info.input,  # the codec's name (the server names it so)
            timeout=timeout,
            flags=(0 if output else _NO_OUTPUT)
            | (_POINTER if pointer else 0)
            | (0 if reply else _NO_REPLY),
        )

    def _encode_slowly(
        self, info: FunctionInfo, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> list[Any]:
        """The payload of a call through its codec (learning the codec's own encoder, where
        it has one, for the next calls)."""
        codec = self._codec_cache.get(info.input)
        if codec is None:
            try:
                codec = self.codec(info.input)
            except ConfigError as exc:
                raise ConfigError(
                    f"{self.where(info.name)} takes {info.input!r} input, a serialization this "
                    f"client does not know; pass codecs={{{info.input!r}: <object with "
                    "dumps/loads>}} to connect()"
                ) from exc
        try:
            return codec.encode((args, kwargs))
        except UndertowError:
            return encode_arguments(codec, info.name, args, kwargs)  # raises, naming the culprit

    def check_size(self, name: str, size: int) -> None:
        """Raise :class:`MessageTooLarge` if a call of ``size`` bytes is over the server's
        limit, before anything is sent."""
        limit = self.max_message_size
        if limit is not None and size > limit - _HEADROOM:
            raise MessageTooLarge(
                f"the arguments of {self.where(name)} come to {size:,} bytes, over the "
                f"server's limit of {limit:,} (Server(max_message_size=...)); nothing was sent"
            )

    def call_frames(
        self,
        call_id: int,
        name: str,
        payload: Sequence[Any],
        codec: str,
        *,
        timeout: float | None,
        output: bool = True,
    ) -> list[Any]:
        """Frames of a CALL whose payload is already encoded."""
        return pack(
            _CALL,
            call_id,
            payload,
            name=name,
            codec=codec,
            timeout=timeout,
            flags=0 if output else _NO_OUTPUT,
        )

    @staticmethod
    def cancel_frames(call_id: int) -> list[Any]:
        """Frames of a CANCEL for ``call_id``."""
        return [encode_header(Header(Kind.CANCEL, call_id))]

    @staticmethod
    def credit_frames(call_id: int, consumed: int) -> list[Any] | None:
        """Frames of a CREDIT after ``consumed`` items of a stream, when one is due."""
        if consumed % (STREAM_WINDOW // 2):
            return None
        return pack(Kind.CREDIT, call_id, _MSGPACK.encode(consumed), codec="msgpack")

    def decode_value(self, call: Call, header: Header, frames: list[Any]) -> Any:
        """Decode the payload of a RESULT or ITEM of ``call``."""
        if not header.codec:
            return None
        codec = self._codec_cache.get(header.codec) or self.codec(header.codec)
        if codec.unsafe and call.unsigned:
            raise AuthenticationError(
                f"{self.where(call.name)} sent an unsigned {codec.name} payload; it was not "
                "decoded, as decoding it could run code: pickle is accepted only from a "
                "server that signs its replies with your token"
            )
        fast = self._decoders.get(header.codec)  # msgspec's own decoder (msgpack, json)
        decoded = False
        if fast is not None and len(frames) == 1:
            with contextlib.suppress(Exception):  # the codec below says why
                value, decoded = fast(frames[0]), True
        if not decoded:
            value = codec.decode(frames)
        if type(value) is dict and value.get("type") == POINTER_TYPE and self.pointer:
            return self.pointer(value)
        return value

    def outcome(self, call: Call) -> Any:
        """The value of a finished call, or raise what the server reported."""
        assert call.outcome is not None
        header, frames = call.outcome
        kind = header.kind
        if self.tracer is not None:
            client_span(self.tracer, call, self.address, kind is _ERROR)
        if kind is _RESULT and header.codec:
            return self.decode_value(call, header, frames)
        if kind is _ERROR:
            info = decode_error(frames[0] if frames else b"")
            raise rebuild(info, where=self.where(call.name), safe_types=self.safe_exceptions)
        return None  # END, or a result without a body


def encode_arguments(
    codec: Codec, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> list[Any]:
    """Encode ``[args, kwargs]``; on failure, name the argument that could not be encoded."""
    try:
        return codec.encode((args, kwargs))
    except UndertowError as exc:
        where = _culprit(codec, args, kwargs)
        raise SerializationError(
            f"cannot send {where} of {name}() with the {codec.name} codec: {exc}; "
            "convert it, or configure this function with another input_serialization"
        ) from exc


def _culprit(codec: Codec, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    for i, value in enumerate(args):
        try:
            codec.encode(value)
        except UndertowError:
            return f"argument {i} ({type(value).__name__})"
    for key, value in kwargs.items():
        try:
            codec.encode(value)
        except UndertowError:
            return f"argument {key!r} ({type(value).__name__})"
    return "the arguments"
