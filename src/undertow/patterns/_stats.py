"""Counters of a pattern server: messages in, out, failed, in flight, latency per function."""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["Counters", "percentiles"]

#: latencies kept per function (the most recent ones), for percentiles
SAMPLES = 2048


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p90 and p99 of ``samples`` (seconds), in milliseconds; empty if there are none."""
    if not samples:
        return {}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {
        f"p{p}": round(ordered[min(last, (len(ordered) * p) // 100)] * 1e3, 3) for p in (50, 90, 99)
    }


class Counters:
    """What a pattern server did, safe to update from any thread.

    ``received``: messages that arrived; ``answered``: results passed on (to the next stage,
    a sink or the client); ``failed``: messages that ended in an error; ``dropped``: taken
    out by a filter; ``in_flight``: arrived and not finished yet. Every message that arrives
    ends answered, failed or dropped (a tee or a generator may answer one message several
    times: ``answered`` counts results, ``finished`` counts messages).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.received = 0
        self.finished = 0
        self.answered = 0
        self.failed = 0
        self.dropped = 0
        self._latency: dict[str, list[float]] = {}
        self._next: dict[str, int] = {}

    def arrived(self, n: int) -> None:
        with self._lock:
            self.received += n

    def done(
        self,
        function: str,
        seconds: float,
        *,
        answers: int = 1,
        failed: bool = False,
        dropped: bool = False,
    ) -> None:
        """One message finished by ``function`` after ``seconds``."""
        with self._lock:
            self.finished += 1
            if failed:
                self.failed += 1
            elif dropped:
                self.dropped += 1
            else:
                self.answered += answers
            samples = self._latency.setdefault(function, [])
            if len(samples) < SAMPLES:
                samples.append(seconds)
            else:
                i = self._next.get(function, 0)
                samples[i] = seconds
                self._next[function] = (i + 1) % SAMPLES

    def failed_unrun(self, n: int) -> None:
        """``n`` messages failed before any function ran (refused, not found)."""
        with self._lock:
            self.finished += n
            self.failed += n

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """Every counter as plain data (``undertow status`` shows it)."""
        with self._lock:
            latency = {name: percentiles(list(s)) for name, s in self._latency.items()}
            return {
                "received": self.received,
                "answered": self.answered,
                "failed": self.failed,
                "dropped": self.dropped,
                "in_flight": self.received - self.finished,
                "latency_ms": latency,
                "uptime": round(time.time() - self.started, 3),
                **extra,
            }
