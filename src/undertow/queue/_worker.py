"""A worker: claims jobs from its queues, runs them, and reports how each ended.

The decisions are :class:`WorkerState`'s; this shell does the I/O. Claimed jobs go to the
worker's job threads (``_runner.py``), one per slot; a coroutine function's job comes back to
run on the loop. Results are stored in batches, one round trip before each claim. While jobs
run, the loop renews their leases (a refused renewal stops the job: it was cancelled, or its
lease was lost), stores what they print, and sweeps expired leases now and then. A failure
of the backend is logged and waited out, never a reason to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from undertow.errors import BackendError
from undertow.queue._capture import Sink
from undertow.queue._handle import warn_if_not_durable
from undertow.queue._inbox import Handoff, listen
from undertow.queue._keep import Keeper
from undertow.queue._modes import check_mode, start_slots
from undertow.queue._payload import encode_result
from undertow.queue._report import flush_output, persist, report
from undertow.queue._route import local_queues, this_host
from undertow.queue._runner import (
    Admit,
    Functions,
    Opened,
    Outcome,
    Retry,
    Slots,
    Task,
    failure,
    kept,
    stopped,
)
from undertow.queue._worker_state import WorkerState
from undertow.security import Authenticator
from undertow.storage import (
    Backend,
    JobRecord,
    JobState,
    WorkerInfo,
    check_queue_name,
    open_backend,
)

__all__ = ["Worker"]

log = logging.getLogger(__name__)

#: while jobs run, their output is stored at least this often (seconds)
OUTPUT_EVERY = 0.25


class Worker:
    """Runs the jobs of ``queues`` (taken in the order given).

    ::

        worker = Worker(None, ["default"], functions={"resize": resize}, concurrency=4)
        worker.work(burst=True)        # run what is queued, then return
        await worker.run()             # or: forever (until drain())

    Args:
        backend: the backend URL (default: ``$UNDERTOW_BACKEND``, else the embedded SQLite
            file), or an open :class:`~undertow.storage.Backend` used on the loop that runs
            the worker.
        queues: the queues to take jobs from, first ones first.
        functions: the functions jobs may name. Jobs by name run only these.
        concurrency: jobs run at once.
        auth: the authenticator whose tokens may submit pickled callables (their signatures
            are checked with it); without one, such jobs fail unread.
        lease: seconds a claim holds a job without renewal; a worker that dies loses its jobs
            to others after this long.
        sweep_every: seconds between two sweeps of expired leases (default: ``lease / 2``).
        poll_max: the longest pause between two claims when the queues are empty (default:
            1 s on a store that tells idle workers of new jobs, as Redis does, 0.05 s on one
            that does not, as the SQLite file: it is polled).
        prefetch: at most this many jobs claimed beyond the slots, so that short jobs come
            in batches; only as many as the slots get through in about 50 ms at the recent
            pace (none while jobs take longer than that). 0: never more than the slots.
        hosts: the names of this machine (default: its host name and addresses): the worker
            takes the jobs sent to their ``host:`` queues and to the ``group:`` queues of
            their groups first, before ``queues`` (``[]``: none).
        admit: asked before each job runs, with its function's name, the submitter's
            verified identity (None: unsigned or unknown) and the arguments; False fails the
            job with PermissionDenied, unrun (thread mode only).
        mode: where jobs run: ``"thread"`` (threads of this process, the fastest),
            ``"process"`` (a child process per slot, replaced if a job kills it) or
            ``"fork"`` (a child forked for each job; POSIX). In the last two a crash fails
            only its attempt, a stopped job's process is killed, and this process never
            unpickles a payload; ``"process"`` pickles ``functions`` and ``auth`` once.
        data: where jobs submitted with ``return_pointer`` leave their results: an address,
            or a service's name in the registry (default ``"data"``: this host's data
            server first).
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        queues: Sequence[str] | str = ("default",),
        *,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        concurrency: int = 1,
        auth: Authenticator | None = None,
        lease: float = 30.0,
        sweep_every: float | None = None,
        poll_max: float | None = None,
        prefetch: int = 256,
        mode: str = "thread",
        hosts: Sequence[str] | None = None,
        admit: Admit | None = None,
        data: str | None = None,
    ) -> None:
        self.mode = check_mode(mode)
        self._backend_arg = backend
        self._poll_given = poll_max is not None
        #: the queues given; :attr:`queues` puts those of this host and its groups first
        self.given = [
            check_queue_name(q) for q in ([queues] if isinstance(queues, str) else queues)
        ]
        self.queues = list(self.given)
        #: the names of this machine in host queues and groups (empty: none are taken)
        self.hosts = this_host() if hosts is None else list(hosts)
        self.functions, self.auth = dict(functions or {}), auth
        #: asked before each job runs (thread mode): (function, submitter, args, kwargs)
        self.admit = admit
        #: leaves the results of jobs that ask for return_pointer on a data server
        self.keeper = Keeper(data, backend if isinstance(backend, str) else None)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._function = Functions(self.functions, f"on worker {self.name}")
        self.state = WorkerState(
            concurrency=concurrency,
            lease=lease,
            sweep_every=lease / 2 if sweep_every is None else sweep_every,
            poll_max=1.0 if poll_max is None else poll_max,
            prefetch=prefetch,
        )
        self._retry = Retry(self.state.retry_delay)
        self._unstarted()

    def _unstarted(self) -> None:
        """The bookkeeping, empty, and what :meth:`run` sets up: none of it yet."""
        #: the tasks of coroutine jobs, and of failures being reported, by job id
        self._coroutines: dict[str, asyncio.Task[None]] = {}
        self._reports: dict[str, asyncio.Task[None]] = {}
        self._sinks: dict[str, Sink] = {}
        #: results not yet stored: (job id, attempt, encoded result), sent by complete_many
        self._completed: list[tuple[str, int, bytes]] = []
        self.started = time.time()
        #: attempts whose outcome was stored since the start, and how many of them failed
        self.done = self.failed = 0
        self._store: Backend | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._threads: Slots | None = None
        self._listener: asyncio.Task[None] | None = None
        self._handoff: Handoff | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.name} queues={self.queues} {self.state.phase.value}>"

    # -- the loop ---------------------------------------------------------------------------

    def work(self, burst: bool = True) -> None:
        """Run the worker in this thread (``burst``: until no job is left)."""
        asyncio.run(self.run(burst=burst))

    async def run(self, burst: bool = False) -> None:
        """Run until drained (:meth:`drain`), or in ``burst`` mode until no job is left."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        backend = self._backend_arg
        self._store = backend if isinstance(backend, Backend) else open_backend(backend)
        try:
            await self._start(burst)
            while not await self._step(burst):
                await self._pause()
        finally:
            if self._listener is not None:
                self._listener.cancel()
            if self._handoff is not None:  # (stopped by an error: its jobs' leases run out)
                self._handoff.abandon()
                with contextlib.suppress(BackendError):
                    await self.store.withdraw(self.name)
            with contextlib.suppress(BackendError):  # one try each: a stop must not wait
                await self._store_completed()
            with contextlib.suppress(BackendError):
                await self.store.worker_gone(self.name)
            await self._stop_tasks()
            if not isinstance(backend, Backend):
                await self._store.close()

    async def _start(self, burst: bool) -> None:
        """Start the slots, the listener and the inbox; take this host's queues."""
        self._threads = start_slots(
            self.mode,
            self.state.concurrency,
            functions=self.functions,
            lookup=self._function,
            auth=self.auth,
            retry=self._retry,
            retry_max=self.state.retry_max,
            refuse=self._refused,
            wake=self._wake_threadsafe,
            admit=self.admit,
            keep=self.keeper.keep,
        )
        if not self._poll_given and not self.store.announces:
            self.state.poll_max = 0.05  # nobody says when jobs come: look often
        await warn_if_not_durable(self.store)
        with contextlib.suppress(BackendError):  # (else at the first sweep)
            await self._take_local_queues()
        self._listener = self._listen()
        inbox = None if burst else self.store.inbox(self.name)
        if inbox is not None:
            self._handoff = Handoff(inbox, self.name, slots=self._threads)
            self._handoff.start()

    async def _step(self, burst: bool) -> bool:
        """One turn: renew, store output, sweep, claim. True when the worker is done."""
        now = time.time()
        assert self._wake is not None
        self._wake.clear()  # before taking the outbox: a wake sent from now on is not lost
        self._collect(now)
        try:
            await self._renew(now)
            await self._flush_output()
            await self._store_completed()
            if self.state.beat_due(now):
                await self.store.worker_beat(self.info(), ttl=self.state.lease, now=now)
                self.state.beaten(now)
            if self.state.sweep_due(now):
                await self.store.sweep(now=now)
                await self._take_local_queues()
                self.state.swept(now)
            await self._claim(now)
            if self.state.should_stop(burst=burst):
                if await self._close_inbox():
                    return False  # jobs handed before the offer ended: run them first
                return not burst or not await self._jobs_waiting()
        except BackendError as exc:
            log.warning("worker %s: the backend failed, waiting: %s", self.name, exc)
            self.state.backend_failed(time.time())
        return False

    async def _pause(self) -> None:
        assert self._wake is not None
        now = time.time()
        until = self.state.next_wakeup(now)
        if self.state.held:
            until = min(until, now + OUTPUT_EVERY)
        # (the wake event was cleared at the start of the step: set since, it ends the pause)
        # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that comes as
        # the event is set (a second signal right after a job finished never stopped it)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(until - now, 0.0)):
                await self._wake.wait()

    def stats(self) -> dict[str, Any]:
        """Its figures as its beats give them (queues, slots, jobs running, finished, failed):
        ``undertow.serve_metrics(worker, port)``, ``undertow worker --metrics PORT``."""
        return {"workers": {self.name: msgspec.structs.asdict(self.info())}}

    def info(self) -> WorkerInfo:
        """What the worker says of itself on each heartbeat (``undertow status`` shows it)."""
        return WorkerInfo(
            name=self.name,
            queues=self.queues,
            concurrency=self.state.concurrency,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self.started,
            running=len(self.state.held),
            done=self.done,
            failed=self.failed,
        )

    async def _take_local_queues(self) -> None:
        """Take the jobs sent to this host and its groups first (groups may change)."""
        local = await local_queues(self.store, self.hosts) if self.hosts else []
        queues = list(dict.fromkeys([*local, *self.given]))
        if queues != self.queues:
            self.queues = queues
            if self._listener is not None:  # listen to the new set
                self._listener.cancel()
                self._listener = self._listen()

    def _listen(self) -> asyncio.Task[None]:
        """Claim as soon as the store announces jobs (``_inbox.listen``)."""
        return asyncio.create_task(listen(self.store, self.queues, self.state, self._poke))

    def drain(self) -> None:
        """Stop claiming; :meth:`run` returns once the jobs held are done. Thread-safe (a
        signal handler may call it)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.state.drain()
            return
        loop.call_soon_threadsafe(self._drain_now)

    def _drain_now(self) -> None:
        self.state.drain()
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            if loop is not None:
                loop.call_soon_threadsafe(self._poke)

    @property
    def store(self) -> Backend:
        if self._store is None:
            raise RuntimeError("the worker is not running: call run() or work() first")
        return self._store

    async def _jobs_waiting(self) -> bool:
        """Whether a job waits on its queues (one read of the counts, however many are kept)."""
        mine = set(self.queues)
        found = await self.store.queues()
        return any(q.states.get(JobState.QUEUED.value) for q in found if q.name in mine)

    async def _claim(self, now: float) -> None:
        count = self.state.free_slots(now)
        if not count:
            return
        offer = None if self._handoff is None else self._handoff.offer(self.state, now)
        records = await self.store.claim(
            self.queues, self.name, lease=self.state.lease, count=count, now=now, offer=offer
        )
        self.state.claimed([(r.id, r.attempts) for r in records], now)
        assert self._threads is not None
        if offer is not None:  # (a slot waits on the store only while slots are offered)
            self._threads.open_turn(offer.slots > len(records))
        for record in records:
            sink = self._sinks[record.id] = Sink()
            self._threads.put(Task(record, sink))

    def _adopt(self, now: float) -> None:
        """Hold the jobs the store handed, in their slots already (renewed at this turn)."""
        for record, sink in self._handoff.taken() if self._handoff is not None else ():
            self.state.handed(record.id, record.attempts, record.lease_until, now)
            self._sinks[record.id] = sink

    async def _close_inbox(self) -> bool:
        """Take no more jobs handed; whether some came meanwhile (run before the stop)."""
        if self._handoff is None:
            return False  # (a failure below: tried again at the next step)
        await self._handoff.close(self.store)
        self._adopt(time.time())
        self._handoff = None
        return bool(self.state.held)

    async def _renew(self, now: float) -> None:
        for held in self.state.renewals_due(now):
            try:
                ok = await self.store.renew(held.job_id, held.attempt, lease=self.state.lease)
            except BackendError as exc:
                log.warning("worker %s: cannot renew job %s: %s", self.name, held.job_id, exc)
                self.state.renew_failed(held.job_id, now)
                continue
            if not self.state.renewed(held.job_id, ok, now):
                task = self._coroutines.get(held.job_id)
                if task is not None:
                    task.cancel()  # a coroutine stops; a thread's result will be dropped
                elif self._threads is not None:
                    self._threads.halt(held.job_id)  # a job's process is killed

    async def _flush_output(self) -> None:
        for job_id, sink in list(self._sinks.items()):
            held = self.state.held.get(job_id)
            text = sink.take()
            if text and held is not None:
                await self.store.append_output(job_id, text, attempt=held.attempt)

    async def _stop_tasks(self) -> None:
        if self._threads is not None:
            self._threads.stop()
        tasks = [*self._coroutines.values(), *self._reports.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one job ----------------------------------------------------------------------------

    def _collect(self, now: float) -> None:
        """Take what the job threads finished: results wait for the next batch of completes,
        failures are reported each by a task of its own, coroutine functions start. (The
        jobs handed are held first: each was handed before its slot could finish it.)"""
        if self._threads is None:
            return
        finished = self._threads.take()
        self._adopt(now)
        for done in finished:
            task, outcome = done.task, done.outcome
            if isinstance(outcome, Opened):
                self._coroutines[task.record.id] = asyncio.create_task(self._await(task, outcome))
                continue
            self.state.ran(done.seconds)
            self._conclude(task, outcome)

    def _conclude(self, task: Task, outcome: Outcome) -> None:
        if not self._buffer(task.record, outcome):
            self._reports[task.record.id] = asyncio.create_task(self._report_alone(task, outcome))

    async def _await(self, task: Task, opened: Opened) -> None:
        """Run a coroutine function's job on the loop; its output goes to its own sink."""
        record = task.record
        started = time.perf_counter()
        outcome: Outcome
        try:
            with task.sink:
                if opened.pending is not None:
                    value = await opened.pending
                else:
                    value = await opened.fn(*opened.args, **opened.kwargs)
            if opened.call.keep:
                value = await asyncio.to_thread(kept, self.keeper.keep, opened.call, value, record)
            outcome = encode_result(record.id, record.function, record.codec, value, opened.key)
        except asyncio.CancelledError:
            if not self._refused(record.id):
                raise  # the worker stops: the lease runs out and another worker runs the job
            outcome = stopped(record.id)
        except Exception as exc:
            outcome = failure(record, opened.call, exc, self._retry, skip_frames=1)
        self._coroutines.pop(record.id, None)
        self.state.ran(time.perf_counter() - started)
        self._conclude(task, outcome)
        self._poke()

    async def _report_alone(self, task: Task, outcome: Outcome) -> None:
        """Store a failure (or a result that will be refused), its output first."""
        record, store, poll = task.record, self.store, (self.state.poll_min, self.state.poll_max)
        retry = functools.partial(persist, pause=poll[0], pause_max=poll[1], who=self.name)
        try:
            await retry(lambda: flush_output(store, record, task.sink))
            done, failed = await retry(
                lambda: report(store, record, outcome, self._refused(record.id))
            )
            self.done, self.failed = self.done + done, self.failed + failed
        finally:
            self._release(record.id, record.attempts)
            self._poke()

    def _buffer(self, record: JobRecord, outcome: Outcome) -> bool:
        """Keep a result for the next batch of completes; False if it is not one (a failure,
        or a job stopped meanwhile: reported on its own)."""
        held = self.state.held.get(record.id)
        if not isinstance(outcome, bytes) or held is None or held.stop:
            return False
        if held.attempt != record.attempts:  # a stale attempt's: refused on its own
            return False
        self._completed.append((record.id, record.attempts, outcome))
        return True

    def _release(self, job_id: str, attempt: int) -> None:
        """Free the slot of ``attempt`` (not that of a newer attempt of the same job, which
        this worker may hold since: its lease and sink stay)."""
        held = self.state.held.get(job_id)
        if held is not None and held.attempt != attempt:
            return
        self.state.finished(job_id)
        self._coroutines.pop(job_id, None)
        self._reports.pop(job_id, None)
        self._sinks.pop(job_id, None)

    async def _store_completed(self) -> None:
        """Store the results kept so far in one batch, then free their slots. A backend error
        keeps them for the next turn (their leases are renewed meanwhile)."""
        if not self._completed:
            return
        batch, self._completed = self._completed, []
        try:
            taken = await self.store.complete_many(batch)
        except BackendError:
            self._completed = batch + self._completed
            raise
        self.done += sum(taken)
        for job_id, attempt, _ in batch:  # a refused one (a stale attempt) is dropped
            self._release(job_id, attempt)

    def _refused(self, job_id: str) -> bool:
        """Whether the job must stop: its renewal was refused (called from job threads too)."""
        held = self.state.held.get(job_id)
        return held is not None and held.stop
