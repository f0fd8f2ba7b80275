"""How a call becomes a job's ``(function, payload, codec)``, and its result or error bytes.

Two kinds of job:

- **by name** (codec ``"msgpack"``): ``function`` names a function the worker registered;
  the arguments travel as msgpack, safe to decode from anyone.
- **a callable** (codec ``"pickle"``): the function itself and its arguments, cloudpickled
  (a notebook's lambda works). Unpickling runs code, so such a payload is **signed**:
  HMAC-SHA256 with the submitter's token over the job id, function, codec and the body,
  naming the key id. A worker checks the signature with its authenticator before anything is
  unpickled, and refuses a payload that is unsigned, signed with a key it does not know, or
  signed wrongly. Its result is signed the same way with the same key, and the submitter
  checks it before unpickling.

Every payload is a msgpack ``[body, key_id, mac]`` (decoding it is safe); ``body`` is the
msgpack :class:`Call`: the codec's frames of ``(args, kwargs)`` (by name) or ``(fn, args,
kwargs)`` (pickle), and the retry policy, which the signature covers too. Errors are
:class:`~undertow.wire.ErrorInfo` in msgpack, never pickled.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from undertow.data import Pointer, swap_pointers
from undertow.errors import AuthenticationError, DeserializationError, SerializationError
from undertow.security import Authenticator, SigningKey
from undertow.wire import POINTER_TYPE, MsgpackCodec, PickleCodec

__all__ = [
    "BY_NAME",
    "PICKLE",
    "Call",
    "decode_call",
    "decode_result",
    "encode_call",
    "encode_result",
    "function_label",
    "open_payload",
    "result_signer",
    "type_names",
]

BY_NAME = "msgpack"
PICKLE = "pickle"
_PAYLOAD, _RESULT = b"undertow.job.payload/1", b"undertow.job.result/1"
_LENGTH = struct.Struct(">Q")


class Call(msgspec.Struct, array_like=True):
    """What a job runs, as its payload's body says."""

    #: the codec's frames of ``[args, kwargs]`` (by name) or ``(fn, args, kwargs)`` (pickle)
    frames: list[bytes]
    #: whether a raised exception is retried (while attempts are left)
    retry: bool = False
    #: qualified names of the exception types retried; None: any exception
    retry_on: list[str] | None = None
    #: the first retry's delay in seconds; each next one doubles it
    backoff: float = 1.0
    #: leave the result on a data server near the worker and answer with a pointer to it
    keep: bool = False


class _Signed(msgspec.Struct, array_like=True):
    body: bytes
    key_id: str = ""
    mac: bytes = b""


_enc = msgspec.msgpack.Encoder()
_signed_dec = msgspec.msgpack.Decoder(_Signed)
_call_dec = msgspec.msgpack.Decoder(Call)
_msgpack = MsgpackCodec()
#: in a msgpack body that holds a pointer's form
_POINTER_NEEDLE = POINTER_TYPE.encode()


def _pickle() -> PickleCodec:
    return PickleCodec()


def _mac(
    key: SigningKey, label: bytes, job_id: str, function: str, codec: str, body: bytes
) -> bytes:
    mac = key.mac.copy()
    for part in (label, job_id.encode(), function.encode(), codec.encode(), body):
        mac.update(_LENGTH.pack(len(part)))
        mac.update(part)
    return mac.digest()


def _sign(
    key: SigningKey | None, label: bytes, job_id: str, function: str, codec: str, body: bytes
) -> bytes:
    if key is None:
        return _enc.encode(_Signed(body))
    mac = _mac(key, label, job_id, function, codec, body)
    return _enc.encode(_Signed(body, key.key_id, mac))


def _frames(codec: Any, value: Any) -> list[bytes]:
    return [bytes(f) for f in codec.encode(value)]


def type_names(types: Sequence[type[BaseException] | str] | None) -> list[str] | None:
    """Qualified names of exception types (names given as text are kept as they are)."""
    if types is None:
        return None
    return [t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}" for t in types]


