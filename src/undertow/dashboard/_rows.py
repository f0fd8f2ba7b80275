"""What the page is sent of each record: plain JSON-ready dicts holding only what may be
shown. A data record's secret (the capability to use the object), a job's payload, result
and raw error bytes never leave the server: these functions name every field they send, so
that a field added to a record later is not sent by accident."""

from __future__ import annotations

from typing import Any

from undertow.data import DataRecord
from undertow.errors import UndertowError
from undertow.storage import Instance, JobRecord, QueueInfo, WorkerInfo
from undertow.wire import decode_error

__all__ = [
    "STALE_SHARE",
    "data_row",
    "error_text",
    "healthy",
    "instance_row",
    "job_row",
    "queue_row",
    "worker_row",
]

#: the share of its TTL after which a silent heartbeat counts as unhealthy: beats come
#: every third of the TTL, so past half of it at least one was missed, and the page says
#: so before the store forgets the process (at its whole TTL)
STALE_SHARE = 0.5


def healthy(beat: float, ttl: float, now: float) -> bool:
    """Whether a process whose last beat was at ``beat`` is on time."""
    return now - beat <= ttl * STALE_SHARE


def instance_row(instance: Instance, now: float) -> dict[str, Any]:
    """A service instance: where it listens, its host and process, its heartbeat."""
    return {
        "id": instance.id,
        "service": instance.service,
        "address": instance.address if instance.addresses else "",
        "host": instance.host,
        "pid": instance.pid,
        "started": instance.started,
        "beat": instance.heartbeat,
        "ttl": instance.ttl,
        "methods": sorted(m.name for m in instance.methods),
        "healthy": healthy(instance.heartbeat, instance.ttl, now),
    }


def worker_row(worker: WorkerInfo, now: float) -> dict[str, Any]:
    """A worker of the job queue as it last said it was."""
    return {
        "name": worker.name,
        "host": worker.host,
        "pid": worker.pid,
        "queues": list(worker.queues),
        "concurrency": worker.concurrency,
        "running": worker.running,
        "done": worker.done,
        "failed": worker.failed,
        "started": worker.started,
        "beat": worker.beat,
        "ttl": worker.ttl,
        "healthy": healthy(worker.beat, worker.ttl, now),
    }


def queue_row(queue: QueueInfo) -> dict[str, Any]:
    """A queue: its length and its stored jobs by state."""
    return {"name": queue.name, "length": queue.length, "states": dict(queue.states)}


def job_row(job: JobRecord) -> dict[str, Any]:
    """A job without its payload, result or error bytes (its error's type and message come
    with :func:`error_text` on the job's own page)."""
    return {
        "id": job.id,
        "function": job.function,
        "state": str(job.state),
        "queues": list(job.queues),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "submitter": job.submitter,
        "submitted": job.submitted,
        "started": job.started,
        "finished": job.finished,
        "worker": job.worker,
        "reason": job.reason,
        "cancel_requested": job.cancel_requested,
    }


def data_row(record: DataRecord) -> dict[str, Any]:
    """A catalog record without its secret: key, type, size, owner, tags and the hosts that
    keep it (no port or path either: nothing that would let the page fetch the object)."""
    return {
        "key": record.key,
        "type": record.type_name,
        "size": record.size,
        "created": record.created,
        "owner": record.owner,
        "tags": list(record.tags),
        "hosts": list(dict.fromkeys(location.host for location in record.locations)),
    }


def error_text(job: JobRecord) -> str:
    """A failed job's error as ``Type: message`` (decoded from its msgpack ErrorInfo, never
    a pickle), or "" without one."""
    if not job.error:
        return ""
    try:
        info = decode_error(job.error)
    except (UndertowError, ValueError, TypeError):
        return "(an error this dashboard cannot read)"
    return f"{info.type}: {info.message}"
