"""Running one call of a registered function, whichever transport brought it.

:class:`Dispatcher` is the server's raw handler for its functions. In the receiving thread
it refuses what must be refused before anything is decoded (pickle from an anonymous caller,
another codec than the function's), then starts the call where it belongs: a plain function
or generator as a job for a pool thread (with its deadline kept on the loop), an ``async``
function or generator as a task on the loop. Running, it asks the function's rule, decodes
the arguments (unless the transport decoded them already), replaces pointers by their
values, captures the function's output, keeps a stream within its caller's credit, and
answers: with frames encoded by the function's codec, or with Python values for a call
whose answers are values (:attr:`Incoming.values`, a call from HTTP).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from undertow._util import current_call
from undertow.errors import UndertowError
from undertow.rpc._core import HandlerServer
from undertow.rpc._entry import (
    Entry,
    admit,
    refusal,
    send_result,
    send_value,
    timeout_info,
    value_sent,
)
from undertow.rpc._flow import StreamCredit
from undertow.rpc._incoming import Arguments, Incoming
from undertow.rpc._output import OutputSink, uncaptured
from undertow.rpc._plane import DataPlane
from undertow.rpc._receivers import Job
from undertow.wire import Flags, error_info

__all__ = ["Dispatcher"]

_NO_OUTPUT = int(Flags.NO_OUTPUT)
_POINTER = int(Flags.POINTER)
#: A stream whose caller set no deadline gives up after this long without asking for more.
_IDLE_STREAM = 300.0
_clock = time.perf_counter_ns  # as Incoming.started


class Dispatcher:
    """Checks, starts and runs the calls of a server's registered functions.

    Args:
        name: the server's name, for messages.
        core: the handler server that received the calls (its loop runs async functions).
        data: the server's data plane (pointers in, ``return_pointer`` out).
    """

    def __init__(self, name: str, core: HandlerServer, data: DataPlane) -> None:
        self.name = name
        self._core = core
        self._data = data
        #: the registered functions by name (replaced whole when they change)
        self.entries: dict[str, Entry] = {}
        #: the loop async functions run on (set when the server serves)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[Incoming, asyncio.Task[Any]] = {}

    def handle(self, incoming: Incoming) -> Job | None:
        """Runs in the receiving thread: check the call, then start it where it belongs."""
        header = incoming.header
        entry = self.entries.get(header.name)
        if entry is None:  # replaced between dispatch and now
            incoming.fail(self._core.not_found(header.name))
            return None
        if entry.checked or header.codec != entry.input_name:
            problem = refusal(entry, incoming, self.name)
            if problem is not None:
                incoming.fail(problem)
                return None
        if entry.mode in ("generator", "asyncgen"):
            # made here, before any CREDIT for this call can arrive
            incoming.credit = StreamCredit(self.loop if entry.mode == "asyncgen" else None)
        if entry.mode in ("async", "asyncgen"):
            self._core.on_loop(self._start_async, entry, incoming)
            return None
        timeout = entry.options.timeout
        if timeout is not None:
            self._core.on_loop(self._schedule_expiry, timeout, entry, incoming)
        return entry.name, functools.partial(self._run_sync, entry, incoming)

    def cancel(self, incoming: Incoming) -> None:
        """On the loop: stop a call whose caller cancelled it or went away (an ``async``
        function's task is cancelled; a plain function's thread sees ``cancelled``)."""
        incoming.cancelled = True
        if incoming.credit is not None:  # a generator waiting for credit stops waiting
            incoming.credit.close()
        task = self._tasks.get(incoming)
        if task is not None:
            task.cancel()

    def _start_async(self, entry: Entry, incoming: Incoming) -> None:
        self._tasks[incoming] = self._core.spawn(self._run_async(entry, incoming))

    def _schedule_expiry(self, timeout: float, entry: Entry, incoming: Incoming) -> None:
        if self.loop is not None and not incoming.finished:
            self.loop.call_later(timeout, self._expire, entry, incoming)

    def _expire(self, entry: Entry, incoming: Incoming) -> None:
        incoming.cancelled = True
        incoming.fail(timeout_info(entry))

    def _capture(self, entry: Entry, incoming: Incoming) -> OutputSink | uncaptured:
        """Where the call's output goes while it runs: to its caller, unless switched off."""
        if entry.options.output and not incoming.header.flags & _NO_OUTPUT:
            return OutputSink(incoming.output)
        return uncaptured()

    def _run_sync(self, entry: Entry, incoming: Incoming) -> None:
        if not incoming._once:  # answered already (its deadline, say): the property inlined
            return
        admitted = admit(entry, incoming, self.name)
        if admitted is not None and self._data.mentions_pointers(incoming.frames):
            admitted = self._values(incoming, admitted)
        if admitted is None:
            return
        args, kwargs = admitted
        running = current_call.set(incoming)  # log records made meanwhile carry its id
        incoming.began = _clock()
        try:
            with self._capture(entry, incoming):
                if entry.mode == "generator":
                    assert incoming.credit is not None
                    for item in entry.fn(*args, **kwargs):
                        if not incoming.credit.take(_credit_wait(incoming)):
                            break  # cancelled, or the caller stopped asking
                        self._send_item(entry, incoming, item)
                    result = None
                else:
                    result = entry.fn(*args, **kwargs)
        except Exception as exc:  # the function's failure is the caller's error
            incoming.ended = _clock()
            incoming.fail(error_info(exc, skip_frames=1))
            return
        finally:
            current_call.reset(running)
        incoming.ended = _clock()
        self._finish(entry, incoming, result)

    async def _run_async(self, entry: Entry, incoming: Incoming) -> None:
        current_call.set(incoming)  # the task's own context: log records carry its id
        try:
            admitted = admit(entry, incoming, self.name)
            if admitted is not None and self._data.mentions_pointers(incoming.frames):
                # in a thread: a value held elsewhere is fetched
                admitted = await asyncio.to_thread(self._values, incoming, admitted)
            if admitted is None:
                return
            args, kwargs = admitted
            limit = asyncio.timeout(entry.options.timeout)
            incoming.began = _clock()
            try:
                async with limit:
                    with self._capture(entry, incoming):
                        if entry.mode == "asyncgen":
                            assert incoming.credit is not None
                            async for item in entry.fn(*args, **kwargs):
                                if not await incoming.credit.take_async(_credit_wait(incoming)):
                                    break
                                self._send_item(entry, incoming, item)
                            result = None
                        else:
                            result = await entry.fn(*args, **kwargs)
            except Exception as exc:  # the function's failure is the caller's error
                incoming.ended = _clock()
                if isinstance(exc, TimeoutError) and limit.expired():
                    incoming.fail(timeout_info(entry))  # our limit, not the function's own
                else:
                    incoming.fail(error_info(exc, skip_frames=1))
                return
            incoming.ended = _clock()
            self._finish(entry, incoming, result)
        finally:
            self._tasks.pop(incoming, None)

    def _values(self, incoming: Incoming, arguments: Arguments) -> Arguments | None:
        """The arguments with their pointers replaced by the values; None if one of them
        cannot be had (the call is answered with why)."""
        args, kwargs = arguments
        try:
            return self._data.resolve(args, kwargs, incoming.identity, incoming.header.timeout)
        except UndertowError as exc:
            incoming.fail(self._data.failure(exc))
            return None

    def _kept(self, entry: Entry, incoming: Incoming, value: Any) -> Any:
        """``value``, or a pointer to it left here when the function or the call says so."""
        if entry.options.return_pointer or incoming.header.flags & _POINTER:
            return self._data.keep(value, incoming)
        return value

    def _send_item(self, entry: Entry, incoming: Incoming, item: Any) -> None:
        item = self._kept(entry, incoming, item)
        if incoming.values:
            incoming.item_value(value_sent(entry, item))
            return
        codec = entry.options.output_serialization
        incoming.item(codec.encode(item), codec.name)

    def _finish(self, entry: Entry, incoming: Incoming, result: Any) -> None:
        if entry.mode in ("generator", "asyncgen"):
            incoming.end()
            return
        if entry.options.return_pointer or incoming.header.flags & _POINTER:
            try:
                result = self._data.keep(result, incoming)
            except UndertowError as exc:  # the data store could not take it
                incoming.fail(self._data.failure(exc))
                return
        if incoming.values:
            send_value(entry, incoming, result)
        else:
            send_result(entry, incoming, result)


def _credit_wait(incoming: Incoming) -> float:
    """How long a stream waits for its caller to ask for more before it gives up."""
    return incoming.header.timeout or _IDLE_STREAM
