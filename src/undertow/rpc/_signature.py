"""Function signatures on the wire: described by the server, rebuilt by the client.

Defaults and annotations travel as text (their ``repr``), never as objects, so describing a
function is safe for any client and ``help()`` shows exactly what the server's source says.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["describe_params", "rebuild_signature"]


class _Text:
    """Renders as the text it holds; stands in for a remote default or annotation."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation_text(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def describe_params(
    fn: Callable[..., Any],
) -> tuple[list[tuple[str, int, str | None, str | None]], str | None]:
    """The parameters of ``fn`` as (name, kind, default text, annotation text), and its return."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [
            ("args", int(inspect.Parameter.VAR_POSITIONAL), None, None),
            ("kwargs", int(inspect.Parameter.VAR_KEYWORD), None, None),
        ], None
    params = [
        (
            p.name,
            int(p.kind),
            None if p.default is inspect.Parameter.empty else repr(p.default),
            _annotation_text(p.annotation),
        )
        for p in sig.parameters.values()
    ]
    return params, _annotation_text(sig.return_annotation)


def rebuild_signature(
    params: list[tuple[str, int, str | None, str | None]], returns: str | None
) -> inspect.Signature:
    """An :class:`inspect.Signature` that prints like the server's function."""
    empty = inspect.Parameter.empty
    built = [
        inspect.Parameter(
            name,
            inspect._ParameterKind(kind),
            default=empty if default is None else _Text(default),
            annotation=empty if annotation is None else _Text(annotation),
        )
        for name, kind, default, annotation in params
    ]
    return inspect.Signature(built, return_annotation=empty if returns is None else _Text(returns))
