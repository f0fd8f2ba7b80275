"""A blocking call on a thread's own socket: send it, then deliver what comes back until
its outcome is in (used by the ZeroMQ and the plain-socket connections alike)."""

from __future__ import annotations

import time
from typing import Any

from undertow.errors import ConnectionClosed, ConnectionLost
from undertow.rpc._calls import Call, deliver_all
from undertow.security import ClientSeal

__all__ = ["run_call"]

_clock = time.perf_counter

#: a waiting blocking call looks at its deadline and at close() this often (ms)
_SLICE_MS = 100


def run_call(
    sock: Any,
    seal: ClientSeal | None,
    call: Call,
    frames: list[Any],
    deadline: float | None,
    endpoint: str,
    owner: Any,
    *,
    verified: bool = False,
) -> bool:
    """Send ``call`` on ``sock`` (a thread's own socket: ZeroMQ or plain) and deliver what
    comes back until it is done; False if ``deadline`` passed first. ``owner.closed`` ends
    the wait with :class:`ConnectionClosed`; a connection that drops, with
    :class:`ConnectionLost`. Messages of calls given up on before are dropped."""
    mine = {call.call_id: call}
    sock.send(frames if seal is None else seal.seal(frames))
    call.sent = _clock()
    while not call.done:
        left = _SLICE_MS if deadline is None else (deadline - time.monotonic()) * 1000
        if left <= 0:
            return False
        msg = sock.recv(_SLICE_MS if left >= _SLICE_MS else int(left) + 1)
        if msg is None:
            if owner.closed:
                raise ConnectionClosed(f"the client for {endpoint} was closed")
            if sock.lost():
                raise ConnectionLost(
                    f"the connection to {endpoint} dropped while {call.name}() was running; "
                    "it may or may not have completed"
                )
            continue
        deliver_all(mine, msg, endpoint, seal, verified)
    return True
