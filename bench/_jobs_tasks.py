"""The functions the job-queue benchmark runs on every system's workers (``bench.jobs``).

Each system names them its own way: undertow workers register them by name
(``--function noop=bench._jobs_tasks:noop``), RQ by their import path, Dask by reference;
Celery's tasks (``bench._jobs_celery_app``) call them.
"""

from __future__ import annotations

import time


def noop(i: int = 0) -> None:
    """Do nothing: what a job costs the queue itself."""


def started_at() -> float:
    """When the job began (Unix seconds), for the enqueue-to-start latency."""
    return time.time()
