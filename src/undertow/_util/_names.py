"""Names that several layers check the same way."""

from __future__ import annotations

import re

__all__ = ["check_queue_name"]

_QUEUE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def check_queue_name(name: str) -> str:
    """``name`` if it can name a queue (1-64 letters, digits, ``_ . : -``), else ValueError."""
    if not isinstance(name, str) or not _QUEUE.fullmatch(name):  # type: ignore[redundant-expr]
        raise ValueError(f"queue name {name!r} must be 1-64 letters, digits, '_', '.', ':' or '-'")
    return name
