"""Exceptions to ``ErrorInfo`` and back, without ever unpickling an exception class."""

from __future__ import annotations

import builtins
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

import undertow.errors as _errors
from undertow.errors import (
    AuthenticationError,
    DataNotFound,
    DataUnavailable,
    FunctionNotFound,
    MessageTooLarge,
    PermissionDenied,
    RemoteError,
    RemoteTraceback,
    RPCTimeout,
    SerializationError,
    WireError,
)

__all__ = ["ErrorInfo", "decode_error", "encode_error", "error_info", "rebuild"]

#: Longest remote traceback kept, in characters; the middle is cut beyond it.
MAX_TRACEBACK = 20_000


class ErrorInfo(msgspec.Struct, frozen=True):
    """What a server reports about a failure."""

    type: str  # qualified type name, "builtins.ValueError" or "pkg.mod.MyError"
    message: str
    traceback: str = ""
    args: list[Any] = []
    #: "remote" | "not_found" | "serialization" | "timeout" | "auth" | "denied" | "too_large"
    code: str = "remote"
    available: list[str] = []


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(ErrorInfo)

#: error codes whose client-side class is fixed, whatever the remote type says
_BY_CODE: dict[str, type[Exception]] = {
    "serialization": SerializationError,
    "timeout": RPCTimeout,
    "auth": AuthenticationError,
    "denied": PermissionDenied,
    "too_large": MessageTooLarge,
}


#: undertow's own errors, rebuilt as themselves (by both names a type can carry)
_OWN: dict[str, type[BaseException]] = {
    name: tp
    for tp in vars(_errors).values()
    if isinstance(tp, type) and issubclass(tp, _errors.UndertowError)
    for name in (f"undertow.{tp.__name__}", f"undertow.errors.{tp.__name__}")
}


def _qualname(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def _plain_args(args: tuple[Any, ...]) -> list[Any]:
    safe = (str, int, float, bool, type(None))
    return list(args) if all(isinstance(a, safe) for a in args) else []


def _clip(text: str) -> str:
    if len(text) <= MAX_TRACEBACK:
        return text
    half = MAX_TRACEBACK // 2
    return f"{text[:half]}\n... [{len(text) - MAX_TRACEBACK} characters cut] ...\n{text[-half:]}"


def error_info(exc: BaseException, *, code: str = "remote", skip_frames: int = 0) -> ErrorInfo:
    """Describe ``exc`` for the wire; ``skip_frames`` drops undertow's own outer frames."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return ErrorInfo(
        type=_qualname(type(exc)),
        message=str(exc),
        traceback=_clip(text),
        args=_plain_args(exc.args),
        code=code,
    )


def encode_error(info: ErrorInfo) -> bytes:
    """Encode an ErrorInfo as a message body."""
    return _enc.encode(info)


def decode_error(body: bytes | memoryview) -> ErrorInfo:
    """Decode a message body written by :func:`encode_error`."""
    try:
        return _dec.decode(body)
    except (msgspec.DecodeError, ValueError) as exc:
        raise WireError(f"malformed error report from the server: {exc}") from exc


def _builtin_exception(name: str) -> type[BaseException] | None:
    module, _, short = name.rpartition(".")
    if module != "builtins":
        return None
    tp = getattr(builtins, short, None)
    if isinstance(tp, type) and issubclass(tp, Exception):
        return tp
    return None


def rebuild(
    info: ErrorInfo,
    *,
    where: str,
    safe_types: Mapping[str, type[BaseException]] | Iterable[type[BaseException]] = (),
) -> BaseException:
    """Make the exception the client raises for ``info``; ``where`` names function and address."""
    if info.code == "not_found":
        return FunctionNotFound(info.message, name=info.type, available=tuple(info.available))
    if info.code in ("data_not_found", "data_unavailable"):  # the message names key, server
        key, address = (str(a) if isinstance(a, str) else "" for a in [*info.args, "", ""][:2])
        if info.code == "data_unavailable":
            return DataUnavailable(info.message, key=key, address=address)
        return DataNotFound(info.message, key=key)
    fixed = _BY_CODE.get(info.code)
    if fixed is not None:
        exc: BaseException = fixed(f"{info.message} ({where})")
    else:
        registry = (
            dict(safe_types)
            if isinstance(safe_types, Mapping)
            else {_qualname(t): t for t in safe_types}
        )
        tp = registry.get(info.type) or _OWN.get(info.type) or _builtin_exception(info.type)
        built = _construct(tp, info) if tp is not None else None
        exc = built or RemoteError(info.type, info.message, info.traceback)
    if info.traceback:
        exc.__cause__ = RemoteTraceback(f"Remote traceback ({where}):\n{info.traceback}")
    return exc


def _construct(tp: type[BaseException], info: ErrorInfo) -> BaseException | None:
    for args in (info.args, [info.message]):
        try:
            exc = tp(*args)
        except Exception:  # noqa: S112 - a constructor with another signature; try the next form
            continue
        return exc
    return None
