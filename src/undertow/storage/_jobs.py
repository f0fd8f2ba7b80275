"""What the job queue stores, and the interface every backend implements for it.

The queue layer (``undertow.queue``, to come) submits jobs, runs workers and hands results
back; this module says what is kept and which operations are atomic, so that the SQLite and
Redis backends behave the same and one contract test suite (tests/test_job_store.py) runs on
both.

A job's life::

    enqueue ──> QUEUED ──claim──> RUNNING ──complete──> DONE
                  ^                 │ │ └──fail (final)──> FAILED
                  │   retry (delay) │ └──fail, attempts left, or lease expired──┐
                  └─────────────────┘                                        │
                  QUEUED (not before retry_at) <─────────────────────────────┘
    RUNNING, no attempts left (fail with retry, or lease expired) ──> DEAD (dead letter)
    QUEUED ──cancel──> CANCELLED;  RUNNING ──cancel──> cancel_requested, then the worker's
    fail/complete ends it (renew answers False so that the worker stops)
    FAILED, DEAD, CANCELLED ──retry (by hand)──> QUEUED, with at least one attempt left

Every claim is an *attempt*, numbered from 1; the attempt number is the **fence**: renew,
complete and fail name it, and are refused (False / None) unless the job is RUNNING under that
same attempt, so that a worker that lost its lease (paused, cut off) cannot overwrite the result
of the attempt that replaced it. A job may be pushed onto several queues (the queues of the
hosts that hold its data); the first claim wins and the other entries are dropped when they
come up. Times are Unix seconds given by the caller (``now``), so that tests move time
explicitly and every backend follows the same clock rule: the workers' clocks, which must
agree within a fraction of the lease.

Beside the jobs, the store keeps what a shell shows of the queue: each queue's entries and
its jobs by state (:meth:`JobStore.queues`), and the workers that beat within their TTL
(:meth:`JobStore.workers`, a :class:`WorkerInfo` each).
"""

from __future__ import annotations

import abc
import enum
import os
import re
import time
from collections.abc import AsyncIterator, Sequence

import msgspec

from undertow._util import check_queue_name

__all__ = [
    "FINAL_STATES",
    "Inbox",
    "JobRecord",
    "JobState",
    "JobStore",
    "Offer",
    "QueueInfo",
    "Submitter",
    "WorkerInfo",
    "check_job_id",
    "check_queue_name",
    "check_worker_name",
    "new_job_id",
]

_JOB_ID = re.compile(r"[0-9a-f]{32}")
_WORKER = re.compile(r"\S{1,200}")


