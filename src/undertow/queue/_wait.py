"""Waiting on many things at once: jobs of the queue and futures of calls, mixed.

:func:`wait` and :func:`as_completed` take :class:`~undertow.Job` handles and
:class:`concurrent.futures.Future` objects (an :class:`undertow.CallFuture` is one) in one
collection, as :mod:`concurrent.futures` does for futures alone. Futures tell when they are
done; jobs are looked up in their stores, all of one store in one operation per look, with a
pause that grows from a few milliseconds to a quarter of a second.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from undertow.errors import JobTimeout
from undertow.queue._handle import StoreHandle
from undertow.queue._job import Job
from undertow.storage import FINAL_STATES, Backend

__all__ = ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "as_completed", "wait"]

ALL_COMPLETED = concurrent.futures.ALL_COMPLETED
FIRST_COMPLETED = concurrent.futures.FIRST_COMPLETED
FIRST_EXCEPTION = concurrent.futures.FIRST_EXCEPTION

#: the first pause between two looks at the jobs, and the longest
_PAUSE_MIN, _PAUSE_MAX = 0.005, 0.25

Waitable = Job | concurrent.futures.Future[Any]
W = TypeVar("W", bound=Waitable)


def _check(items: Iterable[W]) -> list[W]:
    found = list(dict.fromkeys(items))
    for item in found:
        if not isinstance(item, Job | concurrent.futures.Future):
            raise TypeError(
                f"cannot wait on {item!r}: give undertow Jobs and futures "
                "(client.f.submit(...) returns one)"
            )
    return found


def _finished_jobs(jobs: list[Job]) -> dict[Waitable, bool]:
    """Which of ``jobs`` have ended, each mapped to whether it failed (one operation per
    store)."""
    by_store: dict[int, list[Job]] = {}
    for job in jobs:
        by_store.setdefault(id(job._handle), []).append(job)
    ended: dict[Waitable, bool] = {}
    for group in by_store.values():
        handle: StoreHandle = group[0]._handle
        ids = [job.id for job in group]

        async def look(backend: Backend, ids: list[str] = ids) -> list[Any]:
            return await backend.jobs_by_id(ids)

        for job, record in zip(group, handle.run(look), strict=True):
            if record is None or record.state in FINAL_STATES:
                ended[job] = record is None or record.result is None
                job._final = record
                job.seen_ended = job.seen_ended or time.time()
    return ended


def _sweep(pending: list[W]) -> dict[W, bool]:
    """The items of ``pending`` that are done, each mapped to whether it failed."""
    done: dict[Any, bool] = {}
    jobs: list[Job] = [item for item in pending if isinstance(item, Job)]
    if jobs:
        done.update(_finished_jobs(jobs))
    for item in pending:
        if isinstance(item, concurrent.futures.Future) and item.done():
            done[item] = item.cancelled() or item.exception() is not None
    return done


def as_completed(items: Iterable[W], timeout: float | None = None) -> Iterator[W]:
    """Yield each job or future as it ends (done, failed or cancelled), first ended first;
    :class:`~undertow.JobTimeout` (a TimeoutError) if some have not ended within
    ``timeout`` seconds of the call."""
    pending = _check(items)
    deadline = None if timeout is None else time.monotonic() + timeout
    pause, idle = _PAUSE_MIN, threading.Event()
    while pending:
        done = _sweep(pending)
        if done:
            pending = [item for item in pending if item not in done]
            yield from done
            pause = _PAUSE_MIN
            continue
        idle.wait(_left(pause, deadline, len(pending), timeout))
        pause = min(pause * 1.5, _PAUSE_MAX)


def wait(
    items: Iterable[W], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> tuple[set[W], set[W]]:
    """Wait until the jobs and futures have ended (``return_when``: ``ALL_COMPLETED``,
    ``FIRST_COMPLETED`` or ``FIRST_EXCEPTION``, as :func:`concurrent.futures.wait`), or
    ``timeout`` seconds have passed; the sets ``(done, not_done)``."""
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(
            f"return_when={return_when!r}: ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION"
        )
    pending = _check(items)
    deadline = None if timeout is None else time.monotonic() + timeout
    done: set[W] = set()
    pause, idle = _PAUSE_MIN, threading.Event()
    while pending:
        ended = _sweep(pending)
        done.update(ended)
        pending = [item for item in pending if item not in ended]
        if return_when == FIRST_COMPLETED and done:
            break
        if return_when == FIRST_EXCEPTION and any(ended.values()):
            break
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        idle.wait(_pause(pause, deadline))
        pause = _PAUSE_MIN if ended else min(pause * 1.5, _PAUSE_MAX)
    return done, set(pending)


def _pause(pause: float, deadline: float | None) -> float:
    if deadline is None:
        return pause
    return max(min(pause, deadline - time.monotonic()), 0.0)


def _left(pause: float, deadline: float | None, pending: int, timeout: float | None) -> float:
    if deadline is not None and time.monotonic() >= deadline:
        raise JobTimeout(f"{pending} of the jobs and futures did not end within {timeout:g} s")
    return _pause(pause, deadline)
