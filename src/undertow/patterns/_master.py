"""A master's engine: messages waiting for workers, what each worker holds, who is alive.

Everything here runs on the master server's event loop (messages arrive from the receiving
threads through ``call_soon_threadsafe``), so the tables need no locks.

Workers *take*: each ``_pipe_take`` call carries a worker's answers to what it held and asks
for up to ``want`` more messages of the functions it serves (its credit). A worker asks for
more only as it finishes what it holds, so a slow worker is given less. A take finds
messages waiting, or waits for some up to :data:`TAKE_WAIT` seconds (then gets none, and
asks again). Each message handed out is held for its worker under a key until the answer
comes; a worker that says nothing (no take, no beat) for ``worker_timeout`` seconds is
dead, and what it held goes back to the front of the line for another (at least once, with
the message's id: the client keeps the first answer of each input). A message whose
workers died :data:`MAX_ATTEMPTS` times fails.

Bound: a master holds at most ``max_pending`` messages waiting plus what its workers hold
(their credit, at most :data:`MAX_WANT` each); a message beyond that fails at once with a
:class:`~undertow.errors.StreamError` saying so (streams stay under it: a client has at most
its window out).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import time
from typing import Any

from undertow.errors import StreamError
from undertow.patterns._plane import PipePlane
from undertow.patterns._send import Outbox, error_entry
from undertow.patterns._stage import pass_on
from undertow.patterns._wire import (
    ERR,
    OK,
    blobs_out,
    codec_named,
    plain,
    size_of,
    split,
    zero_copy,
)
from undertow.rpc import Incoming
from undertow.wire import error_info

__all__ = ["MAX_ATTEMPTS", "MAX_WANT", "PROTOCOL", "TAKE_WAIT", "MasterEngine"]

#: the version of the take protocol (a worker that speaks another is refused)
PROTOCOL = 1
#: seconds a take waits for messages before it returns empty
TAKE_WAIT = 1.0
#: the most messages a worker may hold at once
MAX_WANT = 1024
#: bytes of messages one take is given at most (at least one message)
TAKE_BYTES = 2 << 20
#: how many times a message may be handed out to workers that then died
MAX_ATTEMPTS = 3


class _Worker:
    __slots__ = ("functions", "held", "id", "seen", "taken")

    def __init__(self, wid: str, functions: frozenset[str]) -> None:
        self.id = wid
        self.functions = functions
        self.held: dict[int, list[Any]] = {}
        self.seen = time.monotonic()
        self.taken = 0


class MasterEngine:
    """The master's tables and rules (see the module's docstring).

    A task is a list ``[stream, reply, function, steps, item, weight, value, codec, attempts,
    started]``.
    """

    def __init__(
        self,
        plane: PipePlane,
        *,
        scatter: Any = None,
        gather: Any = None,
        max_pending: int = 100_000,
        worker_timeout: float = 10.0,
    ) -> None:
        self._plane = plane
        self._name = plane.server.name
        self._scatter = scatter
        self._gather = gather
        self._gather_many = gather is not None and inspect.isgeneratorfunction(gather)
        self.max_pending = max_pending
        self.worker_timeout = worker_timeout
        #: (function, codec) -> messages waiting, oldest first
        self._pending: dict[tuple[str, str], collections.deque[list[Any]]] = {}
        self._count = 0  # messages pending
        self._workers: dict[str, _Worker] = {}
        self._parked: collections.deque[tuple[Incoming, _Worker, int, float]] = collections.deque()
        self._keys = itertools.count(1)
        self._reaper: asyncio.Task[None] | None = None
        self.requeued = 0
        self.stale = 0

    # -- messages in ------------------------------------------------------------------------

    def accept(self, groups: list[Any], codec: str, identity: str | None) -> None:
        """From a receiving thread: hand the groups to the loop."""
        loop = self._plane.server.loop
        if loop is not None:
            loop.call_soon_threadsafe(self._accept, groups, codec)
        return None

    def _accept(self, groups: list[Any], codec: str) -> None:
        self._start_reaper()
        box = Outbox(codec)
        for stream, reply, function, steps, entries in groups:
            line = self._pending.setdefault((function, codec), collections.deque())
            for item, weight, value in entries:
                if self._count >= self.max_pending:
                    why = StreamError(
                        f"master {self._name!r} holds {self._count} messages waiting, its "
                        f"limit (max_pending); send fewer at once (a smaller window)",
                        item=item,
                    )
                    box.end(reply, stream, error_entry(item, weight, why))
                    self._plane.counters.failed_unrun(1)
                    continue
                for piece, share in self._pieces(value, weight, box, stream, reply, item):
                    line.append([stream, reply, function, steps, item, share, piece, codec, 0, 0.0])
                    self._count += 1
        self._plane.sender.post(box)
        self._hand_out()

    def _pieces(
        self, value: Any, weight: int, box: Outbox, stream: str, reply: str, item: Any
    ) -> list[tuple[Any, int]]:
        if self._scatter is None:
            return [(value, weight)]
        try:
            pieces = list(self._scatter(plain(value, stream)))
        except Exception as exc:  # the hook's error, for this message only
            box.end(reply, stream, error_entry(item, weight, exc))
            self._plane.counters.failed_unrun(1)
            return []
        if not pieces:
            box.end(reply, stream, [item, 2, weight, None])
            return []
        return list(zip(pieces, split(weight, len(pieces)), strict=True))

    # -- workers ------------------------------------------------------------------------------

    def take(self, incoming: Incoming, payload: Any, codec: str) -> None:
        """From a receiving thread: a worker's answers and its request for more."""
        loop = self._plane.server.loop
        if loop is not None:
            loop.call_soon_threadsafe(self._take, incoming, payload, codec)

    def _take(self, incoming: Incoming, payload: Any, codec: str) -> None:
        self._start_reaper()
        try:
            version, wid, want, functions, answers = payload
            if version != PROTOCOL:
                raise StreamError(
                    f"the worker speaks take protocol {version!r}, master {self._name!r} "
                    f"speaks {PROTOCOL}: run the same undertow version on both"
                )
            if not (isinstance(wid, str) and isinstance(want, int) and isinstance(answers, list)):
                raise StreamError("a take is [version, worker id, want, functions, answers]")
            worker = self._worker(wid, functions)
        except (StreamError, TypeError, ValueError) as exc:
            if isinstance(payload, list) and len(payload) > 1 and isinstance(payload[1], str):
                self._drop(payload[1])
            incoming.fail(
                error_info(
                    exc
                    if isinstance(exc, StreamError)
                    else StreamError(
                        f"a take that is not [version, worker id, want, functions, answers]: {exc}"
                    )
                )
            )
            return
        worker.seen = time.monotonic()
        if answers:
            self._answers(worker, answers, codec)
        want = max(0, min(want, MAX_WANT - len(worker.held)))
        tasks = self._tasks_for(worker, want, codec)
        if tasks or want == 0 or self._pickle_for(worker, codec):
            self._reply(incoming, worker, tasks)
        else:
            self._parked.append((incoming, worker, want, time.monotonic() + TAKE_WAIT))

    def _worker(self, wid: str, functions: Any) -> _Worker:
        worker = self._workers.get(wid)
        if worker is None:
            if not (isinstance(functions, list) and all(isinstance(f, str) for f in functions)):
                raise StreamError("a worker names the functions it serves as a list of strings")
            worker = self._workers[wid] = _Worker(wid, frozenset(functions))
        return worker

    def _tasks_for(self, worker: _Worker, want: int, codec: str) -> list[list[Any]]:
        """Up to ``want`` messages for a take in ``codec`` (in numpy: messages of streams
        in numpy only; in pickle, from a signed worker: any)."""
        tasks: list[list[Any]] = []
        if want <= 0 or not self._count:
            return tasks
        now = time.monotonic()
        size = 0
        codecs = ("numpy", "pickle") if codec == "pickle" else ("numpy",)
        for function, line_codec in [(f, c) for f in worker.functions for c in codecs]:
            line = self._pending.get((function, line_codec))
            while line and len(tasks) < want and size < TAKE_BYTES:
                task = line.popleft()
                size += size_of(task[6])
                self._count -= 1
                task[8] += 1
                task[9] = now
                key = next(self._keys)
                worker.held[key] = task
                tasks.append([key, function, task[6], zero_copy(task[0])])
            if len(tasks) >= want:
                break
        return tasks

    def _pickle_for(self, worker: _Worker, codec: str) -> bool:
        """True when messages in pickle wait for a worker that takes in numpy (it should
        take in pickle next: signing every frame costs, so it does only when it must)."""
        return codec == "numpy" and any(self._pending.get((f, "pickle")) for f in worker.functions)

    def _reply(self, incoming: Incoming, worker: _Worker, tasks: list[list[Any]]) -> None:
        """Answer a take: ``[tasks, pickle waiting]``."""
        worker.taken += len(tasks)
        codec = incoming.header.codec
        blobs_out(tasks, 2)
        waiting = any(self._pending.get((f, "pickle")) for f in worker.functions)
        incoming.reply(codec_named(codec).encode([tasks, waiting]), codec)

    def _hand_out(self) -> None:
        """Give waiting messages to parked takes."""
        while self._parked and self._count:
            incoming, worker, want, _until = self._parked.popleft()
            if worker.id not in self._workers or incoming.finished:
                continue
            tasks = self._tasks_for(worker, want, incoming.header.codec)
            if tasks or self._pickle_for(worker, incoming.header.codec):
                self._reply(incoming, worker, tasks)
            else:  # nothing this worker serves: it waits on
                self._parked.append((incoming, worker, want, _until))
                if all(p[1].functions.isdisjoint(self._waiting()) for p in self._parked):
                    return

    def _waiting(self) -> set[str]:
        return {f for (f, _c), line in self._pending.items() if line}

    def _answers(self, worker: _Worker, answers: list[Any], codec: str) -> None:
        counters = self._plane.counters
        box = Outbox(codec)
        now = time.monotonic()
        for answer in answers:
            try:
                key, status, value = answer
                task = worker.held.pop(key)
            except (TypeError, ValueError, KeyError):
                self.stale += 1  # given to another worker already, or not an answer
                continue
            stream, reply, function, steps, item, weight = task[:6]
            name = f"{self._name}.{function}"
            if status == OK:
                outputs = self._gathered(value, box, stream, reply, item, weight)
                if outputs is not None:
                    sent = pass_on(box, outputs, steps, stream, reply, item, weight, name)
                    counters.done(function, now - task[9], answers=sent, dropped=sent == 0)
                continue
            if status != ERR or not isinstance(value, bytes | bytearray | memoryview):
                value = error_entry(
                    item,
                    weight,
                    StreamError(
                        f"worker {worker.id} answered message {item} of {name} with status "
                        f"{status!r}, which is not an answer",
                        item=item,
                    ),
                )[3]
            box.end(reply, stream, [item, ERR, weight, value])
            counters.done(function, now - task[9], failed=True)
        self._plane.sender.post(box)

    def _gathered(
        self, value: Any, box: Outbox, stream: str, reply: str, item: Any, weight: int
    ) -> list[Any] | None:
        if self._gather is None:
            return [value]
        try:
            value = plain(value, stream)
            return list(self._gather(value)) if self._gather_many else [self._gather(value)]
        except Exception as exc:  # the hook's error, for this message only
            box.end(reply, stream, error_entry(item, weight, exc))
            return None

    # -- time ---------------------------------------------------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(0.2, self.worker_timeout / 4))
            now = time.monotonic()
            for worker in list(self._workers.values()):
                if now - worker.seen > self.worker_timeout:
                    self._drop(worker.id)
            while self._parked and self._parked[0][3] <= now:
                incoming, worker, _want, _until = self._parked.popleft()
                self._reply(incoming, worker, [])
            if self._parked:  # not in deadline order once some waited on: sort them out
                self._parked = collections.deque(sorted(self._parked, key=lambda p: p[3]))

    def _drop(self, wid: str) -> None:
        """The worker is gone: what it held goes back to the front of the line."""
        worker = self._workers.pop(wid, None)
        if worker is None:
            return
        box: Outbox | None = None
        for task in sorted(worker.held.values(), key=lambda t: t[4], reverse=True):
            if task[8] >= MAX_ATTEMPTS:
                box = box or Outbox(task[7])
                why = StreamError(
                    f"message {task[4]} was given to {task[8]} workers of master "
                    f"{self._name!r} and each died before answering",
                    item=task[4],
                )
                box.end(task[1], task[0], error_entry(task[4], task[5], why))
                self._plane.counters.failed_unrun(1)
                continue
            self._pending.setdefault((task[2], task[7]), collections.deque()).appendleft(task)
            self._count += 1
            self.requeued += 1
        worker.held.clear()
        if box is not None:
            self._plane.sender.post(box)
        self._hand_out()

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()

    def stats(self) -> dict[str, Any]:
        """The master's own figures, added to the server's counters."""
        return {
            "pending": self._count,
            "max_pending": self.max_pending,
            "workers": {
                w.id: {"held": len(w.held), "taken": w.taken, "functions": sorted(w.functions)}
                for w in list(self._workers.values())  # from another thread: a copy
            },
            "requeued": self.requeued,
            "stale_answers": self.stale,
        }
