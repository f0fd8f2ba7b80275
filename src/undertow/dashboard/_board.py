"""The dashboard's state between two polls, as a sync class without I/O: what the last
poll read, the processes seen lately (so that one that died is shown unhealthy, not just
gone), and the short history the plots draw (queue depth, throughput, call latency).

The async shell (``_poller.py``) reads the backend and calls :meth:`Board.update`; every
open page is then sent the same snapshot."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from undertow.dashboard._rows import (
    data_row,
    healthy,
    instance_row,
    job_row,
    queue_row,
    worker_row,
)
from undertow.data import DataRecord
from undertow.storage import FINAL_STATES, Instance, JobRecord, QueueInfo, WorkerInfo

__all__ = ["Board", "Reads"]

#: points kept per plotted series (at one poll a second: five minutes)
HISTORY = 300
#: seconds a process that stopped beating stays on the page (marked unhealthy)
KEEP_LOST = 300.0


class Reads(msgspec.Struct, kw_only=True):
    """What one poll read from the cluster."""

    now: float
    instances: list[Instance] = []
    workers: list[WorkerInfo] = []
    queues: list[QueueInfo] = []
    #: the newest jobs and catalog records (the first page of each list)
    jobs: list[JobRecord] = []
    data: list[DataRecord] = []
    #: the jobs running now (what each worker runs)
    running: list[JobRecord] = []
    #: each reachable server's figures (``undertow.stats``), by instance id
    figures: dict[str, dict[str, Any]] = {}


class Board:
    """The snapshot every page is sent, built from successive :class:`Reads`."""

    def __init__(self, *, history: int = HISTORY, keep_lost: float = KEEP_LOST) -> None:
        self.keep_lost = keep_lost
        self.version = 0
        self.snapshot: dict[str, Any] = {"version": 0, "ready": False}
        self._times: collections.deque[float] = collections.deque(maxlen=history)
        self._series: dict[str, collections.deque[float | None]] = {}
        self._history = history
        self._workers: dict[str, dict[str, Any]] = {}
        self._instances: dict[str, dict[str, Any]] = {}
        self._finished: dict[str, int] = {}
        self._calls: dict[str, tuple[int, float]] = {}
        self._touched: set[str] = set()

    def update(self, reads: Reads) -> dict[str, Any]:
        """Take a poll's reads in; the new snapshot (its ``version`` one more)."""
        now = reads.now
        workers = _remember(self._workers, [worker_row(w, now) for w in reads.workers], "name")
        runs = _runs(reads.running)
        for name, row in workers.items():  # the jobs table is newer than the last beat
            row["runs"] = runs.get(name, [])
            row["running"] = sum(run["count"] for run in row["runs"])
        instances = _remember(self._instances, [instance_row(i, now) for i in reads.instances])
        for row in [*workers.values(), *instances.values()]:
            row["healthy"] = healthy(row["beat"], row["ttl"], now)
        _forget(workers, now, self.keep_lost)
        _forget(instances, now, self.keep_lost)
        self._times.append(now)
        self._touched.clear()
        queues = [self._queue(queue_row(q), workers.values()) for q in reads.queues]
        functions = self._functions(reads.figures)
        self.version += 1
        self.snapshot = {
            "version": self.version,
            "ready": True,
            "now": now,
            "services": _services(instances.values()),
            "workers": sorted(workers.values(), key=lambda w: w["name"]),
            "queues": queues,
            "functions": functions,
            "times": list(self._times),
            "jobs": [job_row(job) for job in reads.jobs],
            "data": [data_row(record) for record in reads.data],
        }
        self._trim()
        return self.snapshot

    def _queue(self, row: dict[str, Any], workers: Any) -> dict[str, Any]:
        """``row`` with its live workers, and its depth and throughput series."""
        name = row["name"]
        finished = sum(n for state, n in row["states"].items() if state in FINAL_STATES)
        before = self._finished.get(name)
        self._finished[name] = finished
        span = self._span()
        rate = None if before is None or not span else max(finished - before, 0) / span
        row["workers"] = sum(1 for w in workers if name in w["queues"] and w["healthy"])
        row["depth"] = self._point(f"depth:{name}", float(row["length"]))
        row["throughput"] = self._point(f"rate:{name}", rate)
        return row

    def _functions(self, figures: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Each function's calls, errors and mean latency since the last poll (summed over
        the servers that serve it), with its latency series in milliseconds."""
        totals: dict[str, list[float]] = {}
        for instance_id, server in figures.items():
            for name, stats in (server.get("functions") or {}).items():
                if name.startswith("_"):  # the server's own (this page's _stats calls)
                    continue
                key = f"{server.get('server', instance_id)}.{name}"
                total = totals.setdefault(key, [0, 0, 0.0, 0.0])
                total[0] += int(stats.get("calls", 0))
                total[1] += int(stats.get("errors", 0))
                total[2] += float(stats.get("seconds", 0.0))
        rows = []
        for key, (calls, errors, seconds, _) in sorted(totals.items()):
            last_calls, last_seconds = self._calls.get(key, (calls, seconds))
            self._calls[key] = (int(calls), seconds)
            new = calls - last_calls
            latest = (seconds - last_seconds) / new * 1000 if new > 0 else None
            mean = seconds / calls * 1000 if calls else None
            series = self._point(f"latency:{key}", latest)
            rows.append(
                {"name": key, "calls": int(calls), "errors": int(errors), "mean_ms": mean,
                 "latency": series}
            )  # fmt: skip
        return rows

    def _span(self) -> float:
        """Seconds between the last two polls (0 before the second)."""
        return self._times[-1] - self._times[-2] if len(self._times) > 1 else 0.0

    def _point(self, key: str, value: float | None) -> list[float | None]:
        """Append ``value`` to the series ``key`` (padded to the times kept); the series."""
        series = self._series.get(key)
        if series is None:
            series = collections.deque([None] * (len(self._times) - 1), maxlen=self._history)
            self._series[key] = series
        series.append(value)
        self._touched.add(key)
        return list(series)

    def _trim(self) -> None:
        """Drop the series nothing was added to this poll (a queue or function gone)."""
        for key in [k for k in self._series if k not in self._touched]:
            del self._series[key]


def _remember(
    seen: dict[str, dict[str, Any]], rows: Sequence[dict[str, Any]], key: str = "id"
) -> dict[str, dict[str, Any]]:
    """``seen`` updated with ``rows`` (the live ones); those missing now are kept, as the
    store last knew them (their beat gets older: they turn unhealthy)."""
    for row in rows:
        seen[row[key]] = row
    return seen


def _forget(seen: dict[str, dict[str, Any]], now: float, keep: float) -> None:
    for name in [n for n, row in seen.items() if now - row["beat"] > row["ttl"] + keep]:
        del seen[name]


def _services(instances: Any) -> list[dict[str, Any]]:
    """Instances grouped by service name, oldest first in each."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(instances, key=lambda r: (r["service"], r["started"], r["id"])):
        by_service.setdefault(row["service"], []).append(row)
    return [
        {"name": name, "instances": rows, "healthy": sum(r["healthy"] for r in rows)}
        for name, rows in by_service.items()
    ]


def _runs(running: Sequence[JobRecord]) -> dict[str, list[dict[str, Any]]]:
    """What each worker runs: its running jobs' functions, with how many of each."""
    counts: dict[str, collections.Counter[str]] = {}
    for job in running:
        counts.setdefault(job.worker, collections.Counter())[job.function] += 1
    return {
        worker: [{"function": f, "count": n} for f, n in sorted(counter.items())]
        for worker, counter in counts.items()
    }
