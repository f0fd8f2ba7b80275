"""How a worker hears of new jobs: the jobs a store hands it while it waits idle, taken by
its idle slots, and the announcements of jobs put on its queues (:func:`listen`).

On a store that can (Redis), a worker offers its free slots with each claim; a job enqueued
while it waits is started for it by the enqueue itself and put in its inbox. One idle slot
thread at a time waits on that inbox and runs the job it gets: no announcement, no claim,
no hop through the worker's event loop and no handoff between threads on the way
(``storage/_redis_sync.py`` and ``SlotThreads`` have the figures).

The loop is not woken for it either: waking it would make it take the GIL from the job's
thread just as the job starts. The job waits in :attr:`Handoff.handed` until the loop's next
turn, at the latest when the job ends or after ``poll_max``; its lease, short until then
(:data:`HANDED_LEASE`), is renewed at that turn.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable

from undertow.errors import BackendError
from undertow.queue._capture import Sink
from undertow.queue._runner import TURN_WAIT, Slots, Task
from undertow.queue._worker_state import WorkerState
from undertow.storage import Backend, Inbox, JobRecord, Offer

__all__ = ["HANDED_LEASE", "Handoff", "listen"]

log = logging.getLogger(__name__)

#: the longest pause after a failed take (the pause doubles from 10 ms)
PAUSE_MAX = 1.0
#: the lease of a job handed to a worker (renewed to the full lease once its loop takes it,
#: within two pauses), short so that a job handed to a worker that died comes back soon
HANDED_LEASE = 5.0


class Handoff:
    """A worker's inbox, waited on by its idle slots.

    Args:
        inbox: the store's inbox of the worker.
        name: the worker's name.
        slots: the worker's slots.
    """

    def __init__(self, inbox: Inbox, name: str, *, slots: Slots) -> None:
        self.inbox, self.name, self._slots = inbox, name, slots
        #: the jobs handed, for the loop to take (each is here before a slot runs it)
        self.handed: collections.deque[tuple[JobRecord, Sink]] = collections.deque()
        self._pause = 0.01
        self._idle = threading.Event()  # never set: its wait() is the pause after a failure

    def start(self) -> None:
        self._slots.wait_on(self._take, self._nudge)

    def offer(self, state: WorkerState, now: float) -> Offer:
        """What the worker offers with a claim at ``now``: its free slots, until a little
        after its next claim at the latest (a worker that died is soon passed over); a job
        handed is leased until the loop takes it at the latest (renewed then)."""
        turn = 2 * state.poll_max + 1.0
        return Offer(state.offered(), now + turn, min(state.lease, max(HANDED_LEASE, turn)))

    def taken(self) -> list[tuple[JobRecord, Sink]]:
        """The jobs handed since the last call (the loop holds them from now on)."""
        done = []
        while self.handed:
            done.append(self.handed.popleft())
        return done

    def _task(self, record: JobRecord) -> Task:
        sink = Sink()
        self.handed.append((record, sink))  # (before the job can end)
        return Task(record, sink)

    def _take(self, wait: float) -> Task | None:
        """A slot's wait on the inbox (in that slot's thread): the job to run, or None."""
        try:
            records = self.inbox.take(wait)
        except BackendError as exc:
            log.debug("worker %s: cannot read its inbox, waiting: %s", self.name, exc)
            self._idle.wait(self._pause)
            self._pause = min(self._pause * 2, PAUSE_MAX)
            return None
        self._pause = 0.01
        tasks = [self._task(record) for record in records]
        for task in tasks[1:]:  # (a take that waits returns one job)
            self._slots.put(task)
        return tasks[0] if tasks else None

    def _nudge(self) -> None:
        try:
            self.inbox.nudge()
        except BackendError as exc:  # the wait ends within TURN_WAIT anyway
            log.debug("worker %s: cannot nudge its inbox: %s", self.name, exc)

    async def close(self, store: Backend) -> int:
        """End the offer, let no slot wait any more, and hand on what the inbox still holds;
        how many jobs that was (the worker runs them before it stops). A BackendError as
        the offer ends leaves everything as it was (call again)."""
        await store.withdraw(self.name)
        self._slots.wait_on(None)
        await asyncio.to_thread(self._settle)
        try:
            rest = await asyncio.to_thread(self.inbox.take, 0)
        except BackendError as exc:  # they come back when their leases run out
            log.warning("worker %s: jobs left in its inbox: %s", self.name, exc)
            rest = []
        finally:
            self.inbox.close()
        for record in rest:
            self._slots.put(self._task(record))
        return len(rest)

    def abandon(self) -> None:
        """No slot waits any more (the worker goes away; what it was handed comes back when
        the leases run out)."""
        self._slots.wait_on(None)

    def _settle(self) -> None:
        """Wait until no slot waits on the inbox (nudged: at most TURN_WAIT)."""
        self._nudge()
        deadline = time.monotonic() + TURN_WAIT + 5.0
        while self._slots.waiting and time.monotonic() < deadline:
            self._idle.wait(0.005)


async def listen(
    store: Backend, queues: list[str], state: WorkerState, poke: Callable[[], None]
) -> None:
    """Tell the worker (``poke``) to claim as soon as the store announces jobs on ``queues``
    (a store that announces nothing is polled); an unreachable store is tried again, with a
    growing pause."""
    pause = state.poll_min
    while True:
        try:
            async for _ in store.notifications(queues):
                state.notified(time.time())
                poke()
                pause = state.poll_min
            if not store.announces:
                return  # it never will: the worker polls
        except BackendError as exc:
            log.debug("no announcements of jobs on %s for now: %s", queues, exc)
        await asyncio.sleep(pause)
        pause = min(pause * 2, state.poll_max)
