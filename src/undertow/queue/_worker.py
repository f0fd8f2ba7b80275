"""A worker: claims jobs from its queues, runs them, and reports how each ended.

The decisions are :class:`WorkerState`'s; this shell does the I/O. Each claimed job runs in a
task of its own: a sync function in a thread, a coroutine function on the loop. While jobs
run, the loop renews their leases (a refused renewal stops the job: it was cancelled, or its
lease was lost), stores what they print, and sweeps expired leases now and then. A failure
of the backend is logged and waited out, never a reason to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from undertow.errors import BackendError, FunctionNotFound, JobCancelled, UndertowError, WireError
from undertow.queue._capture import Sink
from undertow.queue._handle import warn_if_not_durable
from undertow.queue._payload import Call, decode_call, encode_result, open_payload
from undertow.queue._worker_state import WorkerState
from undertow.security import Authenticator
from undertow.storage import Backend, JobRecord, JobState, check_queue_name, open_backend
from undertow.wire import ErrorInfo, encode_error, error_info

__all__ = ["Worker"]

log = logging.getLogger(__name__)
T = TypeVar("T")

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
        poll_max: the longest pause between two claims when the queues are empty.
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
        poll_max: float = 1.0,
    ) -> None:
        self._backend_arg = backend
        self.queues = [
            check_queue_name(q) for q in ([queues] if isinstance(queues, str) else queues)
        ]
        self.functions = dict(functions or {})
        self.auth = auth
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.state = WorkerState(
            concurrency=concurrency,
            lease=lease,
            sweep_every=lease / 2 if sweep_every is None else sweep_every,
            poll_max=poll_max,
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sinks: dict[str, Sink] = {}
        #: results not yet stored: (job id, attempt, encoded result), sent by complete_many
        self._completed: list[tuple[str, int, bytes]] = []
        self._store: Backend | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._threads = ThreadPoolExecutor(1)  # replaced by run(), with a thread per slot

    def __repr__(self) -> str:
        return f"<Worker {self.name} queues={self.queues} {self.state.phase.value}>"

    # -- the loop ---------------------------------------------------------------------------

    def work(self, burst: bool = True) -> None:
        """Run the worker in this thread (``burst``: until no job is left)."""
        asyncio.run(self.run(burst=burst))

    async def run(self, burst: bool = False) -> None:
        """Run until drained (:meth:`drain`), or in ``burst`` mode until no job is left."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._threads = ThreadPoolExecutor(self.state.concurrency, "undertow-job")
        backend = self._backend_arg
        self._store = backend if isinstance(backend, Backend) else open_backend(backend)
        await warn_if_not_durable(self._store)
        try:
            while not await self._step(burst):
                await self._pause()
        finally:
            with contextlib.suppress(BackendError):  # one try: a stop must not wait on it
                await self._store_completed()
            await self._stop_tasks()
            self._threads.shutdown(wait=False)
            if not isinstance(backend, Backend):
                await self._store.close()

    async def _step(self, burst: bool) -> bool:
        """One turn: renew, store output, sweep, claim. True when the worker is done."""
        now = time.time()
        try:
            await self._renew(now)
            await self._flush_output()
            await self._store_completed()
            if self.state.sweep_due(now):
                await self.store.sweep(now=now)
                self.state.swept(now)
            await self._claim(now)
            if self.state.should_stop(burst=burst):
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
        self._wake.clear()
        # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that comes as
        # the event is set (a second signal right after a job finished never stopped it)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(until - now, 0.0)):
                await self._wake.wait()

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

    @property
    def store(self) -> Backend:
        if self._store is None:
            raise RuntimeError("the worker is not running: call run() or work() first")
        return self._store

    async def _jobs_waiting(self) -> bool:
        for queue in self.queues:
            if await self.store.jobs(state=JobState.QUEUED, queue=queue, limit=1):
                return True
        return False

    async def _claim(self, now: float) -> None:
        count = self.state.free_slots(now)
        if not count:
            return
        records = await self.store.claim(
            self.queues, self.name, lease=self.state.lease, count=count, now=now
        )
        self.state.claimed([(r.id, r.attempts) for r in records], now)
        for record in records:
            self._sinks[record.id] = Sink()
            self._tasks[record.id] = asyncio.create_task(self._run_job(record))

    async def _renew(self, now: float) -> None:
        for held in self.state.renewals_due(now):
            try:
                ok = await self.store.renew(held.job_id, held.attempt, lease=self.state.lease)
            except BackendError as exc:
                log.warning("worker %s: cannot renew job %s: %s", self.name, held.job_id, exc)
                self.state.renew_failed(held.job_id, now)
                continue
            if not self.state.renewed(held.job_id, ok, now):
                task = self._tasks.get(held.job_id)
                if task is not None:
                    task.cancel()  # a coroutine stops; a thread's result will be dropped

    async def _flush_output(self) -> None:
        for job_id, sink in list(self._sinks.items()):
            held = self.state.held.get(job_id)
            text = sink.take()
            if text and held is not None:
                await self.store.append_output(job_id, text, attempt=held.attempt)

    async def _stop_tasks(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one job ----------------------------------------------------------------------------

    async def _run_job(self, record: JobRecord) -> None:
        sink = self._sinks[record.id]
        buffered = False
        try:
            outcome = await self._attempt(record, sink)
            await self._persist(lambda: self._flush_one(record, sink))
            buffered = self._buffer(record, outcome)
            if not buffered:
                await self._persist(lambda: self._report(record, outcome))
        finally:
            if not buffered:  # a buffered result keeps its slot (and lease) until stored
                self._release(record.id)
            self._poke()

    def _buffer(self, record: JobRecord, outcome: tuple[bytes, float | None] | bytes) -> bool:
        """Keep a result for the next batch of completes; False if it is not one (a failure,
        or a job stopped meanwhile: reported on its own)."""
        held = self.state.held.get(record.id)
        if not isinstance(outcome, bytes) or held is None or held.stop:
            return False
        self._completed.append((record.id, record.attempts, outcome))
        return True

    def _release(self, job_id: str) -> None:
        self.state.finished(job_id)
        self._tasks.pop(job_id, None)
        self._sinks.pop(job_id, None)

    async def _store_completed(self) -> None:
        """Store the results kept so far in one batch, then free their slots. A backend error
        keeps them for the next turn (their leases are renewed meanwhile)."""
        if not self._completed:
            return
        batch, self._completed = self._completed, []
        try:
            await self.store.complete_many(batch)
        except BackendError:
            self._completed = batch + self._completed
            raise
        for job_id, _, _ in batch:  # a refused one (a stale attempt) is dropped, as complete's
            self._release(job_id)

    async def _attempt(self, record: JobRecord, sink: Sink) -> tuple[bytes, float | None] | bytes:
        """The encoded result (bytes), or ``(encoded error, retry delay or None)``."""
        try:
            call, key = open_payload(
                record.id, record.function, record.codec, record.payload, self.auth
            )
            fn, args, kwargs = decode_call(record.function, record.codec, call, self._function)
        except UndertowError as exc:  # refused (signature) or unreadable: never run
            return encode_error(_refusal(exc)), None
        try:
            with sink:
                value = await self._invoke(fn, args, kwargs)
            return encode_result(record.id, record.function, record.codec, value, key)
        except asyncio.CancelledError:
            held = self.state.held.get(record.id)
            if held is None or not held.stop:
                raise  # the worker stops: the lease runs out and another worker runs the job
            info = error_info(JobCancelled(f"job {record.id} was stopped", job_id=record.id))
            return encode_error(info), None
        except WireError as exc:
            return encode_error(error_info(exc, code=_code(exc))), None
        except Exception as exc:
            return encode_error(error_info(exc, skip_frames=1)), self._retry(record, call, exc)

    async def _invoke(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Call ``fn``: a coroutine function on the loop, anything else in one of the
        worker's threads (which carries the context, and so the output sink, along)."""
        if inspect.iscoroutinefunction(fn):
            return await fn(*args, **kwargs)
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        value = await asyncio.get_running_loop().run_in_executor(self._threads, call)
        if inspect.isawaitable(value):
            return await value
        return value

    def _function(self, name: str) -> Callable[..., Any]:
        fn = self.functions.get(name)
        if fn is None:
            raise FunctionNotFound(
                f"no function {name!r} on worker {self.name}; it registers "
                f"{sorted(self.functions)}",
                name=name,
                available=tuple(sorted(self.functions)),
            )
        return fn

    def _retry(self, record: JobRecord, call: Call, exc: BaseException) -> float | None:
        if not call.retry or not _matches(exc, call.retry_on):
            return None
        return self.state.retry_delay(record.attempts, call.backoff)

    async def _report(self, record: JobRecord, outcome: tuple[bytes, float | None] | bytes) -> None:
        held = self.state.held.get(record.id)
        stopped = held is not None and held.stop
        if isinstance(outcome, bytes) and not stopped:
            await self.store.complete(record.id, record.attempts, outcome)
            return
        if isinstance(outcome, bytes):  # stopped meanwhile: the result is dropped
            stop = JobCancelled(f"job {record.id} was stopped", job_id=record.id)
            outcome = encode_error(error_info(stop)), None
        error, delay = outcome
        await self.store.fail(record.id, record.attempts, error, retry_delay=delay)

    async def _flush_one(self, record: JobRecord, sink: Sink) -> None:
        text = sink.take()
        if text:  # fenced: what a stale attempt printed is dropped with its result
            await self.store.append_output(record.id, text, attempt=record.attempts)

    async def _persist(self, op: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``op`` until the backend takes it (an outage is waited out)."""
        pause = self.state.poll_min
        while True:
            try:
                return await op()
            except BackendError as exc:
                log.warning("worker %s: the backend failed, retrying: %s", self.name, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.state.poll_max)


def _refusal(exc: UndertowError) -> ErrorInfo:
    """How a job that was not run is reported (the submitter gets the same error class)."""
    if isinstance(exc, FunctionNotFound):
        return ErrorInfo(
            type=exc.name or "", message=str(exc), code="not_found", available=list(exc.available)
        )
    return error_info(exc, code=_code(exc))


def _code(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "auth"
    if isinstance(exc, WireError):
        return "serialization"
    return "remote"


def _matches(exc: BaseException, names: list[str] | None) -> bool:
    if names is None:
        return True
    return any(f"{t.__module__}.{t.__qualname__}" in names for t in type(exc).__mro__)
