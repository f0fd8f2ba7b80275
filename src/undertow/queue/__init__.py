"""The job queue: durable jobs on the cluster backend (the SQLite file or Redis), and the
workers that run them.

::

    from undertow.queue import JobQueue, Worker

    with JobQueue() as jobs:
        job = jobs.submit("resize", "a.png", width=200)   # a function the workers registered
        job.result(timeout=60)

    # elsewhere:
    Worker(queues=["default"], functions={"resize": resize}, concurrency=4).work(burst=False)

A job is run at least once: a worker holds it under a lease that its heartbeats renew, and a
job whose worker died is run again after the lease (``max_attempts`` counts the attempts).
A callable (a notebook's lambda) is pickled and signed with the submitter's token; workers
run it only if their authenticator knows the token, and never unpickle anything unsigned.
"""

from undertow.queue._cluster import Cluster, local
from undertow.queue._explain import explain_where_time_went as explain
from undertow.queue._job import Job
from undertow.queue._queue import JobQueue, job
from undertow.queue._serve import ServerJobs, enqueue
from undertow.queue._wait import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    as_completed,
    wait,
)
from undertow.queue._worker import Worker
from undertow.queue._worker_state import Held, Phase, WorkerState
from undertow.rpc import plug_jobs
from undertow.storage import JobRecord, JobState

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Cluster",
    "Held",
    "Job",
    "JobQueue",
    "JobRecord",
    "JobState",
    "Phase",
    "Worker",
    "WorkerState",
    "as_completed",
    "explain",
    "job",
    "local",
    "wait",
]

plug_jobs(ServerJobs.of, enqueue)
