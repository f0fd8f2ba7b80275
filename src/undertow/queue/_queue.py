"""Submitting jobs: :class:`JobQueue`, over the cluster backend."""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from undertow._util import address_host
from undertow.config import backend_url, redact_url
from undertow.data import Pointer
from undertow.errors import BrokerUnavailable
from undertow.queue._handle import StoreHandle
from undertow.queue._job import Job
from undertow.queue._notebook import follow_in_cell, wait_with_bar
from undertow.queue._payload import Call, encode_call, type_names
from undertow.queue._route import (
    DEFAULT_LOCALITY_WAIT,
    DEFAULT_THRESHOLD,
    Held,
    find_pointers,
    plan,
)
from undertow.security import client_key, find_client_token
from undertow.storage import (
    Backend,
    JobRecord,
    JobState,
    check_job_id,
    check_queue_name,
    new_job_id,
)

__all__ = ["JobQueue", "job"]

#: jobs ``map`` stores per backend round trip
_MAP_BATCH = 500


class JobQueue:
    """Puts jobs on the cluster's durable queue; workers (:class:`~undertow.queue.Worker`)
    run them, here or on other machines.

    ::

        with JobQueue(token=token) as jobs:
            job = jobs.submit("resize", "a.png", width=200)   # a function the workers registered
            job = jobs.submit(lambda x: x * 2, 21)            # a callable: pickled and signed
            job.result(timeout=60)                            # 42

    Args:
        backend: the backend URL (default: ``$UNDERTOW_BACKEND``, else the embedded SQLite
            file), as for the registry.
        token: the submitter's token (default: ``$UNDERTOW_TOKEN`` or the settings file; False
            for none). Needed to submit callables: their pickles are signed with it, and
            workers whose authenticator knows it run them. Jobs by name need none.
        queue: the queue jobs go to unless ``submit`` names another.
        timeout: seconds any one backend operation may take.
        result_ttl: seconds a finished job's record (and result) is kept.
        threshold: bytes of pointer arguments (sizes from the catalog) from which a job not
            given a queue goes to the hosts that hold most of them (``host:NAME`` queues, or a
            host group's ``group:NAME``) instead of ``queue``; ``job.explain()`` says where.
        locality_wait: seconds such a job waits for the workers of those hosts (an idle one
            takes it at once) before it joins ``queue`` too, where any worker may take it
            (0: at once, the first free worker anywhere wins).
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        token: str | bool | None = None,
        queue: str = "default",
        timeout: float = 10.0,
        result_ttl: float = 86400.0,
        threshold: int = DEFAULT_THRESHOLD,
        locality_wait: float = DEFAULT_LOCALITY_WAIT,
    ) -> None:
        if not locality_wait >= 0:
            raise ValueError(
                f"locality_wait={locality_wait!r}: seconds, 0 or more (0: no waiting for "
                "the workers where a job's data is)"
            )
        found = find_client_token(token)
        key = client_key(found) if found else None
        self._handle = StoreHandle(backend, key=key, timeout=timeout, token=found or None)
        self.queue = check_queue_name(queue)
        self.result_ttl = result_ttl
        self.threshold = threshold
        self.locality_wait = float(locality_wait)
        #: the queues live workers take, and when they were read (a job waits for workers
        #: where its data is only if there are some)
        self._served: tuple[float, frozenset[str]] = (float("-inf"), frozenset())

    @property
    def url(self) -> str:
        """The backend's URL, without any password."""
        return self._handle.url

    def __repr__(self) -> str:
        return f"<JobQueue {self.url} queue={self.queue!r}>"

    def submit(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        queue: str | Sequence[str] | None = None,
        max_attempts: int = 1,
        retries: int = 0,
        retry_on: Sequence[type[BaseException] | str] | None = None,
        backoff: float = 1.0,
        idempotency_key: str | None = None,
        return_pointer: bool = False,
        **kwargs: Any,
    ) -> Job:
        """Queue a call of ``fn(*args, **kwargs)``; its :class:`Job`.

        ``fn`` is a function's name (registered on the workers; arguments as msgpack) or a
        callable (pickled and signed with this queue's token). ``queue``: where it goes (several
        queues: the first worker to take it runs it). A raised exception is retried ``retries``
        times (only those of ``retry_on``'s types, if given), after ``backoff`` seconds doubled
        at each attempt; then the job is dead. ``max_attempts`` counts every attempt, those
        lost with a worker that died too (at least ``retries + 1``). With an
        ``idempotency_key`` that a kept job has, that job is returned and nothing is queued.
        With ``return_pointer``, the result stays on the worker's data server (its host's,
        see :class:`Worker`'s ``data``) and the job's result is a :class:`~undertow.Pointer`
        to it: slice it or pass it to the next job without moving it.
        """
        return self.submit_call(
            fn,
            args,
            kwargs,
            queue=queue,
            max_attempts=max_attempts,
            retries=retries,
            retry_on=retry_on,
            backoff=backoff,
            idempotency_key=idempotency_key,
            return_pointer=return_pointer,
        )

    def submit_call(
        self,
        fn: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | Sequence[str] | None = None,
        max_attempts: int = 1,
        retries: int = 0,
        retry_on: Sequence[type[BaseException] | str] | None = None,
        backoff: float = 1.0,
        idempotency_key: str | None = None,
        return_pointer: bool = False,
    ) -> Job:
        """:meth:`submit` with the call's arguments given as they are (for arguments whose
        names are those of :meth:`submit`'s options)."""
        args, kwargs = tuple(args), dict(kwargs or {})
        record = self._record(
            fn, args, kwargs, queue, max_attempts, retries, retry_on, backoff, return_pointer
        )
        record.idempotency_key = idempotency_key
        pointers = find_pointers(args, kwargs) if queue is None else []
        if not pointers:  # (on Redis, straight from this thread: 0.2-0.4 ms sooner)
            stored = self._handle.enqueue_now(record)
            if stored is not None:
                return follow_in_cell(self._job(stored))

        async def enqueue(backend: Backend) -> JobRecord:
            if pointers:
                known, groups = await _catalog(backend, pointers)
                self._route(record, pointers, known, groups, await self._serving(backend))
            return await backend.enqueue(record)

        return follow_in_cell(self._job(self._handle.run(enqueue)))

    async def submit_call_async(
        self,
        fn: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | Sequence[str] | None = None,
    ) -> Job:
        """:meth:`submit_call` for async code (the common options)."""
        args, kwargs = tuple(args), dict(kwargs or {})
        record = self._record(fn, args, kwargs, queue)
        return follow_in_cell(self._job(await self._handle.arun(lambda b: b.enqueue(record))))

    def _job(self, stored: JobRecord) -> Job:
        return Job(self._handle, stored.id, stored.function)

    def map(
        self,
        fn: Callable[..., Any] | str,
        /,
        *iterables: Iterable[Any],
        progress: bool = False,
        **options: Any,
    ) -> list[Job]:
        """Queue ``fn(*items)`` for each set of items of ``iterables`` taken together (as
        :func:`map` does); the jobs, in order. ``options``: those of :meth:`submit`, except
        ``idempotency_key``. Jobs are made and stored 500 at a time, each batch one backend
        operation under ``timeout``; a BrokerUnavailable carries the jobs queued before it
        (``exc.jobs``).

        With ``progress=True``, map then waits for the jobs to end (done or not: their
        results and errors are theirs to tell), showing a progress bar that counts them: a
        widget in a notebook, text on stderr elsewhere. Interrupting the wait leaves the
        jobs running."""
        jobs = self._map(fn, iterables, options)
        if progress:
            wait_with_bar(jobs, _what(fn))
        return jobs

    def _map(
        self, fn: Callable[..., Any] | str, iterables: Sequence[Iterable[Any]], options: Any
    ) -> list[Job]:
        if "idempotency_key" in options:
            raise TypeError("map() takes no idempotency_key: submit each job with its own")
        route = options.get("queue") is None
        jobs: list[Job] = []
        calls = (tuple(items) for items in zip(*iterables, strict=False))
        while batch := list(itertools.islice(calls, _MAP_BATCH)):
            records = [self._record(fn, items, {}, **options) for items in batch]
            pointers = [find_pointers(c, {}) if route else [] for c in batch]
            try:
                stored = self._handle.run(
                    functools.partial(self._enqueue_batch, records=records, pointers=pointers)
                )
            except BrokerUnavailable as exc:
                exc.jobs = jobs  # type: ignore[attr-defined]
                exc.args = (f"{exc} ({len(jobs)} jobs of this map were queued before: exc.jobs)",)
                raise
            jobs += [self._job(r) for r in stored]
        return jobs

    async def _enqueue_batch(
        self, backend: Backend, *, records: list[JobRecord], pointers: list[list[Pointer]]
    ) -> list[JobRecord]:
        """Route the records that carry pointers, then store them all in one operation."""
        if any(pointers):
            known, groups = await _catalog(backend, [p for found in pointers for p in found])
            served = await self._serving(backend)
            for record, found in zip(records, pointers, strict=True):
                if found:
                    self._route(record, found, known, groups, served)
        return await backend.enqueue_many(records)

    def _record(
        self,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        queue: str | Sequence[str] | None = None,
        max_attempts: int = 1,
        retries: int = 0,
        retry_on: Sequence[type[BaseException] | str] | None = None,
        backoff: float = 1.0,
        return_pointer: bool = False,
    ) -> JobRecord:
        if retries < 0 or max_attempts < 1:
            raise ValueError(
                f"retries={retries!r}, max_attempts={max_attempts!r}: "
                "retries is 0 or more, max_attempts 1 or more"
            )
        queues = [queue] if isinstance(queue, str) else list(queue or [self.queue])
        retried = None if retry_on is None else type_names(retry_on)
        policy = Call([], retries > 0, retried, backoff, bool(return_pointer))
        job_id = new_job_id()
        key = self._handle.key
        function, payload, codec = encode_call(job_id, fn, args, kwargs, key=key, policy=policy)
        return JobRecord(
            id=job_id,
            queues=[check_queue_name(q) for q in queues],
            function=function,
            payload=payload,
            codec=codec,
            max_attempts=max(max_attempts, retries + 1),
            submitter=key.identity if key is not None else "",
            result_ttl=self.result_ttl,
        )

    def _route(
        self,
        record: JobRecord,
        pointers: list[Pointer],
        known: dict[str, Held],
        groups: dict[str, list[str]],
        served: frozenset[str],
    ) -> None:
        """Send ``record`` where its data is, if it has enough (see ``queue/_route.py``); it
        waits there alone for a while if workers take those queues."""
        held = [known[p.key] for p in pointers if p.key in known]
        route = plan(held, record.queues, threshold=self.threshold, groups=groups)
        record.queues = route.queues
        there = served.intersection(route.queues[: route.local])
        if self.locality_wait and there and route.local < len(route.queues):
            route.wait = self.locality_wait  # (from the submit: the store counts from there)
            record.local_queues, record.local_until = route.local, time.time() + route.wait
        record.route = msgspec.json.encode(route).decode()

    async def _serving(self, backend: Backend) -> frozenset[str]:
        """The queues live workers take (read again after 5 s)."""
        read, served = self._served
        if time.monotonic() - read > _SERVED_FOR:
            workers = await backend.workers()
            served = frozenset(q for w in workers for q in w.queues)
            self._served = (time.monotonic(), served)
        return served

    def job(self, job_id: str) -> Job:
        """The handle of the job with that id (submitted by anyone, from anywhere)."""
        return Job(self._handle, check_job_id(job_id))

    def jobs(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        submitter: str | None = None,
        limit: int = 1000,
    ) -> list[Job]:
        """The jobs in that state, on that queue, of that submitter (each if given), oldest
        first, at most ``limit``."""
        wanted = JobState(state) if state is not None else None
        records = self._handle.run(
            lambda b: b.jobs(state=wanted, queue=queue, submitter=submitter, limit=limit)
        )
        return [Job(self._handle, r.id, r.function) for r in records]

    def queue_length(self, queue: str | None = None) -> int:
        """How many entries a queue holds (default: this queue's)."""
        name = check_queue_name(queue or self.queue)
        return self._handle.run(lambda b: b.queue_length(name))

    def stats(self) -> dict[str, Any]:
        """The backend's figures: each queue's length and stored jobs by state, and the live
        workers (name, queues, slots, jobs running, done and failed since they started);
        ``undertow.serve_metrics(queue)`` serves them for Prometheus."""

        async def read(backend: Any) -> tuple[list[Any], list[Any]]:
            return await backend.queues(), await backend.workers()

        queues, workers = self._handle.run(read)
        return {
            "backend": redact_url(self.url),
            "queues": {q.name: {"length": q.length, "states": dict(q.states)} for q in queues},
            "workers": {
                w.name: {
                    "queues": list(w.queues),
                    "concurrency": w.concurrency,
                    "running": w.running,
                    "done": w.done,
                    "failed": w.failed,
                }
                for w in workers
            },
        }

    def close(self) -> None:
        """Release the backend's connections (the jobs' handles stop working too)."""
        self._handle.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _what(fn: Callable[..., Any] | str) -> str:
    """A function's name for a progress bar."""
    return fn if isinstance(fn, str) else getattr(fn, "__name__", type(fn).__name__)


