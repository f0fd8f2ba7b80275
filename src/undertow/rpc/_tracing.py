"""OpenTelemetry spans of calls, when the OpenTelemetry API is installed and a tracer
provider is set (``pip install 'undertow[otel]'`` and the SDK or an exporter of one's choice).

Nothing here runs unless both hold: servers look once when they start serving, clients when
they connect. A server then makes one span a call it answered (``undertow.call NAME``, kind
SERVER) and a client one a call it made (kind CLIENT), each after the fact, with the times
the call already keeps for :func:`undertow.explain`: no clock is read twice for them.

Both carry the call's number and the server's name (``undertow.call_id``,
``undertow.server``); the server's also carries the log records' call id
(``undertow.log_id``: SERVER/PEER/NUMBER), so spans, logs and ``explain`` meet on one id.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["call_span", "client_span", "configured_tracer"]


def configured_tracer() -> Any | None:
    """A tracer for undertow's spans, or None when the OpenTelemetry API is not installed
    or no tracer provider has been set (the API's default records nothing)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider.get_tracer("undertow")


def _wall(perf_ns: int) -> int:
    """A ``perf_counter_ns`` reading as nanoseconds since the epoch, as spans want."""
    return perf_ns + (time.time_ns() - time.perf_counter_ns())


def call_span(tracer: Any, incoming: Any, server: str, failed: bool, now: int) -> None:
    """The span of a call ``server`` answered at ``now`` (``perf_counter_ns``), from its
    arrival; events mark its function's start and return."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    header = incoming.header
    span = tracer.start_span(
        f"undertow.call {header.name}",
        kind=SpanKind.SERVER,
        start_time=_wall(incoming.started),
        attributes={
            "rpc.system": "undertow",
            "rpc.method": header.name,
            "undertow.server": server,
            "undertow.call_id": header.call_id,
            "undertow.log_id": incoming.log_id,
            "undertow.bytes_sent": incoming.sent,
            "undertow.output_lines": incoming.lines,
        },
    )
    if incoming.began:
        span.add_event("function started", timestamp=_wall(incoming.began))
    if incoming.ended:
        span.add_event("function returned", timestamp=_wall(incoming.ended))
    if failed:
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=_wall(now))


def client_span(tracer: Any, call: Any, server: str, failed: bool) -> None:
    """The span of a call made here (``call``: a :class:`~undertow.rpc._calls.Call` with
    its outcome), from when it was made to when its outcome came back."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    offset = time.time_ns() - int(time.perf_counter() * 1e9)
    span = tracer.start_span(
        f"undertow.call {call.name}",
        kind=SpanKind.CLIENT,
        start_time=int(call.made * 1e9) + offset,
        attributes={
            "rpc.system": "undertow",
            "rpc.method": call.name,
            "undertow.server": server,
            "undertow.call_id": call.call_id,
        },
    )
    timing = call.outcome[0].timing if call.outcome is not None else None
    if timing is not None:
        before, ran, after = timing
        span.set_attribute("undertow.server_before_ns", before)
        span.set_attribute("undertow.ran_ns", ran)
        span.set_attribute("undertow.after_ns", after)
    if call.sent:
        span.add_event("sent", timestamp=int(call.sent * 1e9) + offset)
    if failed:
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=int(call.answered * 1e9) + offset)
