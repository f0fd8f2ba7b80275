"""Prometheus families of the messaging patterns: what a master, a pipeline's stage or a
sink passed on (``server.stats()["patterns"]``) and what a master's worker ran
(``MasterWorker.stats()``). The figures come as plain data, so this layer needs nothing of
the patterns' own code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["pattern_families", "pattern_worker_families"]

#: the counters every pattern server keeps: family name, help, key in its figures
_COUNTED = (
    ("undertow_pattern_received", "Messages that arrived", "received"),
    ("undertow_pattern_answered", "Results passed on", "answered"),
    ("undertow_pattern_failed", "Messages that ended in an error", "failed"),
    ("undertow_pattern_dropped", "Messages a filter took out", "dropped"),
)


def pattern_families(server: str, figures: dict[str, Any]) -> Iterator[Any]:
    """The families of one pattern server's figures (a master's queue and workers too)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    for name, text, key in _COUNTED:
        family = CounterMetricFamily(name, text, labels=["server"])
        family.add_metric([server], figures.get(key, 0))
        yield family
    in_flight = GaugeMetricFamily(
        "undertow_pattern_in_flight", "Messages arrived, not finished yet", labels=["server"]
    )
    in_flight.add_metric([server], figures.get("in_flight", 0))
    yield in_flight
    latency = GaugeMetricFamily(
        "undertow_pattern_latency_seconds",
        "Time a message took, by function, over its latest messages",
        labels=["server", "function", "quantile"],
    )
    for function, marks in figures.get("latency_ms", {}).items():
        for mark, ms in marks.items():  # p50, p90, p99
            latency.add_metric([server, function, f"0.{mark[1:]}"], ms / 1000)
    yield latency
    if "pending" in figures:
        yield from _master_families(server, figures, CounterMetricFamily, GaugeMetricFamily)


def _master_families(
    server: str, figures: dict[str, Any], counter: Any, gauge: Any
) -> Iterator[Any]:
    pending = gauge("undertow_master_pending", "Messages waiting for a worker", labels=["server"])
    pending.add_metric([server], figures["pending"])
    workers = figures.get("workers", {})
    count = gauge("undertow_master_workers", "Workers taking messages", labels=["server"])
    count.add_metric([server], len(workers))
    requeued = counter(
        "undertow_master_requeued", "Messages given to another worker", labels=["server"]
    )
    requeued.add_metric([server], figures.get("requeued", 0))
    held = gauge(
        "undertow_master_worker_held", "Messages a worker holds", labels=["server", "worker"]
    )
    taken = counter(
        "undertow_master_worker_taken", "Messages a worker took", labels=["server", "worker"]
    )
    for worker, its in workers.items():
        held.add_metric([server, worker], its["held"])
        taken.add_metric([server, worker], its["taken"])
    yield from (pending, count, requeued, held, taken)


def pattern_worker_families(figures: dict[str, Any]) -> Iterator[Any]:
    """The families of a master's worker: its slots, those busy, what it answered."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    labels = ["master", "worker"]
    key = [figures["master"], figures["worker"]]
    slots = GaugeMetricFamily(
        "undertow_pattern_worker_slots", "Messages run at once", labels=labels
    )
    slots.add_metric(key, figures["slots"])
    busy = GaugeMetricFamily(
        "undertow_pattern_worker_busy", "Slots running messages now", labels=labels
    )
    busy.add_metric(key, figures["busy"])
    answered = CounterMetricFamily(
        "undertow_pattern_worker_answered", "Messages it answered", labels=labels
    )
    answered.add_metric(key, figures["answered"])
    failed = CounterMetricFamily(
        "undertow_pattern_worker_failed", "Messages whose function failed", labels=labels
    )
    failed.add_metric(key, figures["failed"])
    yield from (slots, busy, answered, failed)
