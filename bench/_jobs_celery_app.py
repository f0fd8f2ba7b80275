"""The Celery app of the job-queue benchmark: the same functions as the other systems, on the
benchmark's redis-server as broker and result backend.

Workers start with ``celery -A bench._jobs_celery_app worker``, the URL in
``$BENCH_JOBS_REDIS``; the benchmark process sends tasks by name with an app of its own from
:func:`make_app`. Settings: ``task_acks_late`` (a task is acknowledged once it ran, so a worker
that dies mid-task leaves it to another: the durable setting), JSON, results kept one hour.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from bench import _jobs_tasks

# imported by name: celery is optional (the bench extra), so it may be missing where mypy runs
Celery: Any = importlib.import_module("celery").Celery

ENV = "BENCH_JOBS_REDIS"
#: the line a worker prints once it consumes: the benchmark's readiness handshake
READY_LINE = "bench-celery-worker-ready"


def make_app(url: str) -> Any:
    """A Celery app on ``url`` (broker and result backend) with the benchmark's tasks."""
    app = Celery("bench_jobs", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name="noop")(_jobs_tasks.noop)
    app.task(name="started_at")(_jobs_tasks.started_at)
    return app


#: the workers' app (the benchmark sets the variable; without it the app has no broker and
#: a worker fails at start rather than reach a Redis of someone else's)
app = make_app(os.environ[ENV]) if os.environ.get(ENV) else Celery("bench_jobs")


def _say_ready(**_: Any) -> None:
    print(READY_LINE, flush=True)


importlib.import_module("celery.signals").worker_ready.connect(_say_ready)
