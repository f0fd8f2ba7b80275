"""A server's functions as stages of pipelines: run each message, pass the result on.

Any function of any server is a stage: a pipeline names it ``"service.function"``. A batch
of messages that arrives through ``_pipe`` runs in a pool of the server's size (its
``max_workers``), one batch per thread, in the order the messages came. The function takes
the message's value; what it returns goes on along the message's route (the next stage, a
tee's branches, a route's branch, a sink, or the stream's client). A function may also:

- return :data:`~undertow.DROP`: the message goes no further (a filter);
- return :class:`~undertow.To` ``(key, value)``: the route after it picks its branch by key;
- be a generator: each item it yields goes on as a message of its own (the same id);
- raise: the error goes to the stream's client with the message's id, for that one only.

The function's authorization rule, if it has one, is asked for each message with the
value as the one argument.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from undertow.errors import PermissionDenied, StreamError
from undertow.patterns._send import Outbox, error_entry
from undertow.patterns._wire import DROP, DROPPED, OK, Hop, next_hops, plain, split
from undertow.rpc import Job

__all__ = ["StageRunner", "pass_on"]


class StageRunner:
    """Runs the messages a server gets as a stage, in a pool of its own."""

    def __init__(self, plane: Any) -> None:
        """``plane``: the server's :class:`~undertow.patterns.PipePlane`."""
        self._plane = plane
        self._server = plane.server

    def accept(self, groups: list[Any], codec: str, identity: str | None) -> Job | None:
        """The batch's work, for the server's receiver pool: it runs it in the thread that
        received it (no hand-off) unless the function has been slow before, and lets other
        calls in meanwhile (see ``rpc/_receivers.py``)."""

        def work() -> None:
            for stream, reply, function, steps, entries in groups:
                self._run(stream, reply, function, steps, entries, codec, identity)

        return f"_pipe {groups[0][2] if groups else ''}", work

    def close(self) -> None:
        return None

    def _run(
        self,
        stream: str,
        reply: str,
        function: str,
        steps: list[Any],
        entries: list[Any],
        codec: str,
        identity: str | None,
    ) -> None:
        box = Outbox(codec)
        counters = self._plane.counters
        name = f"{self._server.name}.{function}"
        entry = None if function.startswith("_") else self._server.function(function)
        if entry is None:
            why = StreamError(
                f"{name}: server {self._server.name!r} has no function {function!r} "
                f"(it has: {', '.join(i.name for i in self._server.info()) or 'none'})"
            )
            for item, weight, _value in entries:
                box.end(reply, stream, error_entry(item, weight, why))
            counters.failed_unrun(len(entries))
        else:
            run = _runner(entry, self._server.loop, identity, name)
            for item, weight, value in entries:
                start = time.perf_counter()
                try:
                    outputs = run(plain(value, stream))
                except Exception as exc:  # the function's error, for this message only
                    box.end(reply, stream, error_entry(item, weight, exc))
                    counters.done(function, time.perf_counter() - start, failed=True)
                    continue
                sent = pass_on(box, outputs, steps, stream, reply, item, weight, name)
                counters.done(
                    function, time.perf_counter() - start, answers=sent, dropped=sent == 0
                )
        if box:
            self._plane.sender.send(box)  # from this thread: no hand-off


def _runner(
    entry: Any, loop: asyncio.AbstractEventLoop | None, identity: str | None, name: str
) -> Any:
    """A function of one value that runs ``entry`` as a stage: a list of its outputs."""
    fn, mode, rule = entry.fn, entry.mode, entry.auth

    def run(value: Any) -> list[Any]:
        if rule is not None and not rule(identity, entry.name, (value,), {}):
            who = "an anonymous caller" if identity is None else repr(identity)
            raise PermissionDenied(f"{who} may not send messages to {name}")
        if mode == "function":
            return [fn(value)]
        if mode == "generator":
            return list(fn(value))
        if loop is None:
            raise StreamError(f"{name} is async, and the server's loop is not running")
        if mode == "async":
            return [asyncio.run_coroutine_threadsafe(fn(value), loop).result()]
        return asyncio.run_coroutine_threadsafe(_collect(fn(value)), loop).result()

    return run


async def _collect(agen: Any) -> list[Any]:
    return [item async for item in agen]


def pass_on(
    box: Outbox,
    outputs: list[Any],
    steps: list[Any],
    stream: str,
    reply: str,
    item: Any,
    weight: int,
    name: str,
) -> int:
    """Put a message's outputs on their way (or tell the client it was dropped); returns how
    many went on."""
    outputs = [o for o in outputs if o is not DROP]
    if not outputs:
        box.end(reply, stream, [item, DROPPED, weight, None])
        return 0
    sent = 0
    for value, share in zip(outputs, split(weight, len(outputs)), strict=True):
        if not steps:  # the common last stage: straight back to the client
            box.end(reply, stream, [item, OK, share, value])
            sent += 1
            continue
        try:
            hops: list[Hop] = next_hops(steps, value, share, name)
        except StreamError as exc:
            box.end(reply, stream, error_entry(item, share, exc))
            continue
        for hop in hops:
            box.hop(hop, stream, reply, item, OK)
        sent += 1
    return sent
