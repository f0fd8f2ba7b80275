"""Remote output: what a function writes to stdout/stderr goes to the caller, live.

``sys.stdout`` and ``sys.stderr`` are replaced, once, by :class:`RoutedStream` objects. Each
write looks up the current call in a context variable: inside a call it is sent to that call's
client, outside any call it goes to the original stream. Context variables follow each call
into its worker thread or task, so two concurrent calls never see each other's output.

Handlers of the :mod:`logging` module that already hold the original streams are pointed at
the routed ones, so ``logging`` to stderr reaches the caller too; ``warnings`` looks up
``sys.stderr`` at each warning and needs nothing. Output of subprocesses and C extensions
writing to the file descriptors directly is not captured.
"""

from __future__ import annotations

import contextvars
import io
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["OutputSink", "RoutedStream", "install", "uncaptured"]

_current: contextvars.ContextVar[OutputSink | None] = contextvars.ContextVar(
    "undertow_output", default=None
)
_install_lock = threading.Lock()

#: A partial line is sent once it grows past this many characters.
_MAX_PENDING = 8192


class OutputSink:
    """Collects one call's output and sends it line by line through ``send(stream, text)``.

    As a context manager it is where the current context's output goes within the block.
    """

    __slots__ = ("_pending", "_send", "_token")

    def __init__(self, send: Callable[[str, str], None]) -> None:
        self._send = send
        self._pending: dict[str, list[str]] = {}

    def __enter__(self) -> None:
        if not (type(sys.stdout) is RoutedStream and type(sys.stderr) is RoutedStream):
            install()  # first call, or something replaced the streams since
        self._token = _current.set(self)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
        if self._pending:
            self.flush()

    def write(self, stream: str, text: str) -> None:
        pending = self._pending.setdefault(stream, [])
        pending.append(text)
        if "\n" in text or "\r" in text or sum(map(len, pending)) > _MAX_PENDING:
            self._flush(stream)

    def _flush(self, stream: str) -> None:
        pending = self._pending.get(stream)
        if pending:
            text = "".join(pending)
            pending.clear()
            self._send(stream, text)

    def flush(self) -> None:
        """Send whatever is still pending (called when the call ends)."""
        for stream in list(self._pending):
            self._flush(stream)


class RoutedStream(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr`` and routes writes by call."""

    def __init__(self, name: str, original: TextIO) -> None:
        super().__init__()
        self.stream_name = name
        self.original = original

    def write(self, text: str) -> int:
        sink = _current.get()
        if sink is None:
            return self.original.write(text)
        sink.write(self.stream_name, text)
        return len(text)

    def flush(self) -> None:
        sink = _current.get()
        if sink is None:
            self.original.flush()

    def isatty(self) -> bool:
        return _current.get() is None and self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def install() -> None:
    """Route ``sys.stdout``/``sys.stderr`` (again, if something replaced them since)."""
    if isinstance(sys.stdout, RoutedStream) and isinstance(sys.stderr, RoutedStream):
        return
    with _install_lock:
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if isinstance(current, RoutedStream) or current is None:
                continue
            routed = RoutedStream(name, current)
            setattr(sys, name, routed)
            _repoint_logging(current, routed)


def _repoint_logging(original: TextIO, routed: RoutedStream) -> None:
    for ref in list(logging._handlerList):  # type: ignore[attr-defined]
        handler = ref()
        if isinstance(handler, logging.StreamHandler) and handler.stream is original:
            handler.setStream(routed)


class uncaptured:
    """Within this block the current context's output goes to the real streams, even inside
    a call whose output is captured."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _current.set(None)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
