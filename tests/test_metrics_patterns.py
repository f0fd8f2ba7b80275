"""A master's and its worker's figures after known traffic: messages received, answered and
failed, exactly, the same from Python (``server.stats()["patterns"]``,
``MasterWorker.stats()``) and for Prometheus (the master's ``--metrics`` port, and
``undertow.serve_metrics(worker)``), read with Prometheus' own parser."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import undertow
from undertow.patterns import MasterWorker

pytestmark = [pytest.mark.usefixtures("undertow_home"), pytest.mark.timeout(90)]

MESSAGES = 30


def checked(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"{x} is a multiple of three")
    return x


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def master() -> Iterator[undertow.Master]:
    m = undertow.Master("counted", worker_timeout=10)
    m.start(metrics_port=0)
    try:
        yield m
    finally:
        m.stop()
        undertow.patterns.shutdown()  # this process's connections to pattern servers


def test_a_master_and_its_worker_count_every_message(master: undertow.Master) -> None:
    with MasterWorker("counted", [checked], slots=2) as worker:
        results = list(undertow.stream(range(MESSAGES), "counted.checked", timeout=30))
        assert len(results) == MESSAGES
        failed = sum(1 for x in range(MESSAGES) if x % 3 == 0)
        figures = master.stats()["patterns"]
        assert figures["received"] == MESSAGES
        assert figures["answered"] == MESSAGES - failed
        assert figures["failed"] == failed
        assert figures["in_flight"] == 0
        assert figures["pending"] == 0
        assert len(figures["workers"]) == 2  # its two slots

        assert master._host is not None
        [metrics] = master._host.metrics
        seen = _scrape(metrics.url)
        me = (("server", "counted"),)
        assert seen["undertow_pattern_received_total", me] == MESSAGES
        assert seen["undertow_pattern_answered_total", me] == MESSAGES - failed
        assert seen["undertow_pattern_failed_total", me] == failed
        assert seen["undertow_pattern_in_flight", me] == 0
        assert seen["undertow_master_pending", me] == 0
        assert seen["undertow_master_workers", me] == 2
        taken = sum(v for (n, _), v in seen.items() if n == "undertow_master_worker_taken_total")
        assert taken == MESSAGES
        latency = {
            dict(labels)["quantile"]
            for (n, labels), _ in seen.items()
            if n == "undertow_pattern_latency_seconds"
        }
        assert latency == {"0.50", "0.90", "0.99"}

        own = worker.stats()["pattern_worker"]
        assert (own["answered"], own["failed"], own["slots"]) == (MESSAGES - failed, failed, 2)
        served = undertow.serve_metrics(worker, port=0)
        try:
            seen = _scrape(served.url)
        finally:
            served.close()
        key = (("master", "counted"), ("worker", own["worker"]))
        assert seen["undertow_pattern_worker_answered_total", key] == MESSAGES - failed
        assert seen["undertow_pattern_worker_failed_total", key] == failed
        assert seen["undertow_pattern_worker_slots", key] == 2


def test_a_plain_servers_figures_have_no_pattern_part() -> None:
    server = undertow.Server(name="plain")
    server.register(checked)
    server.start("tcp://127.0.0.1:0")
    try:
        assert "patterns" not in server.stats()
    finally:
        server.stop()
