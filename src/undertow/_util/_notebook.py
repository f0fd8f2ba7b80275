"""Jupyter glue: which notebook cell made a call, and output sent to that cell later.

A Jupyter frontend files every output under the request it names as its parent: a stream
message whose ``parent_header`` is cell A's ``execute_request`` belongs to cell A. ipykernel
picks that parent when something is written to ``sys.stdout``: the cell running *now*. So
output that arrives from a background thread (a future submitted in cell A, a job's output)
would land under whatever cell runs when it arrives. :func:`cell_output` captures the current
cell when a call is made and returns a sink that writes to that cell from any thread, later.

Nothing here imports IPython or ipykernel: a process that is no kernel has not imported
them, and :func:`kernel` then answers None at the cost of one dictionary look-up, cached.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CellOutput", "cell_output", "html_table", "in_kernel", "kernel"]

_UNKNOWN: Any = object()
#: the ipykernel kernel this process runs, None if it runs none, _UNKNOWN until looked up
_kernel: Any = _UNKNOWN


def kernel() -> Any | None:
    """The ipykernel kernel object of this process, or None outside a Jupyter kernel.

    Looked up once: a kernel is set up before any user code runs, so the answer of the
    first call holds for the life of the process.
    """
    global _kernel  # the one cached answer of the process
    if _kernel is _UNKNOWN:
        _kernel = _find_kernel()
    return _kernel


def _find_kernel() -> Any | None:
    if "ipykernel" not in sys.modules:
        return None  # not a kernel, and IPython (if imported at all) runs in a terminal
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    found = getattr(shell, "kernel", None)
    return found if hasattr(found, "session") else None


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (cached, see :func:`kernel`)."""
    return kernel() is not None


def _kernel_stream(name: str) -> Any | None:
    """ipykernel's own ``sys.stdout``/``sys.stderr`` (an ``OutStream``), under any
    wrapper that keeps the stream it wraps as ``original`` (undertow's routed streams)."""
    stream = getattr(sys, name, None)
    for _ in range(4):  # wrappers within wrappers, never a loop
        if hasattr(stream, "parent_header"):
            return stream
        stream = getattr(stream, "original", None)
    return None


class CellOutput:
    """Writes remote output to one notebook cell, from any thread, at any time.

    When the kernel's streams keep a parent per thread (their ``set_thread_parent``, as in
    ipykernel 7), text goes through the kernel's own stream under the cell's parent, set
    for this one write in this thread only: it is buffered and ordered with what the cell
    printed itself. Without that method (older ipykernels), a ``stream`` message with the
    cell's parent is published on the kernel's iopub socket, which the kernel's I/O thread
    sends, so any thread may.
    """

    __slots__ = ("_kernel", "_parent", "_streams")

    def __init__(self, kernel: Any, parent: dict[str, Any], streams: dict[str, Any]) -> None:
        self._kernel = kernel
        #: the cell's ``execute_request`` header
        self._parent = parent
        self._streams = streams

    @property
    def msg_id(self) -> str:
        """The id of the request (cell execution) the output goes under."""
        return str(self._parent.get("msg_id", ""))

    def __call__(self, stream: str, text: str) -> None:
        name = "stderr" if stream == "stderr" else "stdout"
        target: Any = self._streams.get(name)
        set_parent = getattr(target, "set_thread_parent", None)
        if set_parent is None:
            self._publish(name, text)
            return
        token = set_parent(self._parent)
        try:
            target.write(text)
        finally:
            target.reset_thread_parent(token)

    def _publish(self, name: str, text: str) -> None:
        session = self._kernel.session
        content = {"name": name, "text": text}
        topic = f"stream.{name}".encode()
        session.send(self._kernel.iopub_socket, "stream", content, parent=self._parent, ident=topic)

    def __repr__(self) -> str:
        return f"<CellOutput to {self.msg_id}>"


def cell_output() -> Callable[[str, str], None] | None:
    """A sink sending output to the notebook cell running now, or None outside a kernel
    (and in a kernel when no cell runs: output then goes where ``print`` sends it)."""
    found = _kernel if _kernel is not _UNKNOWN else kernel()
    if found is None:
        return None
    streams = {name: _kernel_stream(name) for name in ("stdout", "stderr")}
    current = streams["stdout"]
    parent = dict(getattr(current, "parent_header", None) or {})
    if not parent.get("msg_id"):
        get_parent = getattr(found, "get_parent", None)
        request = get_parent() if get_parent is not None else None
        parent = dict((request or {}).get("header") or {})
    if not parent.get("msg_id"):
        return None
    return CellOutput(found, parent, streams)


def html_table(title: str, rows: Iterable[tuple[str, str]], *, note: str = "") -> str:
    """A small two-column HTML table under a bold ``title``, for the ``_repr_html_`` of
    undertow's objects (one look, no styles a notebook theme fights). The title and the
    keys are escaped here; the values and ``note`` are HTML the caller escaped."""
    cells = "".join(
        "<tr><th style='text-align:left;vertical-align:top'>"
        f"{html.escape(key)}</th><td style='text-align:left'>{value}</td></tr>"
        for key, value in rows
    )
    extra = f"<div>{note}</div>" if note else ""
    return f"<div><strong>{html.escape(title)}</strong><table>{cells}</table>{extra}</div>"