async def _catalog(
    backend: Backend, pointers: list[Pointer]
) -> tuple[dict[str, Held], dict[str, list[str]]]:
    """Each pointer's size and the hosts that hold a copy, from the catalog (a pointer the
    catalog does not know is where it says it is), and the host groups."""
    known: dict[str, Held] = {}
    for pointer in pointers:
        if pointer.key in known:
            continue
        record = await backend.data_record(pointer.key)
        if record is not None:
            hosts = [location.host for location in record.locations]
            known[pointer.key] = Held(pointer.key, record.size, hosts)
        else:
            known[pointer.key] = Held(pointer.key, pointer.nbytes, [address_host(pointer.address)])
    return known, await backend.groups()


#: seconds the queues live workers take are known without reading them again
_SERVED_FOR = 5.0

#: the queues :func:`job` opened, by backend URL and token
_opened: dict[tuple[str, str | bool | None], JobQueue] = {}


def job(job_id: str, *, backend: str | None = None, token: str | bool | None = None) -> Job:
    """The job with that id, from any process (after a kernel restart too): its state, its
    output so far and its result. ``backend``: the cluster backend's URL (default:
    ``$UNDERTOW_BACKEND``, else the embedded file); ``token``: the one it was submitted with
    (to read a pickled result), as for :class:`JobQueue`."""
    url = backend_url(backend)
    opened = _opened.get((url, token))
    if opened is None or opened._handle.closed:
        opened = _opened[(url, token)] = JobQueue(url, token=token)
    return opened.job(job_id)
