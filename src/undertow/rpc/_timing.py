"""Where a call's time went: the client's clocks and the server's, side by side.

A call is timed at both ends at no extra message. The client notes when the call was made,
when its request went out and when its outcome came back (:class:`~undertow.rpc._calls.Call`);
the server puts its own three durations in the answer's header (``timing``: before the
function ran, while it ran, after it returned). The two clocks are never compared, only
durations: what the client waited beyond the server's time was spent on the way, both ways.
"""

from __future__ import annotations

from typing import Any

import msgspec

from undertow.rpc._calls import Call

__all__ = ["CallTiming", "call_timing", "explain_call", "explain_target"]


class CallTiming(msgspec.Struct, frozen=True):
    """Where one call's time went, in seconds (None: not known).

    ``here`` is the time from making the call to its request going out (encoding the
    arguments, sending); ``on_the_way`` what the round trip took beyond the server's own
    time (the network and both sockets, both ways); ``before``, ``ran`` and ``after`` are
    the server's (waiting for a thread and decoding the arguments; the function; encoding and
    sending the answer). ``printed`` is the seconds spent showing its ``lines`` of output.
    """

    function: str
    call_id: int
    total: float
    here: float | None
    on_the_way: float | None
    before: float | None
    ran: float | None
    after: float | None
    lines: int
    printed: float


def call_timing(call: Call) -> CallTiming | None:
    """The timing of ``call``; None while it has no outcome."""
    if not call.answered or call.outcome is None:
        return None
    total = call.answered - call.made
    here = call.sent - call.made if call.sent else None
    server = call.outcome[0].timing
    before = ran = after = on_the_way = None
    if server is not None:
        before, ran, after = (ns * 1e-9 for ns in server)
        since = call.answered - call.sent if call.sent else total
        on_the_way = max(since - before - ran - after, 0.0)
    lines, printed = call.printed or (0, 0.0)
    return CallTiming(
        call.name, call.call_id, total, here, on_the_way, before, ran, after, int(lines), printed
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:10.3f} ms"


def explain_call(call: Call, where: str) -> str:
    """Where the time of ``call`` (to the server at ``where``) went, in lines of text."""
    timing = call_timing(call)
    if timing is None:
        return f"call {call.call_id} of {call.name}() at {where}: no answer yet"
    lines = [f"call {timing.call_id} of {timing.function}() at {where}: {_ms(timing.total)} in all"]
    if timing.here is not None:
        lines.append(f"  here, before it went out  {_ms(timing.here)}  encoding, sending")
    else:
        lines.append("  here, before it went out        (held for a batch with other calls)")
    if timing.ran is None:  # a server that gives no timings (over HTTP, say)
        rest = timing.total - (timing.here or 0.0)
        lines.append(f"  on the way and there      {_ms(rest)}  (the server gave no timings)")
    else:
        lines += [
            f"  on the way, both ways     {_ms(timing.on_the_way or 0.0)}  network and sockets",
            f"  there, before it ran      {_ms(timing.before or 0.0)}  a thread, the arguments",
            f"  running                   {_ms(timing.ran)}",
            f"  there, after it returned  {_ms(timing.after or 0.0)}  encoding the answer",
        ]
    if timing.lines:
        shown = f"{timing.lines} line(s) of output shown here"
        lines.append(f"  output                    {_ms(timing.printed)}  {shown}")
    return "\n".join(lines)


def explain_target(target: Any) -> str | None:
    """``undertow.explain(target)`` for a call's future, or a client (its last blocking
    call); None for anything else."""
    explain = getattr(target, "_explain_call", None)
    return explain() if callable(explain) else None
