"""What a job prints goes to its own output, kept in the store (``append_output``).

``sys.stdout`` and ``sys.stderr`` are wrapped, once, by streams that look up the current
job's :class:`Sink` in a context variable: inside a job its writes are collected, outside
any job they go on to the stream that was there before (which may be the RPC layer's own
routing stream, so that both work in one process). Context variables follow a job into its
thread or task, so jobs running side by side never mix their output.
"""

from __future__ import annotations

import contextvars
import io
import sys
import threading
from typing import Any, TextIO

__all__ = ["Sink"]

_current: contextvars.ContextVar[Sink | None] = contextvars.ContextVar(
    "undertow_job_output", default=None
)
_install_lock = threading.Lock()


class Sink:
    """One job's output so far, not yet stored. As a context manager it is where the
    current context's output goes within the block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pieces: list[str] = []

    def __enter__(self) -> Sink:
        _install()
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)

    def write(self, text: str) -> None:
        with self._lock:
            self._pieces.append(text)

    def take(self) -> str:
        """What was written since the last take (``""`` if nothing)."""
        with self._lock:
            pieces, self._pieces = self._pieces, []
        return "".join(pieces)


class _JobStream(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr`` and routes writes by job."""

    def __init__(self, original: TextIO) -> None:
        super().__init__()
        self.original = original

    def write(self, text: str) -> int:
        sink = _current.get()
        if sink is None:
            return self.original.write(text)
        sink.write(text)
        return len(text)

    def flush(self) -> None:
        if _current.get() is None:
            self.original.flush()

    def isatty(self) -> bool:
        return _current.get() is None and self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def _routed(stream: Any) -> bool:
    """Whether one of ours is in ``stream``'s chain of wrapped streams."""
    for _ in range(8):  # a few wrappers deep at most
        if isinstance(stream, _JobStream):
            return True
        stream = getattr(stream, "original", None)
        if stream is None:
            return False
    return False


def _install() -> None:
    with _install_lock:
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if current is not None and not _routed(current):
                setattr(sys, name, _JobStream(current))
