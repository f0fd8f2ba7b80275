"""Running claimed jobs: opening a payload, calling the function with its output routed, and
encoding how it ended; the threads that do it for plain functions.

A worker hands each claimed job to :class:`JobThreads`: one thread per slot, each taking the
next job from a shared inbox and running it to the end (payload checked and decoded, function
called, result encoded), then putting the outcome in an outbox that the worker's loop empties
in batches. A job thus costs two hand-overs through C queues and no task, future or callback
of its own on the loop, which is what lets a worker run thousands of short jobs a second.
Coroutine functions are the exception: the thread finds that the function is one and hands
the opened call back (:class:`Opened`), for the loop to await.

:class:`SlotThreads` is the inbox, the outbox and the threads between them; how a job runs
is its subclasses' part: :class:`JobThreads` here (in the worker's own threads), and the
child processes of ``_modes.py`` (a process per slot, or a forked process per job).
"""

from __future__ import annotations

import collections
import inspect
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from undertow.errors import (
    ConfigError,
    FunctionNotFound,
    JobCancelled,
    PermissionDenied,
    UndertowError,
    WireError,
)
from undertow.queue._capture import Sink
from undertow.queue._payload import PICKLE, Call, decode_call, encode_result, open_payload
from undertow.security import Authenticator, SigningKey
from undertow.storage import JobRecord
from undertow.wire import ErrorInfo, encode_error, error_info

__all__ = [
    "Admit",
    "Finished",
    "JobThreads",
    "Opened",
    "Outcome",
    "Refuse",
    "SlotThreads",
    "Slots",
    "Task",
    "matches",
]

#: how an attempt ended: the encoded result, or ``(encoded error, retry delay or None)``
Outcome = bytes | tuple[bytes, float | None]
#: whether a job should not run (its cancellation was requested, or its lease was lost)
Refuse = Callable[[str], bool]
#: whether a job may run: (function name, submitter's verified identity, args, kwargs)
Admit = Callable[[str, str | None, tuple[Any, ...], dict[str, Any]], bool]
#: the delay before a retry of the failed attempt, or None for no retry
RetryPolicy = Callable[[JobRecord, Call, BaseException], float | None]
#: leaves a job's result on a data server and returns a pointer to it (return_pointer)
Keep = Callable[[Any, JobRecord], Any]


@dataclass(slots=True)
class Task:
    """A claimed job and where its output goes."""

    record: JobRecord
    sink: Sink


@dataclass(slots=True)
class Opened:
    """A job whose function is a coroutine function: checked and decoded, to be awaited on
    the worker's loop."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: SigningKey | None
    call: Call
    #: what a plain function returned that is to be awaited (instead of calling ``fn``)
    pending: Any = None


@dataclass(slots=True)
class Finished:
    """What a thread puts in the outbox: the job, and its outcome (or the opened call of a
    coroutine function), with the seconds it ran."""

    task: Task
    outcome: Outcome | Opened
    seconds: float = field(default=0.0)


class Slots(Protocol):
    """What the worker's loop asks of its slots, whatever runs the jobs."""

    #: whether a slot waits on the store for a job handed (see SlotThreads.wait_on)
    waiting: bool

    def put(self, task: Task) -> None:
        """Queue ``task`` for the next free slot (thread-safe)."""

    def wait_on(self, take: Take | None, nudge: Callable[[], None] | None = None) -> None:
        """Let one idle slot at a time wait on ``take`` for jobs handed (None: stop)."""

    def open_turn(self, offering: bool) -> None:
        """Whether the worker offers slots now (after each claim)."""

    def take(self) -> list[Finished]:
        """Everything finished so far."""

    def halt(self, job_id: str) -> None:
        """Stop the running attempt of ``job_id`` if the slots can (its outcome then says it
        was stopped); else it runs on and its result is dropped."""

    def stop(self) -> None:
        """Stop for good: jobs not started stay unrun."""


class _Turn:
    """A slot's turn to wait for the jobs the store hands the worker (see
    :meth:`SlotThreads.wait_on`); one travels through the shared inbox."""


_TURN = _Turn()
#: seconds a slot waits on the store at a time, before it looks at the shared inbox again
TURN_WAIT = 0.25
#: waits on the store for a job handed (blocking, up to the seconds given)
Take = Callable[[float], "Task | None"]


