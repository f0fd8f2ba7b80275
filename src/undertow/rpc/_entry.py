"""A registered function: what clients are told about it, and how its arguments are decoded
and its answers encoded (msgspec's own functions on the hot path, the codec's for errors)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from undertow.errors import UndertowError
from undertow.rpc._calls import FunctionInfo
from undertow.rpc._core import Incoming
from undertow.rpc._options import FunctionOptions
from undertow.rpc._signature import describe_params
from undertow.wire import ErrorInfo

__all__ = ["Entry", "decode_failure", "send_result", "timeout_info"]


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


def decode_failure(entry: Entry, frames: list[Any], exc: Exception) -> Exception:
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
