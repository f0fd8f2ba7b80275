"""A registered function: what clients are told about it, what a call must pass before it
runs (its codec, the caller, the function's rule), and how its arguments are decoded and its
answers encoded (msgspec's own functions on the hot path, the codec's for errors) or, for a
call whose answers are Python values, handed on as a caller over ZeroMQ would see them."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from undertow.errors import DeserializationError, UndertowError
from undertow.rpc._calls import FunctionInfo
from undertow.rpc._incoming import Arguments, Incoming
from undertow.rpc._options import FunctionOptions
from undertow.rpc._signature import describe_params
from undertow.wire import ErrorInfo, MsgpackCodec, NumpyCodec, PickleCodec, error_info

__all__ = [
    "Arguments",
    "Entry",
    "admit",
    "refusal",
    "send_result",
    "send_value",
    "timeout_info",
    "value_sent",
]

log = logging.getLogger(__name__)

#: codecs whose decoding gives back the value that was encoded (as far as JSON and msgpack
#: can tell): a value answered to HTTP skips the trip through them
_FAITHFUL = (MsgpackCodec, NumpyCodec, PickleCodec)


def _mode(fn: Callable[..., Any]) -> str:
    if inspect.isasyncgenfunction(fn):
        return "asyncgen"
    if inspect.iscoroutinefunction(fn):
        return "async"
    if inspect.isgeneratorfunction(fn):
        return "generator"
    return "function"


class Entry:
    """A registered function with the options its glob gave it."""

    __slots__ = (
        "auth",
        "auth_first",
        "checked",
        "codec_trip",
        "decode",
        "decode_body",
        "encode",
        "encode_body",
        "fn",
        "glob",
        "info",
        "input_name",
        "mode",
        "name",
        "options",
        "output_name",
    )

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        glob: str | None,
        options: FunctionOptions,
    ) -> None:
        self.name = name
        self.fn = fn
        self.mode = _mode(fn)
        self.glob = glob
        self.options = options
        # looked up on every call, so resolved once here
        self.input_name = options.input_serialization.name
        self.output_name = options.output_serialization.name
        self.decode = options.input_serialization.decode
        self.encode = options.output_serialization.encode
        # msgspec's own functions when the codec has them (one body frame, no wrapper)
        self.decode_body = getattr(options.input_serialization, "decode_body", None)
        self.encode_body = getattr(options.output_serialization, "encode_body", None)
        #: a value answered to HTTP goes through the output codec first (json, or a codec
        #: of the user's), so that it is what a caller over ZeroMQ would get
        self.codec_trip = not isinstance(options.output_serialization, _FAITHFUL)
        #: pickle in or out: only an authenticated caller may call it
        self.checked = options.input_serialization.unsafe or options.output_serialization.unsafe
        #: the authorization rule (None: whoever got through authentication)
        self.auth = options.auth
        #: pickle input: the rule is asked before the arguments are decoded (decoding could
        #: run the caller's code), so it sees no arguments
        self.auth_first = options.auth is not None and options.input_serialization.unsafe
        params, returns = describe_params(fn)
        self.info = FunctionInfo(
            name=name,
            doc=inspect.getdoc(fn) or "",
            params=params,
            returns=returns,
            mode=self.mode,
            input=options.input_serialization.name,
            output=options.output_serialization.name,
            needs_auth=self.checked,
            forwards_output=options.output,
            timeout=options.timeout,
            queue=options.queue,
        )


def send_result(entry: Entry, incoming: Incoming, result: Any) -> None:
    """Encode ``result`` and send it as the call's answer, or say why it cannot be sent."""
    encode = entry.encode_body  # msgspec's own encoder when the codec has one
    try:
        payload = [encode(result)] if encode is not None else entry.encode(result)
    except Exception:
        try:
            payload = entry.encode(result)  # the codec's own error names the type
        except UndertowError as exc:
            incoming.fail(_unsendable(entry, exc))
            return
    incoming.reply(payload, entry.output_name)


def value_sent(entry: Entry, value: Any) -> Any:
    """``value`` as a caller over ZeroMQ would get it: itself, or after a trip through the
    function's output codec (see :attr:`Entry.codec_trip`); raises ``UndertowError``."""
    if not entry.codec_trip:
        return value
    codec = entry.options.output_serialization
    return codec.decode(codec.encode(value))