class SlotThreads:
    """``count`` daemon threads between a shared inbox and an outbox; a subclass runs each job
    (``_run``) and starts the threads (``_start``) once it is set up.

    On a store that hands jobs to idle workers, one idle slot at a time waits on the store
    itself (:meth:`wait_on`) and runs the job it gets: no handoff between threads before a
    job starts (measured: 0.12-0.18 ms on an idle machine, where a thread that was asleep
    takes that long to run again).

    Args:
        count: threads, one job each at a time.
        refuse: whether a job, as it comes up, should not run any more.
        wake: called (from a slot thread) when the outbox gets a first entry since the worker
            last emptied it; it must be thread-safe and cheap.
    """

    def __init__(self, count: int, *, refuse: Refuse, wake: Callable[[], None]) -> None:
        self._refuse, self._wake = refuse, wake
        self._inbox: queue.SimpleQueue[Task | _Turn | None] = queue.SimpleQueue()
        self.outbox: collections.deque[Finished] = collections.deque()
        self._pending_wake = False
        self._take: Take | None = None
        self._nudge: Callable[[], None] | None = None
        #: whether a slot waits on the store now, and was nudged since it began
        self.waiting = self._nudged = False
        #: whether the worker offers slots, and whether the turn is out (guarded by the lock)
        self._open = self._turn_out = False
        self._turn_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._serve, args=(i,), name=f"undertow-job-{i}", daemon=True)
            for i in range(count)
        ]

    def _start(self) -> None:
        for thread in self._threads:
            thread.start()

    def put(self, task: Task) -> None:
        """Queue ``task`` for the next free thread (thread-safe); a slot waiting on the
        store is nudged (it may be the only idle one)."""
        self._inbox.put(task)
        if self.waiting and not self._nudged and self._nudge is not None:
            self._nudged = True  # (once a wait: the loop puts jobs in batches)
            self._nudge()

    def wait_on(self, take: Take | None, nudge: Callable[[], None] | None = None) -> None:
        """From now on, while the worker offers slots (:meth:`open_turn`), one idle slot at
        a time waits on ``take`` and runs the job it gets itself; a job put in the shared
        inbox goes first (``nudge`` ends a wait under way). None: no more waiting (a wait
        under way ends within :data:`TURN_WAIT`)."""
        self._take, self._nudge = take, nudge
        if take is None:
            self.open_turn(False)

    def open_turn(self, offering: bool) -> None:
        """Whether the worker offers slots now (the loop says so after each claim): while
        it does not, no slot waits on the store (the turn waits for the next offer)."""
        with self._turn_lock:
            self._open = offering and self._take is not None
            if self._open and not self._turn_out:
                self._turn_out = True
                self._inbox.put(_TURN)

    def take(self) -> list[Finished]:
        """Everything finished so far (the worker's loop calls this after a wake)."""
        self._pending_wake = False
        done: list[Finished] = []
        while self.outbox:
            done.append(self.outbox.popleft())
        return done

    def halt(self, job_id: str) -> None:
        """A thread cannot be stopped: the job runs on, and the worker drops its result."""

    def stop(self) -> None:
        """Let each thread end after its current job; jobs not started stay unrun."""
        while True:  # what no thread took is dropped: its lease runs out, another worker runs it
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._inbox.put(None)

    def _serve(self, slot: int) -> None:
        while (task := self._inbox.get()) is not None:
            if isinstance(task, _Turn):
                turn = self._wait_turn()
                if turn is None:
                    continue
                task = turn
            started = time.perf_counter()
            outcome = self._run(task, slot)
            self.outbox.append(Finished(task, outcome, time.perf_counter() - started))
            if not self._pending_wake:
                self._pending_wake = True
                self._wake()

    def _wait_turn(self) -> Task | None:
        """This slot's turn on the store: the job handed (the turn passes to another idle
        slot), or None: a job waits in the shared inbox (the turn goes behind it), or the
        waiting ended (the turn is dropped)."""
        while (take := self._take) is not None and self._open:
            if not self._inbox.empty():
                self._inbox.put(_TURN)
                return None
            self.waiting, self._nudged = True, False
            try:
                task = take(TURN_WAIT)
            finally:
                self.waiting = False
            if task is not None:
                self._inbox.put(_TURN)
                return task
        with self._turn_lock:  # no offer: the turn waits for the next
            if self._open:
                self._inbox.put(_TURN)
            else:
                self._turn_out = False
        return None

    def _run(self, task: Task, slot: int) -> Outcome | Opened:
        raise NotImplementedError


class JobThreads(SlotThreads):
    """The worker's slots for plain functions, run in its own threads (a job that never
    returns does not hold the process up once the worker has stopped).

    Args:
        count: threads, one job each at a time.
        lookup: finds a registered function by name (raises FunctionNotFound).
        auth: checks the signatures of pickled jobs.
        retry: the retry delay of a failure.
        refuse: whether a job, as it comes up, should not run any more.
        wake: called (from a job thread) when the outbox gets a first entry since the worker
            last emptied it; it must be thread-safe and cheap.
        admit: asked before a job runs, with its function's name, its submitter's verified
            identity (None: unsigned, or signed by a key ``auth`` does not know) and its
            arguments; False refuses it (PermissionDenied).
    """

    def __init__(
        self,
        count: int,
        *,
        lookup: Callable[[str], Callable[..., Any]],
        auth: Authenticator | None,
        retry: RetryPolicy,
        refuse: Refuse,
        wake: Callable[[], None],
        admit: Admit | None = None,
        keep: Keep | None = None,
    ) -> None:
        super().__init__(count, refuse=refuse, wake=wake)
        self._lookup, self._auth, self._retry = lookup, auth, retry
        self._admit, self._keep = admit, keep
        self._start()

    def _run(self, task: Task, slot: int) -> Outcome | Opened:
        record = task.record
        if self._refuse(record.id):
            return stopped(record.id)
        opened = open_job(record, self._auth, self._lookup, self._admit)
        if not isinstance(opened, Opened):
            return opened
        if inspect.iscoroutinefunction(opened.fn):
            return opened
        try:
            with task.sink:
                value = opened.fn(*opened.args, **opened.kwargs)
            if inspect.isawaitable(value):  # e.g. a partial of a coroutine function
                opened.pending = value
                return opened
            value = kept(self._keep, opened.call, value, record)
            return encode_result(record.id, record.function, record.codec, value, opened.key)
        except Exception as exc:
            return failure(record, opened.call, exc, self._retry, skip_frames=1)