class JobState(enum.StrEnum):
    """Where a job is in its life (see the module's drawing)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


#: states a job never leaves
FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.DEAD, JobState.CANCELLED})


class JobRecord(msgspec.Struct, kw_only=True):
    """One job as the store keeps it. The payload, result and error are bytes encoded by the
    queue layer (the store never decodes them)."""

    #: 128 random bits as 32 lowercase hex digits (a UUID4's too)
    id: str
    #: the queues it was pushed onto, in order
    queues: list[str]
    #: what to run: a registered function's name, or a description the queue layer reads
    function: str
    #: the encoded arguments (and, for a notebook function, the function itself)
    payload: bytes = b""
    #: the codec ``payload`` and ``result`` are encoded with
    codec: str = "msgpack"
    state: JobState = JobState.QUEUED
    #: attempts so far; the running attempt's number is its fence
    attempts: int = 0
    max_attempts: int = 1
    #: who submitted it (an identity, or "" for anonymous)
    submitter: str = ""
    #: with a key, a second enqueue of the same key returns the first job
    idempotency_key: str | None = None
    submitted: float = 0.0
    #: a queued job is not claimed before this time (a retry's backoff)
    not_before: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    #: the worker of the running attempt, and until when its lease holds
    worker: str = ""
    lease_until: float = 0.0
    cancel_requested: bool = False
    result: bytes | None = None
    #: the last error (encoded), and why the job ended where it did (for a dead job: the
    #: dead-letter reason)
    error: bytes | None = None
    reason: str = ""
    #: seconds a final job's record is kept after it finished
    result_ttl: float = 86400.0
    #: where the queue layer sent it and why (JSON text it writes and reads; "" for none)
    route: str = ""
    #: the first this many of ``queues`` have the job to themselves until ``local_until``
    #: (the queues of the hosts that hold its data): it joins the others then, if it is
    #: still queued. 0: it is on all its queues from the start
    local_queues: int = 0
    local_until: float = 0.0


class QueueInfo(msgspec.Struct, kw_only=True):
    """One queue as :meth:`JobStore.queues` sees it."""

    name: str
    #: entries the queue holds now (:meth:`JobStore.queue_length`): jobs waiting to be
    #: claimed, and entries of jobs taken elsewhere until they come up; on Redis a retry
    #: waiting out its delay is not among them
    length: int = 0
    #: the stored jobs that name the queue, by state (a state with none left out)
    states: dict[str, int] = {}

    @property
    def jobs(self) -> int:
        """How many stored jobs name the queue, whatever their state."""
        return sum(self.states.values())


class WorkerInfo(msgspec.Struct, kw_only=True):
    """A worker as it says it is, on each beat (:meth:`JobStore.worker_beat`)."""

    #: unique among live workers (``host:pid:random``)
    name: str
    queues: list[str] = []
    concurrency: int = 1
    host: str = ""
    pid: int = 0
    #: when the worker started (Unix seconds)
    started: float = 0.0
    #: jobs it holds now
    running: int = 0
    #: jobs it finished since it started, and how many of those failed
    done: int = 0
    failed: int = 0
    #: set by the store from the beat: when it came, and how long it holds
    beat: float = 0.0
    ttl: float = 0.0


class Offer(msgspec.Struct, frozen=True):
    """What a worker offers with a claim, on a store that hands jobs to idle workers: its
    ``slots`` free after the claim take the jobs enqueued on its queues from then until
    ``until`` (or its next claim), each started for it at once with a lease of ``lease``
    seconds and put in its :class:`Inbox`."""

    slots: int
    until: float
    lease: float


class Inbox(abc.ABC):
    """The jobs a store hands one worker, read from a thread of the worker's own (blocking:
    no event loop between the store and the job's slot)."""

    @abc.abstractmethod
    def take(self, wait: float) -> list[JobRecord]:
        """The jobs handed since the last take (RUNNING for this worker, under their first
        attempt), waiting up to ``wait`` seconds for one (0: not at all). BackendError if the
        store cannot be reached."""

    @abc.abstractmethod
    def nudge(self) -> None:
        """End a take that waits now (it returns nothing); thread-safe."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connections."""


class Submitter(abc.ABC):
    """Enqueues from the calling thread, blocking (sync code needs no event loop for it)."""

    @abc.abstractmethod
    def enqueue(self, job: JobRecord, *, now: float | None = None) -> JobRecord:
        """What :meth:`JobStore.enqueue` does; BackendError (BrokerUnavailable when the
        store cannot be reached) on failure."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connections."""


def new_job_id() -> str:
    """A new job id: 128 random bits as 32 lowercase hex digits (one system call; it is on
    every submit's path)."""
    return os.urandom(16).hex()


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is a well-formed id, else a ValueError naming it."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):  # type: ignore[redundant-expr]
        raise ValueError(f"job id {job_id!r} is not 32 lowercase hex digits")
    return job_id


def check_worker_name(name: str) -> str:
    """``name`` if it can name a worker (1-200 characters, no white space), else ValueError."""
    if not isinstance(name, str) or not _WORKER.fullmatch(name):  # type: ignore[redundant-expr]
        raise ValueError(f"worker name {name!r} must be 1-200 characters without white space")
    return name


