"""``undertow.explain(...)``: where the time of a job or a call went, in words."""

from __future__ import annotations

from typing import Any

from undertow.queue._job import Job
from undertow.rpc import explain_target

__all__ = ["explain_where_time_went"]


def explain_where_time_went(target: Any) -> str:
    """``undertow.explain(job_future_or_client)``: for a job, where it was sent and why,
    where it is now, and for a finished one where its time went (waiting for a worker,
    running); for a call's future (``client.f.submit(...)``), or a client (its last blocking
    call), where the call's time went, here, on the way and on the server."""
    if isinstance(target, Job):
        return target.explain()
    said = explain_target(target)
    if said is None:
        raise TypeError(
            f"undertow.explain() takes a Job (cluster.submit(...)), a call's future "
            f"(client.f.submit(...)) or a client (its last call), not {type(target).__name__}"
        )
    return said