def send_value(entry: Entry, incoming: Incoming, result: Any) -> None:
    """Send ``result`` as a Python value (:attr:`Incoming.values`), or say why it cannot be sent."""
    try:
        value = value_sent(entry, result)
    except UndertowError as exc:
        incoming.fail(_unsendable(entry, exc))
        return
    incoming.reply_value(value)


def refusal(entry: Entry, incoming: Incoming, server: str) -> ErrorInfo | None:
    """Why a call is refused before anything in it is decoded (pickle from an anonymous
    caller, another codec than the function's), or None."""
    codec = entry.options.input_serialization
    if entry.checked and incoming.identity is None:
        return ErrorInfo(
            "AuthenticationError",
            f"{entry.name}() takes or returns pickle, which server {server!r} exchanges "
            "only with authenticated callers; connect with token=...",
            code="auth",
        )
    if incoming.header.codec != codec.name:
        return ErrorInfo(
            "SerializationError",
            f"{entry.name}() takes {codec.name} input but the call was encoded with "
            f"{incoming.header.codec!r}; refresh the client",
            code="serialization",
        )
    return None


def admit(entry: Entry, incoming: Incoming, server: str) -> Arguments | None:
    """The call's arguments, once it may run: for pickle input the function's rule is asked
    before decoding (with no arguments), otherwise with the decoded arguments. None: the call
    was answered (denied, or its arguments did not decode). Arguments the transport decoded
    already (:attr:`Incoming.arguments`) are taken as they are."""
    if entry.auth_first and not _allowed(entry, incoming, (), {}, server):
        return None
    frames = incoming.frames
    try:
        if incoming.arguments is not None:
            args, kwargs = incoming.arguments
        elif not frames:
            raise DeserializationError(f"the call to {entry.name}() carried no arguments frame")
        else:
            body = entry.decode_body  # msgspec's own decoder when the codec has one
            args, kwargs = body(frames[0]) if body is not None else entry.decode(frames)
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            raise TypeError("expected [args, kwargs]")
    except Exception as exc:  # whatever the payload was, the caller hears why it failed
        incoming.fail(error_info(_decode_failure(entry, frames, exc), code="serialization"))
        return None
    after = entry.auth is not None and not entry.auth_first
    if after and not _allowed(entry, incoming, args, kwargs, server):
        return None
    return args, kwargs


def _allowed(
    entry: Entry, incoming: Incoming, args: Sequence[Any], kwargs: dict[str, Any], server: str
) -> bool:
    """Ask the function's rule; a denial answers the call (logged without arguments)."""
    who = incoming.identity
    try:
        allowed = bool(entry.auth(who, entry.name, args, kwargs))
    except Exception as exc:  # a broken rule denies; its message may quote arguments
        log.warning(
            "server %r: the auth rule of %s() raised %s; call by %s denied",
            server,
            entry.name,
            type(exc).__name__,
            _who(who),
        )
        allowed = False
    else:
        if not allowed:
            log.warning("server %r: denied %s() to %s", server, entry.name, _who(who))
    if not allowed:
        incoming.fail(
            ErrorInfo(
                "PermissionDenied",
                f"{_who(who)} may not call {entry.name}() on server {server!r}",
                code="denied",
            )
        )
    return allowed


def _who(identity: str | None) -> str:
    return "an anonymous caller" if identity is None else repr(identity)


def _decode_failure(entry: Entry, frames: list[Any], exc: Exception) -> Exception:
    """The error to report for arguments that did not decode: the codec's own, if it has one."""
    if entry.decode_body is not None:
        try:
            entry.decode(frames)
        except UndertowError as own:
            return own
    return exc


def _unsendable(entry: Entry, exc: UndertowError) -> ErrorInfo:
    return ErrorInfo(
        "SerializationError",
        f"the result of {entry.name}() cannot be sent: {exc}; return another type or "
        "configure output_serialization (e.g. 'pickle') for it",
        code="serialization",
    )


def timeout_info(entry: Entry) -> ErrorInfo:
    return ErrorInfo(
        "RPCTimeout",
        f"{entry.name}() ran longer than its timeout of {entry.options.timeout:g} s on the server",
        code="timeout",
    )