class JobStore(abc.ABC):
    """The queue's storage operations. Each is atomic on its own: two workers racing for a
    job, a worker completing while the sweeper expires its lease, a cancel during a claim,
    always leave one consistent outcome. Coroutines; ``now`` defaults to ``time.time()``."""

    #: whether :meth:`notifications` tells idle workers of new jobs (else they poll)
    announces = False

    def inbox(self, worker: str) -> Inbox | None:
        """The jobs this store hands ``worker`` when it offers slots with its claims (see
        :class:`Offer`), or None: this store hands none (workers claim every job)."""
        return None

    async def withdraw(self, worker: str) -> None:
        """``worker`` takes no more jobs handed to it (it stops): its offer ends. What its
        inbox holds already is still its to take."""
        return None  # (a store without an inbox keeps no offers)

    @abc.abstractmethod
    async def enqueue(self, job: JobRecord, *, now: float | None = None) -> JobRecord:
        """Store a new QUEUED job (``submitted`` set to ``now``; the fields of a run reset)
        and push its id onto each of ``job.queues``; the stored record. With an
        ``idempotency_key`` that a stored job has (not yet purged), nothing is stored and that
        job's record is returned instead. A ValueError names a bad id or queue name, an empty
        list of queues, or an id that exists already."""

    async def enqueue_many(
        self, jobs: Sequence[JobRecord], *, now: float | None = None
    ) -> list[JobRecord]:
        """:meth:`enqueue` of each job in turn, all at the same ``now``; the stored records in
        order (for a job whose idempotency key a stored job, or an earlier job of the batch,
        has: that job's record). Each job's step is atomic as :meth:`enqueue` is, the batch
        not necessarily: every id and queue name is checked first (a ValueError naming the
        first bad one, and nothing stored), but at an id that exists already the batch stops
        with a ValueError naming it, and the jobs before it may be stored. This default runs
        the single operations; a backend may do the batch in one round trip."""
        for job in jobs:
            check_job_id(job.id)
            if not job.queues:
                raise ValueError(f"job {job.id} names no queue; give it one, e.g. ['default']")
            for name in job.queues:
                check_queue_name(name)
        at = time.time() if now is None else float(now)
        return [await self.enqueue(job, now=at) for job in jobs]

    @abc.abstractmethod
    async def claim(
        self,
        queues: Sequence[str],
        worker: str,
        *,
        lease: float,
        count: int = 1,
        now: float | None = None,
        offer: Offer | None = None,
    ) -> list[JobRecord]:
        """Take up to ``count`` QUEUED jobs whose ``not_before`` has passed, from ``queues``
        in the order given (each queue first in, first out), without waiting: each becomes
        RUNNING under a new attempt (``attempts`` + 1) held by ``worker`` until ``now +
        lease``. Entries of jobs that are no longer QUEUED (taken through another queue,
        cancelled, purged) are dropped as they come up; a QUEUED job whose ``not_before`` is
        in the future is passed over (a backend may keep it aside until it is due, out of
        :meth:`queue_length`). ``offer``: on a store with an :meth:`inbox`, the slots left
        free (``offer.slots`` less the jobs taken) wait for new jobs on ``queues`` (each
        claim replaces the worker's offer; None withdraws it); other stores ignore it."""

    @abc.abstractmethod
    async def renew(
        self, job_id: str, attempt: int, *, lease: float, now: float | None = None
    ) -> bool:
        """Extend the lease of the RUNNING ``attempt`` to ``now + lease``. False if the job is
        not RUNNING under that attempt any more, or if its cancellation was requested (the
        worker then stops and fails the attempt)."""

    @abc.abstractmethod
    async def complete(
        self, job_id: str, attempt: int, result: bytes, *, now: float | None = None
    ) -> bool:
        """The RUNNING ``attempt`` succeeded: DONE with ``result``. False (and nothing
        changes) if the job is not RUNNING under that attempt: a stale attempt's result is
        rejected."""

    async def complete_many(
        self, results: Sequence[tuple[str, int, bytes]], *, now: float | None = None
    ) -> list[bool]:
        """:meth:`complete` of each ``(job id, attempt, result)`` in turn, all at the same
        ``now``; for each, whether it was taken (False for a stale attempt, which changes
        nothing, while the others of the batch go through). Each job's step is atomic as
        :meth:`complete` is, the batch not necessarily. Every id is checked first (a
        ValueError naming the first bad one, and nothing changed). This default runs the
        single operations; a backend may do the batch in one round trip."""
        for job_id, _, _ in results:
            check_job_id(job_id)
        at = time.time() if now is None else float(now)
        return [await self.complete(j, attempt, result, now=at) for j, attempt, result in results]

    @abc.abstractmethod
    async def fail(
        self,
        job_id: str,
        attempt: int,
        error: bytes,
        *,
        retry_delay: float | None = None,
        now: float | None = None,
    ) -> JobState | None:
        """The RUNNING ``attempt`` failed with ``error``. If its cancellation was requested:
        CANCELLED, whatever else. With a ``retry_delay`` and attempts left (``attempts <
        max_attempts``): QUEUED again, not before ``now + retry_delay``, back on its queues;
        with a ``retry_delay`` and no attempts left: DEAD (``reason`` says so). Without one:
        FAILED. The new state; None (nothing changes) for a stale attempt."""

    @abc.abstractmethod
    async def sweep(self, *, now: float | None = None) -> int:
        """Housekeeping any worker may run at any time, idempotent: every RUNNING job whose
        lease ended before ``now`` is CANCELLED if its cancellation was requested, else QUEUED
        again (on its queues, at once) if attempts are left, else DEAD ("lease expired");
        final jobs older than their ``result_ttl`` are purged (record, output, idempotency
        key). The number of jobs changed."""

    @abc.abstractmethod
    async def cancel(self, job_id: str, *, now: float | None = None) -> JobState | None:
        """Cancel: a QUEUED job becomes CANCELLED at once; a RUNNING one gets
        ``cancel_requested`` (its worker learns it on its next renew); a final job is left as
        it is. The state after; None for an unknown job."""

    @abc.abstractmethod
    async def retry(self, job_id: str, *, now: float | None = None) -> JobState | None:
        """Run a FAILED, DEAD or CANCELLED job again (by hand): QUEUED at once, back on its
        queues, its result, error, worker and times of the last run cleared, ``reason``
        saying it was retried. ``attempts`` is kept, so the fences of its old attempts stay
        stale; ``max_attempts`` becomes ``attempts + 1`` if its attempts were spent (one
        more), else it keeps the ones it had left. Its output so far is kept. A QUEUED,
        RUNNING or DONE job is left as it is. The state after; None for an unknown job."""

    @abc.abstractmethod
    async def queues(self) -> list[QueueInfo]:
        """Every queue that a stored job names, by name: its length and its jobs by state
        (a job on several queues counts on each). A queue goes from the list when its last
        job is purged. Redis keeps the counts as jobs move; SQLite counts its jobs table,
        which takes a moment past a few hundred thousand jobs."""

    @abc.abstractmethod
    async def worker_beat(self, info: WorkerInfo, *, ttl: float, now: float | None = None) -> None:
        """Record or refresh the worker ``info.name`` as ``info`` says (``beat`` set to
        ``now`` and ``ttl`` to ``ttl``): it is live until ``now + ttl``, and a later beat
        extends that. A ValueError names a bad name or a ``ttl`` that is not positive."""

    @abc.abstractmethod
    async def workers(self, *, now: float | None = None) -> list[WorkerInfo]:
        """The live workers (whose last beat is at most its ``ttl`` before ``now``), by
        name; the others are forgotten."""

    @abc.abstractmethod
    async def worker_gone(self, name: str) -> bool:
        """Forget the worker ``name`` at once (a clean stop); whether it was recorded."""

    @abc.abstractmethod
    async def job(self, job_id: str) -> JobRecord | None:
        """The job's record, or None if there is none (never was, or purged)."""

    async def jobs_by_id(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """The records of ``job_ids``, in order (None where there is none); every id is
        checked first. This default reads them one by one; a backend may read them all in
        one round trip."""
        for job_id in job_ids:
            check_job_id(job_id)
        return [await self.job(job_id) for job_id in job_ids]

    @abc.abstractmethod
    async def jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        submitter: str | None = None,
        limit: int = 1000,
        after: str | None = None,
        newest_first: bool = False,
    ) -> list[JobRecord]:
        """Jobs with that state, on that queue, of that submitter (each if given), oldest
        submitted first (newest first with ``newest_first``), at most ``limit``.

        Paging: ``after`` is the id of the last job of the page before (same filters, same
        order); the page continues right after it, so that a long list is read a page at a
        time in the query itself, never all at once. A LookupError names an ``after`` job
        that is not stored (purged meanwhile: start again from the first page)."""

    @abc.abstractmethod
    async def queue_length(self, queue: str) -> int:
        """How many entries ``queue`` holds (entries of jobs taken elsewhere included until
        they come up)."""

    async def notifications(self, queues: Sequence[str]) -> AsyncIterator[str]:
        """Yield the name of one of ``queues`` each time jobs may have arrived on it, so that
        idle workers claim at once instead of polling; a store that cannot tell returns
        without yielding anything (its workers poll). A message may come with nothing to
        claim (another worker was first), never too late: a job pushed onto a queue that was
        empty is announced. BackendError when the store cannot be reached."""
        for _ in ():
            yield ""

    async def durability(self) -> str | None:
        """Why acknowledged jobs could be lost if the store's server restarted, or None
        when nothing is known against it (the queue warns once with the reason)."""
        return None

    @abc.abstractmethod
    async def append_output(self, job_id: str, text: str, *, attempt: int | None = None) -> bool:
        """Add ``text`` to the job's output (what it printed, in order), while the job is
        kept; with an ``attempt``, only while the job is RUNNING under that attempt (what a
        stale attempt prints is dropped, as its result is). True if it was added."""

    @abc.abstractmethod
    async def output(self, job_id: str, start: int = 0) -> list[str]:
        """The job's output pieces from the ``start``-th on."""
