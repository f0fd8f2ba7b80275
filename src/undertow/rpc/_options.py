"""Per-function options, chosen by glob patterns: ``server.config({"*_json": {...}})``."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
from collections.abc import Mapping
from typing import Any

from undertow._util import check_queue_name
from undertow.errors import ConfigError
from undertow.wire import Codec, resolve_codec

__all__ = ["FunctionOptions", "GlobTable"]


@dataclasses.dataclass(frozen=True)
class FunctionOptions:
    """How one function is served.

    Attributes:
        input_serialization: codec of the arguments: "msgpack" (default), "json", "pickle" or
            an object with dumps/loads. Pickle, in or out, travels only between
            authenticated peers (the server needs an authenticator).
        output_serialization: codec of the result and of streamed items.
        timeout: longest the function may run, in seconds; the caller then gets a timeout
            error (an async function is cancelled; a thread cannot be, its result is dropped).
        output: forward stdout/stderr to the caller.
        return_pointer: leave the result on the server, in its data store, and answer with
            an :class:`~undertow.Pointer` to it (a generator's items each become one).
        auth: an authorization rule ``rule(identity, name, args, kwargs) -> bool``, asked
            before each call runs (identity None: an anonymous caller); False denies it and
            the caller gets ``PermissionDenied``. None: anyone the server let in. For a
            function with pickle input it is asked before unpickling, with ``()`` and ``{}``.
        queue: make calls of the function durable jobs on this queue of the job queue
            (``client.f(...)`` then returns a :class:`~undertow.Job`); the server runs them
            (any ``undertow worker`` with the function may too).
    """

    input_serialization: Codec = dataclasses.field(default_factory=lambda: resolve_codec("msgpack"))
    output_serialization: Codec = dataclasses.field(
        default_factory=lambda: resolve_codec("msgpack")
    )
    timeout: float | None = None
    output: bool = True
    return_pointer: bool = False
    auth: Any = None
    queue: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, where: str) -> FunctionOptions:
        """Validate a user's option mapping; ``where`` names it in errors."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"options for {where} must be a dict, not {type(raw).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid options: {names}"
                raise ConfigError(f"unknown option {key!r} for {where}{hint}")
            values[key] = value
        for key in ("input_serialization", "output_serialization"):
            if key in values:
                values[key] = resolve_codec(values[key])
        timeout = values.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ConfigError(
                f"timeout for {where} must be a positive number of seconds, not {timeout!r}"
            )
        rule = values.get("auth")
        if rule is not None and not callable(rule):
            raise ConfigError(
                f"auth for {where} must be a function (identity, name, args, kwargs) -> bool, "
                f"such as undertow.security.allow('alice'), not {rule!r}"
            )
        queue = values.get("queue")
        if queue is not None:
            try:
                check_queue_name(queue)
            except ValueError as exc:
                raise ConfigError(f"queue for {where}: {exc}") from None
        for flag in ("output", "return_pointer"):
            if flag in values and not isinstance(values[flag], bool):
                raise ConfigError(f"{flag} for {where} must be True or False, not {values[flag]!r}")
        return cls(**values)

    def summary(self) -> dict[str, Any]:
        """The options as plain values, for :meth:`Server.describe`."""
        return {
            "input_serialization": self.input_serialization.name,
            "output_serialization": self.output_serialization.name,
            "timeout": self.timeout,
            "output": self.output,
            "return_pointer": self.return_pointer,
            "auth": None if self.auth is None else getattr(self.auth, "__name__", repr(self.auth)),
            "queue": self.queue,
        }


DEFAULTS = FunctionOptions()


class GlobTable:
    """Ordered glob patterns with their options; the first pattern that matches wins."""

    def __init__(self) -> None:
        self._rules: list[tuple[str, FunctionOptions]] = []

    def replaced(self, table: Mapping[str, Mapping[str, Any]]) -> GlobTable:
        """A new table holding ``table``'s rules; this one is unchanged."""
        fresh = GlobTable()
        fresh.replace(table)
        return fresh

    def replace(self, table: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace every rule with ``table``, validating all of it first."""
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"config() takes a dict of glob -> options, not {type(table).__name__}"
            )
        rules = []
        for pattern, raw in table.items():
            if not isinstance(pattern, str) or not pattern:  # type: ignore[redundant-expr]
                raise ConfigError(f"glob {pattern!r} must be a non-empty string such as '*_json'")
            rules.append((pattern, FunctionOptions.parse(raw, where=f"glob {pattern!r}")))
        self._rules = rules

    def lookup(self, name: str) -> tuple[str | None, FunctionOptions]:
        """The first matching pattern (None: defaults) and its options."""
        for pattern, options in self._rules:
            if fnmatch.fnmatchcase(name, pattern):
                return pattern, options
        return None, DEFAULTS
