"""Jobs in a notebook: their output under the cell that submitted them, and a progress
bar for a map (a job's HTML form is :meth:`Job._repr_html_`).

In a Jupyter kernel, a job submitted from a cell is *followed*: one background thread of the
process looks at each followed job (with a pause that grows to half a second) and prints
what it printed, as it comes, under the submitting cell, until the job ends. Waiting for
the job (``job.result()``) in a later cell prints nothing twice: the job's handle keeps
count, under a lock. Outside a kernel nothing is followed and nothing here runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from undertow._util import cell_output, in_kernel
from undertow.queue._job import POLL_MAX, POLL_MIN, Job
from undertow.queue._wait import Waitable, as_completed
from undertow.storage import FINAL_STATES

__all__ = ["follow_in_cell", "wait_with_bar"]


class _Follower:
    """The thread that prints followed jobs' output under their cells."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="undertow-job-output", daemon=True
                )
                self._thread.start()
        self._wake.set()  # a new job: look soon

    def _run(self) -> None:
        pause = POLL_MIN
        while True:
            with self._lock:
                jobs = list(self._jobs)
                if not jobs:
                    self._thread = None
                    return
            ended = [job for job in jobs if _look(job)]
            with self._lock:
                self._jobs = [job for job in self._jobs if job not in ended]
            if self._wake.wait(pause):
                self._wake.clear()
                pause = POLL_MIN
            else:
                pause = min(pause * 1.5, POLL_MAX)


def _look(job: Job) -> bool:
    """Print what ``job`` printed since the last look; whether to stop following it (it
    ended, or its store cannot be read: ``job.result()`` says why)."""
    try:
        return job._print_new(True).state in FINAL_STATES
    except Exception:  # UndertowError mostly; anything else must not end the thread either
        return True


_follower = _Follower()


def follow_in_cell(job: Job) -> Job:
    """In a Jupyter kernel, have ``job``'s output printed under the cell running now, as it
    comes; elsewhere leave the job as it is. Returns the job."""
    if in_kernel():
        cell = cell_output()
        if cell is not None:
            job._cell = cell
            _follower.add(job)
    return job


def wait_with_bar(
    jobs: Sequence[Waitable], what: str, bar: Callable[..., Any] | None = None
) -> None:
    """Wait for ``jobs`` (or futures) to end, showing how many did on a tqdm bar (``tqdm.auto``: a
    widget in a notebook, text on stderr elsewhere) that reaches the total when all have;
    ``bar`` replaces tqdm (tests). An interrupt stops the waiting, not the jobs."""
    if bar is None:
        from tqdm.auto import tqdm  # imported only for a map that shows progress

        bar = tqdm
    with bar(total=len(jobs), desc=what, unit="job") as shown:
        for _ in as_completed(jobs):
            shown.update(1)
