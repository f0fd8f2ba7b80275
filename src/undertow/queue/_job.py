"""A handle on one job: its state, its result when it has one, its output, cancelling it.

The handle holds nothing but the job's id: everything is read from the store, so a handle
made from an id in another process (after a kernel restart) works as well as the one
``submit`` returned. Waiting polls the store with a growing interval, never beyond the
deadline.
"""

from __future__ import annotations

import asyncio
import html
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import msgspec

from undertow._util import html_table
from undertow.data import Pointer, client_for
from undertow.errors import JobCancelled, JobFailed, JobTimeout, QueueError, UndertowError
from undertow.queue._handle import StoreHandle
from undertow.queue._payload import PICKLE, decode_result, result_signer
from undertow.queue._route import Route
from undertow.queue._sessions import session_key
from undertow.storage import FINAL_STATES, Backend, JobRecord, JobState
from undertow.wire import decode_error, rebuild

__all__ = ["Job", "explain", "job_html", "outcome"]

#: the first pause between two looks at a job, and the longest
POLL_MIN, POLL_MAX = 0.005, 0.5
#: how much of a job's output its HTML form shows: the last lines, at most this many
_TAIL_LINES = 12


class Job:
    """A submitted job. ``job.result()`` waits for it; ``await job`` too.

    ::

        job = queue.submit(add, 1, 2)
        job.state                  # JobState.QUEUED, RUNNING, DONE, ...
        job.result(timeout=60)     # 3, or the job's error raised here
    """

    def __init__(self, handle: StoreHandle, job_id: str, function: str = "") -> None:
        self._handle = handle
        #: output pieces printed here so far (waiting prints the job's output as it comes)
        self._printed = 0
        #: held while output is fetched and printed, so no piece is printed twice
        self._printing = threading.Lock()
        #: where its output is printed: the notebook cell that submitted it (see
        #: undertow.queue._follow), or None for sys.stdout
        self._cell: Callable[[str, str], None] | None = None
        #: the record once it is final (it never changes again), as undertow.wait found it
        self._final: JobRecord | None = None
        #: when this handle first saw the job ended (Unix seconds; 0.0: not yet)
        self.seen_ended = 0.0
        self.id = job_id
        #: what it runs: a registered function's name, or ``module.qualname`` of a callable
        self.function = function

    def __repr__(self) -> str:
        try:
            state = self.state.value
        except QueueError:
            state = "unknown"
        return f"<Job {self.id} {self.function} {state}>"

    def _repr_html_(self) -> str:
        """The job in a notebook: see :func:`job_html`."""
        return job_html(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def record(self) -> JobRecord:
        """The job's record as the store keeps it now."""
        found = self._handle.run(lambda b: b.job(self.id))
        return self._known(found)

    def _known(self, found: JobRecord | None) -> JobRecord:
        if found is None:
            raise QueueError(
                f"job {self.id} is not in {self._handle.url}: never submitted there, or "
                "purged after its result_ttl",
                job_id=self.id,
            )
        self.function = found.function
        return found

    @property
    def state(self) -> JobState:
        """Where the job is now."""
        return self.record().state

    def done(self) -> bool:
        """Whether the job has ended (done, failed, dead or cancelled)."""
        return self.state in FINAL_STATES

    def cancel(self) -> bool:
        """Cancel the job: a queued one at once, a running one when its worker next renews
        its lease (it then stops). True if the job is (or will be) cancelled, False if it had
        ended otherwise already."""
        state = self._handle.run(lambda b: b.cancel(self.id))
        if state is None:
            self._known(None)
        return state not in (JobState.DONE, JobState.FAILED, JobState.DEAD)

    def explain(self) -> str:
        """Where the job was sent and why (its pointer data per host, the threshold, the
        group), where it is now and what it waits for; once it ended, where its time went,
        what it printed and how long its outcome took to reach this handle."""
        record = self.record()
        said = explain(record, time.time())
        if record.state not in FINAL_STATES:
            return said
        printed = "".join(self._handle.run(lambda b: b.output(self.id, 0)))
        said += f"\noutput: {printed.count(chr(10))} line(s), {len(printed)} characters"
        if self.seen_ended and record.finished:  # two machines' clocks, when they differ
            back = max(self.seen_ended - record.finished, 0.0)
            said += f"\noutcome: seen here {back:.3f} s after its worker stored it"
        return said

    def output(self, start: int = 0) -> str:
        """What the job printed so far (from its ``start``-th piece on)."""
        return "".join(self._handle.run(lambda b: b.output(self.id, start)))

    def result(self, timeout: float | None = None, *, output: bool = True) -> Any:
        """The job's result, waiting up to ``timeout`` seconds (None: as long as it takes);
        meanwhile what the job prints is printed here as it comes (``output=False``: not),
        once per handle (a job that :func:`undertow.wait` found ended is not fetched again,
        nor its output printed: read it with :meth:`output`). Raises the job's error
        (rebuilt as for a call), :class:`JobFailed` for a dead job, :class:`JobCancelled`,
        or :class:`JobTimeout` (a TimeoutError) at the deadline."""
        return outcome(self._wait(timeout, output), self._handle)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error :meth:`result` would raise, or None if the job succeeded."""
        record = self._wait(timeout, False)
        try:
            outcome(record, self._handle)
        except Exception as exc:
            return exc
        return None

    async def _look(self, backend: Backend, output: bool) -> tuple[JobRecord | None, list[str]]:
        """The record, and (with ``output``) the output not printed yet, in one go."""
        record = await backend.job(self.id)
        if not output or record is None or record.state is JobState.QUEUED:
            return record, []
        return record, await backend.output(self.id, self._printed)

    def _print(self, pieces: list[str]) -> None:
        if not pieces:
            return
        self._printed += len(pieces)
        if self._cell is not None:
            self._cell("stdout", "".join(pieces))
            return
        sys.stdout.write("".join(pieces))
        sys.stdout.flush()

    def _print_new(self, output: bool) -> JobRecord:
        """The record now, after printing (with ``output``) what the job printed since the
        last look; one store operation. Safe from any thread."""
        with self._printing:
            found, pieces = self._handle.run(lambda b: self._look(b, output))
            record = self._known(found)
            self._print(pieces)
        return record

    def _wait(self, timeout: float | None, output: bool) -> JobRecord:
        if self._final is not None:  # found by undertow.wait/as_completed: nothing to fetch
            return self._final
        deadline = None if timeout is None else time.monotonic() + timeout
        pause, idle = POLL_MIN, threading.Event()
        while True:
            record = self._print_new(output)
            if record.state in FINAL_STATES:
                self.seen_ended = self.seen_ended or time.time()
                return record
            idle.wait(self._pause(pause, deadline, timeout))
            pause = min(pause * 1.5, POLL_MAX)

    def _pause(self, pause: float, deadline: float | None, timeout: float | None) -> float:
        if deadline is None:
            return pause
        left = deadline - time.monotonic()
        if left <= 0:
            raise JobTimeout(
                f"job {self.id} ({self.function}) gave no result within {timeout:g} s; "
                "it goes on: wait again, or cancel() it",
                job_id=self.id,
            )
        return min(pause, left)

    async def result_async(self, timeout: float | None = None) -> Any:
        """:meth:`result` for async code (``await job`` waits without a timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause, output = POLL_MIN, self._cell is None  # a followed job's output: its follower's
        while True:
            found, pieces = await self._handle.arun(lambda b: self._look(b, output))
            record = self._known(found)
            self._print(pieces)
            if record.state in FINAL_STATES:
                self.seen_ended = self.seen_ended or time.time()
                return outcome(record, self._handle)
            await asyncio.sleep(self._pause(pause, deadline, timeout))
            pause = min(pause * 1.5, POLL_MAX)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result_async().__await__()


def job_html(job: Job) -> str:
    """``job._repr_html_()``: its state, how far it got, and the tail of its output, read
    in two store operations (or the reason it cannot be read)."""
    title = f"undertow.Job {job.id}"
    try:
        record = job.record()
        text = job.output()
    except UndertowError as exc:
        return html_table(title, [("state", html.escape(f"unknown: {exc}"))])
    tail = "\n".join(text.rstrip("\n").splitlines()[-_TAIL_LINES:])
    rows = [
        ("function", f"<code>{html.escape(record.function)}</code>"),
        ("state", f"<strong>{html.escape(record.state.value)}</strong>"),
        ("progress", html.escape(_progress(record, time.time()))),
        ("queues", html.escape(", ".join(record.queues))),
        ("output", f"<pre>{html.escape(tail)}</pre>" if tail else "none yet"),
    ]
    return html_table(title, rows)


def _progress(record: JobRecord, now: float) -> str:
    """How far a job got, in a few words."""
    attempt = f"attempt {record.attempts} of {record.max_attempts}"
    if record.state is JobState.QUEUED:
        return f"waiting for a worker for {now - record.submitted:.1f} s"
    if record.state is JobState.RUNNING:
        return f"{attempt}, running for {now - record.started:.1f} s on {record.worker}"
    ended = f"ended {record.finished - record.submitted:.1f} s after submit, {attempt}"
    return ended + (f": {record.reason}" if record.reason else "")


def outcome(record: JobRecord, handle: StoreHandle) -> Any:
    """A final job's result, or its error raised."""
    where = f"job {record.id} ({record.function})"
    if record.state is JobState.DONE and record.result is not None:
        key = handle.key
        signer = result_signer(record.result) if record.codec == PICKLE else ""
        if signer and (key is None or key.key_id != signer):
            key = session_key(signer) or key  # a session of this machine's, before a restart
        value = decode_result(record.id, record.function, record.codec, record.result, key)
        if isinstance(value, Pointer) and handle.token:  # read with the submitter's token
            return Pointer(value.to_json(), via=client_for(value.address, token=handle.token))
        return value
    if record.state is JobState.CANCELLED:
        raise JobCancelled(f"{where} was cancelled", job_id=record.id)
    error = rebuild(decode_error(record.error), where=where) if record.error is not None else None
    if record.state is JobState.FAILED and error is not None:
        raise error
    failed = JobFailed(f"{where} {record.state.value}: {record.reason}", job_id=record.id)
    raise failed from error


def explain(record: JobRecord, now: float) -> str:
    """:meth:`Job.explain` of ``record`` at time ``now``."""
    route = (
        msgspec.json.decode(record.route, type=Route)
        if record.route
        else Route(queues=record.queues, why="given")
    )
    lines = [f"job {record.id} ({record.function}): {route.explain()}"]
    where = ", ".join(record.queues)
    attempt = f"attempt {record.attempts} of {record.max_attempts}"
    if record.state is JobState.QUEUED and record.not_before > now:
        wait = record.not_before - now
        lines.append(f"queued: a retry, due in {wait:.1f} s, then waits for a worker of {where}")
    elif record.state is JobState.QUEUED:
        lines.append(f"queued for {now - record.submitted:.1f} s: waits for a worker of {where}")
    elif record.state is JobState.RUNNING:
        lease = record.lease_until - now
        lines.append(
            f"running: {attempt} on worker {record.worker}, for {now - record.started:.1f} s "
            f"(its lease ends in {lease:.1f} s unless renewed)"
        )
        if record.cancel_requested:
            lines.append("cancelling: its worker stops it at its next heartbeat")
    else:
        took = record.finished - record.submitted
        lines.append(
            f"{record.state.value} {took:.1f} s after submit, {attempt}"
            + (f": {record.reason}" if record.reason else "")
        )
        lines.append(_timing(record))
    return "\n".join(lines)


def _timing(record: JobRecord) -> str:
    """Where a finished job's time went: waiting for a worker, then its last attempt."""
    if not record.started:  # never ran: cancelled or dead while queued
        return f"time: {record.finished - record.submitted:.3f} s queued, never run"
    waited = record.started - record.submitted
    ran = record.finished - record.started
    earlier = "" if record.attempts <= 1 else f" (after {record.attempts - 1} earlier attempt(s))"
    return (
        f"time: {waited:.3f} s from submit to its last attempt's start{earlier}, "
        f"{ran:.3f} s running on {record.worker or 'a worker'}"
    )