def function_label(fn: Callable[..., Any]) -> str:
    """How a callable is named in a job's record: ``module.qualname``."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', None) or type(fn).__qualname__}"


def encode_call(
    job_id: str,
    fn: Callable[..., Any] | str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    key: SigningKey | None,
    policy: Call,
) -> tuple[str, bytes, str]:
    """``(function, payload, codec)`` of a call; ``policy`` gives the retry fields. A
    callable needs ``key`` (the submitter's token): its payload is pickled and signed."""
    if isinstance(fn, str):
        try:
            frames = _frames(_msgpack, [list(args), kwargs])
        except SerializationError as exc:
            raise SerializationError(
                f"the arguments of job {fn!r} travel as msgpack, by name: {exc}; "
                "submit the function itself (with a token) to pickle them"
            ) from exc
        body = _enc.encode(msgspec.structs.replace(policy, frames=frames))
        return fn, _sign(key, _PAYLOAD, job_id, fn, BY_NAME, body), BY_NAME
    if key is None:
        raise AuthenticationError(
            f"submitting the function {function_label(fn)} itself pickles it, and workers run "
            "pickles only from authenticated submitters: give JobQueue(token=...) (the "
            "workers' TokenAuth must know it), or register the function on the workers and "
            "submit it by name"
        )
    label = function_label(fn)
    body = _enc.encode(
        msgspec.structs.replace(policy, frames=_frames(_pickle(), (fn, args, kwargs)))
    )
    return label, _sign(key, _PAYLOAD, job_id, label, PICKLE, body), PICKLE


def open_payload(
    job_id: str, function: str, codec: str, payload: bytes, auth: Authenticator | None
) -> tuple[Call, SigningKey | None]:
    """The payload's :class:`Call` and the key it was signed with, checked and not yet
    unpickled. A pickle payload must carry a valid signature of a key ``auth`` knows, else
    AuthenticationError (saying why); a by-name payload's signature is checked if ``auth``
    knows its key (a wrong one is refused; an unknown key counts as no signature)."""
    try:
        signed = _signed_dec.decode(payload)
    except (msgspec.DecodeError, ValueError) as exc:
        raise DeserializationError(f"job {job_id}: malformed payload: {exc}") from exc
    if codec not in (BY_NAME, PICKLE):
        raise DeserializationError(f"job {job_id}: unknown codec {codec!r} (msgpack or pickle)")
    key = _check_signature(job_id, function, codec, signed, auth)
    try:
        return _call_dec.decode(signed.body), key
    except (msgspec.DecodeError, ValueError) as exc:
        raise DeserializationError(f"job {job_id}: malformed call: {exc}") from exc


def _check_signature(
    job_id: str, function: str, codec: str, signed: _Signed, auth: Authenticator | None
) -> SigningKey | None:
    if not signed.key_id:
        if codec == PICKLE:
            raise AuthenticationError(
                f"job {job_id} ({function}) is pickled but unsigned: refused, never unpickled"
            )
        return None
    if auth is None:
        if codec == PICKLE:
            raise AuthenticationError(
                f"job {job_id} ({function}) is pickled, and this worker has no authenticator "
                "to check its signature: start it with auth=TokenAuth([...]) to run pickles"
            )
        return None
    key = auth.signing_key(signed.key_id)
    if key is None and codec == BY_NAME:
        return None  # safe to run from anyone: an unknown signer is as good as none
    if key is None:
        raise AuthenticationError(
            f"job {job_id} ({function}) is signed with key {signed.key_id!r}, "
            "which this worker's authenticator does not know: refused"
        )
    expected = _mac(key, _PAYLOAD, job_id, function, codec, signed.body)
    if not hmac.compare_digest(expected, signed.mac):
        raise AuthenticationError(
            f"job {job_id} ({function}) has a wrong signature for key {signed.key_id!r}: "
            "refused, never unpickled"
        )
    return key


def decode_call(
    function: str, codec: str, call: Call, functions: Callable[[str], Callable[..., Any]]
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """``(fn, args, kwargs)`` of a checked call (:func:`open_payload`); ``functions`` finds a
    registered function by name. Unpickles a pickle call: check it first."""
    if codec == PICKLE:
        fn, args, kwargs = _pickle().decode(call.frames)
        return fn, tuple(args), dict(kwargs)
    args, kwargs = _msgpack.decode(call.frames)
    if call.frames and _POINTER_NEEDLE in call.frames[0]:  # pointers: as a pickle job has them
        args, kwargs = swap_pointers(args, Pointer), swap_pointers(kwargs, Pointer)
    return functions(function), tuple(args), dict(kwargs)


def encode_result(
    job_id: str, function: str, codec: str, value: Any, key: SigningKey | None
) -> bytes:
    """A job's result: msgpack for a by-name job, pickled and signed with the submitter's
    ``key`` for a pickle job."""
    if codec == PICKLE:
        body = _enc.encode(_frames(_pickle(), value))
        return _sign(key, _RESULT, job_id, function, codec, body)
    return _enc.encode(_Signed(_enc.encode(_frames(_msgpack, value))))


def result_signer(data: bytes) -> str:
    """The name of the key an encoded result says it is signed with ("" for none)."""
    try:
        return _signed_dec.decode(data).key_id
    except (msgspec.DecodeError, ValueError):
        return ""


def decode_result(
    job_id: str, function: str, codec: str, data: bytes, key: SigningKey | None
) -> Any:
    """The value :func:`encode_result` encoded. A pickled result is unpickled only if it is
    signed with ``key`` (the submitter's), else AuthenticationError."""
    try:
        signed = _signed_dec.decode(data)
        frames: list[bytes] = msgspec.msgpack.decode(signed.body, type=list[bytes])
    except (msgspec.DecodeError, ValueError) as exc:
        raise DeserializationError(f"job {job_id}: malformed result: {exc}") from exc
    if codec != PICKLE:
        value = _msgpack.decode(frames)
        if type(value) is dict and value.get("type") == POINTER_TYPE:  # (return_pointer)
            return Pointer(value)
        return value
    if key is None:
        raise AuthenticationError(
            f"job {job_id}'s result is pickled: read it through a JobQueue with the token "
            "that submitted it"
        )
    expected = _mac(key, _RESULT, job_id, function, codec, signed.body)
    if signed.key_id != key.key_id or not hmac.compare_digest(expected, signed.mac):
        raise AuthenticationError(
            f"job {job_id}'s pickled result is not signed with your token "
            f"(key {signed.key_id!r}): refused, never unpickled"
        )
    return _pickle().decode(frames)