class Functions:
    """The functions a worker runs by name, as a lookup that says what it has (``where``:
    who looks, for the message). It reads ``functions`` as it is at each lookup."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]], where: str) -> None:
        self._functions, self._where = functions, where

    def __call__(self, name: str) -> Callable[..., Any]:
        fn = self._functions.get(name)
        if fn is None:
            available = tuple(sorted(self._functions))
            raise FunctionNotFound(
                f"no function {name!r} {self._where}; it registers {list(available)}",
                name=name,
                available=available,
            )
        return fn


class Retry:
    """A worker's retry rule: the exception must match the job's ``retry_on``; the delay
    doubles from its backoff, at most ``retry_max`` (``delay(attempt, backoff)``)."""

    def __init__(self, delay: Callable[[int, float], float]) -> None:
        self._delay = delay

    def __call__(self, record: JobRecord, call: Call, exc: BaseException) -> float | None:
        if not call.retry or not matches(exc, call.retry_on):
            return None
        return self._delay(record.attempts, call.backoff)


def kept(keep: Keep | None, call: Call, value: Any, record: JobRecord) -> Any:
    """``value``, or (the job asked for ``return_pointer``) a pointer to it left on the
    worker's data server."""
    if not call.keep:
        return value
    if keep is None:
        raise ConfigError(
            f"job {record.id} asked for return_pointer, and these slots keep no results: "
            "run it on an undertow.queue.Worker (any mode), which keeps them"
        )
    return keep(value, record)


def open_job(
    record: JobRecord,
    auth: Authenticator | None,
    lookup: Callable[[str], Callable[..., Any]],
    admit: Admit | None = None,
) -> Opened | Outcome:
    """The job's checked and decoded call, or the outcome of a job that must not run
    (refused signature, unreadable payload, unknown function, not admitted). ``admit`` is
    asked before anything is unpickled: for a pickled job, with no arguments."""
    try:
        call, key = open_payload(record.id, record.function, record.codec, record.payload, auth)
        identity = None if key is None else key.identity
        if record.codec == PICKLE:
            _admit(admit, record, identity, (), {})
        fn, args, kwargs = decode_call(record.function, record.codec, call, lookup)
        if record.codec != PICKLE:
            _admit(admit, record, identity, args, kwargs)
    except UndertowError as exc:
        return encode_error(refusal(exc)), None
    return Opened(fn, args, kwargs, key, call)


def _admit(
    admit: Admit | None,
    record: JobRecord,
    identity: str | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    if admit is not None and not admit(record.function, identity, args, kwargs):
        raise PermissionDenied(
            f"job {record.id}: {identity or 'an anonymous submitter'} may not run "
            f"{record.function} here"
        )


def failure(
    record: JobRecord, call: Call, exc: BaseException, retry: RetryPolicy, *, skip_frames: int
) -> Outcome:
    """The outcome of a call that raised ``exc``."""
    if isinstance(exc, WireError):  # the result could not be encoded: no retry helps
        return encode_error(error_info(exc, code=_code(exc))), None
    return encode_error(error_info(exc, skip_frames=skip_frames)), retry(record, call, exc)


def stopped(job_id: str) -> tuple[bytes, None]:
    """The outcome of an attempt stopped by cancellation or a lost lease."""
    info = error_info(JobCancelled(f"job {job_id} was stopped", job_id=job_id))
    return encode_error(info), None


def matches(exc: BaseException, names: list[str] | None) -> bool:
    """Whether ``exc`` is of one of the types named (by qualified name, along its class
    hierarchy, so that no type is imported); None names every type."""
    if names is None:
        return True
    return any(f"{t.__module__}.{t.__qualname__}" in names for t in type(exc).__mro__)


def refusal(exc: UndertowError) -> ErrorInfo:
    """How a job that was not run is reported (the submitter gets the same error class)."""
    if isinstance(exc, FunctionNotFound):
        return ErrorInfo(
            type=exc.name or "", message=str(exc), code="not_found", available=list(exc.available)
        )
    return error_info(exc, code=_code(exc))


def _code(exc: BaseException) -> str:
    if isinstance(exc, PermissionDenied):
        return "denied"
    if isinstance(exc, PermissionError):
        return "auth"
    if isinstance(exc, WireError):
        return "serialization"
    return "remote"
