"""``undertow.explain(...)``: where the time of a job went, in words."""

from __future__ import annotations

from typing import Any

from undertow.queue._job import Job

__all__ = ["explain_where_time_went"]


def explain_where_time_went(target: Any) -> str:
    """``undertow.explain(job)``: where a job was sent and why, where it is now, and for a
    finished one where its time went (waiting for a worker, running). Calls are not timed
    this way yet: a :class:`~undertow.Job` only."""
    if not isinstance(target, Job):
        raise TypeError(
            f"undertow.explain() takes a Job (cluster.submit(...), or a queued function's "
            f"call), not {type(target).__name__}; calls are not timed this way yet"
        )
    return target.explain()
