"""Logging: a call id on every record made while a call runs, and one JSON object a line.

Each layer logs to a logger of its own (``undertow.rpc._server``, ...), with the standard
library. While a server runs a call, the call is the *current call* (:data:`current_call`, a
context variable: set in the thread or task that runs it), and :class:`CallIdFilter` puts
its id on every record made meanwhile, the function's own included, as ``call_id`` (None
outside calls): ``SERVER/PEER/NUMBER``, the server's name, the caller's connection and the
call's number on it. :class:`JsonFormatter` writes a record as one JSON object;
:func:`setup_logging` puts both on the root logger (``--log-format json``).

Secrets stay out: tokens, keys and pointer secrets are never put in a message or its
arguments by undertow's own code (tests/test_logs.py looks for them in every record of a
signed session, a refused one and a pointer's use).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
from typing import Any, Protocol

__all__ = [
    "LOG_FORMATS",
    "CallIdFilter",
    "JsonFormatter",
    "current_call",
    "setup_logging",
]

#: what ``--log-format`` takes
LOG_FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _Call(Protocol):
    """What a running call shows of itself (an ``rpc.Incoming``)."""

    @property
    def log_id(self) -> str: ...


#: the call the current thread or task runs for a caller (None: no call)
current_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "undertow_call", default=None
)


class CallIdFilter(logging.Filter):
    """Sets ``record.call_id``: the id of the call running where the record was made."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = current_call.get()
        record.call_id = None if call is None else call.log_id
        return True


#: attributes every record has: the rest are a caller's ``extra=``
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "call_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object a record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``call_id``, ``thread``, ``exception`` (a traceback, if any) and any
    ``extra=`` fields (as text when JSON cannot carry them)."""

    def format(self, record: logging.LogRecord) -> str:
        made = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "time": made.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "call_id": getattr(record, "call_id", None),
            "thread": record.threadName,
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in line:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup_logging(level: int = logging.WARNING, fmt: str = "text", stream: Any = None) -> None:
    """Log to ``stream`` (stderr) from ``level`` up, as text or JSON (``fmt``), with the call
    id of each record (in text: after the level, when there is one)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: choose one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(CallIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        call_id = getattr(record, "call_id", None)
        return text if call_id is None else f"{text} [call {call_id}]"
