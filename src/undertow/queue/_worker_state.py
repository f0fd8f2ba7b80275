"""A worker's bookkeeping, without I/O: which attempts it holds and until when, when each
lease needs renewing, when to sweep and to poll, whether it may claim more, and when it stops.

The async shell (``_worker.py``) asks this object what to do, does it, and tells it what
happened; every decision is made here, from the times it is given, so that the tests drive it
through tables of events without a store, a clock or a thread.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Held", "Phase", "WorkerState"]


class Phase(enum.Enum):
    """Where the worker is in its life."""

    RUNNING = "running"
    #: no more claims; the jobs it holds finish (SIGTERM)
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass
class Held:
    """One attempt the worker holds."""

    job_id: str
    attempt: int
    lease_until: float
    #: when to renew the lease next
    renew_at: float
    #: set when a renewal was refused: cancelled, or the lease was lost; the result of a
    #: lost attempt is dropped by the store (its fence is stale)
    stop: bool = False


class WorkerState:
    """The decisions of one worker.

    Args:
        concurrency: attempts held at once, at most.
        lease: seconds each claim and renewal holds a job.
        sweep_every: seconds between two sweeps.
        poll_min, poll_max: the pause after an empty claim starts at ``poll_min`` and doubles
            up to ``poll_max``; a claim that takes a job resets it.
        retry_max: the longest delay before a retry.
        prefetch: at most this many jobs held beyond ``concurrency``, waiting for a slot:
            only as many as the slots get through within ``horizon`` seconds at the pace of
            the recent jobs (none until a job has finished, none for jobs slower than that).
        horizon: seconds of work claimed ahead.
    """

    def __init__(
        self,
        *,
        concurrency: int = 1,
        lease: float = 30.0,
        sweep_every: float = 10.0,
        poll_min: float = 0.01,
        poll_max: float = 1.0,
        retry_max: float = 300.0,
        prefetch: int = 0,
        horizon: float = 0.05,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r}: a worker runs at least 1 job")
        if lease <= 0:
            raise ValueError(f"lease={lease!r}: a lease lasts a positive number of seconds")
        self.concurrency = concurrency
        self.lease = lease
        self.sweep_every = sweep_every
        if prefetch < 0:
            raise ValueError(f"prefetch={prefetch!r}: claim ahead 0 jobs or more")
        self.poll_min, self.poll_max, self.retry_max = poll_min, poll_max, retry_max
        self.prefetch, self.horizon = prefetch, horizon
        #: the recent seconds per job (a moving average), None before the first
        self.pace: float | None = None
        self.phase = Phase.RUNNING
        self.held: dict[str, Held] = {}
        self._poll = poll_min
        self._claim_at = 0.0
        self._sweep_at = 0.0
        self._beat_at = 0.0
        #: seconds between two heartbeats (a worker is forgotten a lease after its last)
        self.beat_every = lease / 3
        self._idle = False

    # -- claiming ----------------------------------------------------------------------------

    def free_slots(self, now: float) -> int:
        """How many jobs to claim now: none while draining, before the next poll is due, or
        with every slot taken; with jobs claimed ahead, none until half of them are done
        (a claim is then worth its round trip)."""
        if now < self._claim_at:
            return 0
        return self._room()

    def _room(self) -> int:
        if self.phase is not Phase.RUNNING:
            return 0
        capacity = self.capacity()
        free = capacity - len(self.held)
        if len(self.held) > self.concurrency and free < capacity // 2:
            return 0
        return max(free, 0)

    def capacity(self) -> int:
        """How many jobs to hold at once: a slot each, and those claimed ahead."""
        if not self.prefetch or self.pace is None:
            return self.concurrency
        ahead = int(self.concurrency * self.horizon / max(self.pace, 1e-6))
        return self.concurrency + min(ahead, self.prefetch)

    def ran(self, seconds: float) -> None:
        """A job ran this long (sets the pace of claims ahead)."""
        self.pace = seconds if self.pace is None else 0.8 * self.pace + 0.2 * seconds

    def claimed(self, jobs: list[tuple[str, int]], now: float) -> None:
        """A claim returned these ``(job_id, attempt)`` (maybe none)."""
        for job_id, attempt in jobs:
            self.held[job_id] = Held(job_id, attempt, now + self.lease, now + self.lease / 3)
        if jobs:
            self._poll, self._claim_at, self._idle = self.poll_min, now, False
        else:
            self._claim_at = now + self._poll
            self._poll = min(self._poll * 2, self.poll_max)
            self._idle = not self.held

    def handed(self, job_id: str, attempt: int, lease_until: float, now: float) -> None:
        """The store handed this attempt to the worker (started for it): held from now, its
        lease (a short one, as offered) renewed at once."""
        self.held[job_id] = Held(job_id, attempt, lease_until, now)
        self._idle = False

    def offered(self) -> int:
        """The slots to offer with a claim for jobs handed while the worker waits: the free
        ones (not those of jobs claimed ahead); none unless it runs."""
        if self.phase is not Phase.RUNNING:
            return 0
        return max(self.concurrency - len(self.held), 0)

    def notified(self, now: float) -> None:
        """The store says jobs arrived: claim now, and poll fast again after."""
        self._claim_at, self._poll = now, self.poll_min

    def backend_failed(self, now: float) -> None:
        """The backend failed: wait (growing) before claiming again; never give up."""
        self._claim_at = now + self._poll
        self._poll = min(self._poll * 2, self.poll_max)

    # -- leases -------------------------------------------------------------------------------

    def renewals_due(self, now: float) -> list[Held]:
        """The held attempts whose lease should be renewed now."""
        return [h for h in self.held.values() if not h.stop and h.renew_at <= now]

    def renewed(self, job_id: str, ok: bool, now: float) -> bool:
        """A renewal answered ``ok``; False means the job must stop (cancelled or lost)."""
        held = self.held.get(job_id)
        if held is None:
            return True
        if ok:
            held.lease_until, held.renew_at = now + self.lease, now + self.lease / 3
        else:
            held.stop = True
        return ok

    def renew_failed(self, job_id: str, now: float) -> None:
        """The renewal could not reach the backend: try again soon, within the lease."""
        held = self.held.get(job_id)
        if held is not None:
            held.renew_at = now + min(self._poll, self.lease / 10)

    def finished(self, job_id: str) -> None:
        """The attempt ended (completed, failed or dropped)."""
        self.held.pop(job_id, None)

    # -- sweeping, retries, stopping -----------------------------------------------------------

    def sweep_due(self, now: float) -> bool:
        """Whether to sweep now (then :meth:`swept`)."""
        return now >= self._sweep_at

    def swept(self, now: float) -> None:
        self._sweep_at = now + self.sweep_every

    def beat_due(self, now: float) -> bool:
        """Whether to send a heartbeat now (then :meth:`beaten`)."""
        return now >= self._beat_at

    def beaten(self, now: float) -> None:
        self._beat_at = now + self.beat_every

    def retry_delay(self, attempt: int, backoff: float) -> float:
        """The delay before retrying after the failed ``attempt``: ``backoff`` doubled at each
        attempt, at most ``retry_max``."""
        return float(min(backoff * 2 ** max(attempt - 1, 0), self.retry_max))

    def drain(self) -> None:
        """Stop claiming; the held jobs finish."""
        if self.phase is Phase.RUNNING:
            self.phase = Phase.DRAINING

    def should_stop(self, *, burst: bool) -> bool:
        """Whether the worker is done: drained and holding nothing, or in burst mode with
        nothing held and the last claim empty (the shell then checks that no job waits)."""
        if self.held:
            return False
        return self.phase is not Phase.RUNNING or (burst and self._idle)

    def next_wakeup(self, now: float) -> float:
        """When something is next due: a renewal, a sweep or a claim (with free slots)."""
        times = [h.renew_at for h in self.held.values() if not h.stop]
        times += [self._sweep_at, self._beat_at]
        if self._room():
            times.append(self._claim_at)
        return max(min(times), now)
