"""How a worker stores the outcome of one attempt on its own (a failure, or a result the
store will refuse): its output first, then the outcome, each tried until the backend takes
it. Results that succeed go in batches instead (``Worker._store_completed``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from undertow.errors import BackendError
from undertow.queue._capture import Sink
from undertow.queue._runner import Outcome, stopped
from undertow.storage import Backend, JobRecord, JobState

__all__ = ["flush_output", "persist", "report"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def report(
    store: Backend, record: JobRecord, outcome: Outcome, refused: bool
) -> tuple[int, int]:
    """Store one attempt's outcome (``refused``: the job was stopped meanwhile, and a result
    is dropped); the attempts that ended, and those of them that failed (0 or 1 each)."""
    if isinstance(outcome, bytes) and not refused:
        return int(await store.complete(record.id, record.attempts, outcome)), 0
    if isinstance(outcome, bytes):
        outcome = stopped(record.id)
    error, delay = outcome
    state = await store.fail(record.id, record.attempts, error, retry_delay=delay)
    if state is None:  # a stale attempt: nothing changed
        return 0, 0
    return 1, int(state in (JobState.FAILED, JobState.DEAD))


async def flush_output(store: Backend, record: JobRecord, sink: Sink) -> None:
    """Store what the attempt printed and was not stored yet (fenced: what a stale attempt
    printed is dropped with its result)."""
    text = sink.take()
    if text:
        await store.append_output(record.id, text, attempt=record.attempts)


async def persist(
    op: Callable[[], Coroutine[Any, Any, T]], *, pause: float, pause_max: float, who: str
) -> T:
    """Run ``op`` until the backend takes it (an outage is waited out, the pause doubling
    from ``pause`` up to ``pause_max``)."""
    while True:
        try:
            return await op()
        except BackendError as exc:
            log.warning("worker %s: the backend failed, retrying: %s", who, exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, pause_max)
