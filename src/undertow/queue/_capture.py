"""What a job prints goes to its own output, kept in the store (``append_output``).

The routing is the RPC layer's (:class:`undertow.rpc.OutputSink`): ``sys.stdout`` and
``sys.stderr`` are routed, once, by a context variable that follows a job into its thread or
task, so jobs running side by side never mix their output, and writes outside any job (or
call) reach the streams that were there before. A :class:`Sink` collects what one job
printed until the worker stores it.
"""

from __future__ import annotations

import threading

from undertow.rpc import OutputSink

__all__ = ["Sink"]


class Sink:
    """One job's output so far, not yet stored. As a context manager it is where the
    current context's output goes within the block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self._routed = OutputSink(self._collect)

    def __enter__(self) -> Sink:
        self._routed.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._routed.__exit__(*exc)

    def _collect(self, stream: str, text: str) -> None:
        with self._lock:
            self._pieces.append(text)

    def take(self) -> str:
        """What was written since the last take (``""`` if nothing)."""
        with self._lock:
            pieces, self._pieces = self._pieces, []
        return "".join(pieces)
