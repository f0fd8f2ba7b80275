"""A server's figures after known traffic: exactly the calls, errors, output lines and bytes
it served, by function, the same from Python (``server.stats()``, ``undertow.stats(client)``), at
``/metrics`` on its HTTP port and on a metrics port of its own, read with Prometheus' own
parser."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import undertow

from ._waiting import wait_until

pytestmark = [pytest.mark.usefixtures("undertow_home"), pytest.mark.timeout(60)]

WAIT = 20.0


@pytest.fixture
def served() -> Iterator[tuple[undertow.Server, threading.Event]]:
    release = threading.Event()
    server = undertow.Server(name="counted")

    @server.register
    def echo(x: Any) -> Any:
        return x

    @server.register
    def shout(text: str) -> None:
        for line in text.split():
            print(line)  # one line of output each

    @server.register
    def broken() -> None:
        raise ValueError("always")

    @server.register
    def blocked() -> bool:
        return release.wait(WAIT)

    @server.register
    def make(n: int) -> Any:
        return np.ones(n)

    server.config({"make": {"return_pointer": True}})
    server.start("tcp://127.0.0.1:0", http_port=0)
    try:
        yield server, release
    finally:
        release.set()
        server.stop()


def traffic(client: undertow.Client) -> None:
    for i in range(5):
        assert client.echo(i) == i
    client.shout("one two three")
    for _ in range(2):
        with pytest.raises(ValueError, match="always"):
            client.broken()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels (the server's label left out)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "server"))
            found[(sample.name, labels)] = sample.value
    return found


def fn(name: str, **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"function": name, **more}.items()))


def test_the_figures_count_exactly_the_traffic_served(served):
    server, _ = served
    with undertow.connect(server.address, timeout=WAIT) as client:
        traffic(client)
        stats = undertow.stats(client)
    here = server.stats()  # the same figures, the stats call itself answered since
    for name in ("echo", "shout", "broken"):
        assert here["functions"][name] == stats["functions"][name]
    assert (here["server"], here["address"], here["data"]) == (
        stats["server"],
        stats["address"],
        stats["data"],
    )
    assert here["functions"]["_stats"]["calls"] == 1
    assert here["calls_in_flight"] == 0
    echo, shout, broken = (stats["functions"][n] for n in ("echo", "shout", "broken"))
    assert (echo["calls"], echo["errors"], echo["output_lines"]) == (5, 0, 0)
    assert (shout["calls"], shout["errors"], shout["output_lines"]) == (1, 0, 3)
    assert (broken["calls"], broken["errors"]) == (2, 2)
    assert echo["buckets"]["inf"] == 5  # the histogram's last bucket holds every call
    assert 0 < echo["seconds"] < 5.0
    assert echo["bytes_in"] > 0
    assert echo["bytes_out"] > 0
    assert stats["server"] == "counted"
    assert stats["calls_in_flight"] == 1  # the stats call itself, not answered yet


def test_metrics_on_the_http_port_read_by_prometheus_parser(served):
    server, _ = served
    with undertow.connect(server.address, timeout=WAIT) as client:
        traffic(client)
        client.make(1000)  # a value kept: 8,000 bytes in the data store
    over_http = httpx.post(f"{server.http_address}/call/echo", json={"args": [7]}, timeout=WAIT)
    assert over_http.json() == 7  # counted as any other call
    response = httpx.get(f"{server.http_address}/metrics", timeout=WAIT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    assert found[("undertow_calls_total", fn("echo"))] == 6
    assert found[("undertow_call_errors_total", fn("broken"))] == 2
    assert found[("undertow_call_errors_total", fn("echo"))] == 0
    assert found[("undertow_output_lines_total", fn("shout"))] == 3
    assert found[("undertow_call_seconds_count", fn("echo"))] == 6
    assert found[("undertow_call_seconds_bucket", fn("echo", le="+Inf"))] == 6
    assert found[("undertow_received_bytes_total", fn("echo"))] > 0
    assert found[("undertow_sent_bytes_total", fn("echo"))] > 0
    assert found[("undertow_calls_in_flight", ())] == 0
    assert found[("undertow_data_bytes", (("where", "memory"),))] == 8000
    assert found[("undertow_data_objects", (("where", "memory"),))] == 1
    assert found[("undertow_data_bytes", (("where", "disk"),))] == 0


def test_calls_in_flight_and_a_metrics_port_of_its_own(served):
    server, release = served
    metrics = undertow.serve_metrics(server, port=0)
    try:
        assert metrics.url.startswith("http://127.0.0.1:")
        with undertow.connect(server.address, timeout=WAIT) as client:
            waiting = client.blocked.submit()

            def in_flight() -> float:
                return samples(httpx.get(metrics.url, timeout=WAIT).text)[
                    ("undertow_calls_in_flight", ())
                ]

            assert wait_until(lambda: in_flight() == 1, WAIT)  # the call is in
            release.set()
            assert waiting.result(WAIT) is True
        found = samples(httpx.get(metrics.url, timeout=WAIT).text)
        assert found[("undertow_calls_in_flight", ())] == 0
        assert found[("undertow_calls_total", fn("blocked"))] == 1
    finally:
        metrics.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(metrics.url, timeout=WAIT)


def test_a_bad_metrics_port_is_refused_with_the_reason(served):
    server, _ = served
    with pytest.raises(undertow.ConfigError, match="metrics port"):
        undertow.serve_metrics(server, port=70000)
    taken = undertow.serve_metrics(server, port=0)
    try:
        port = int(taken.url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(undertow.ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            undertow.serve_metrics(server, port=port)
    finally:
        taken.close()


def test_a_clusters_queues_and_workers_for_prometheus():
    with undertow.Cluster(workers=1, concurrency=1, modules=["tests._cluster_jobs"]) as cluster:
        jobs = [cluster.submit("shout", word) for word in ("a", "b", "c")]
        broken = cluster.submit("shout", 42, retries=0)  # 42.upper(): fails once, for good
        assert [job.result(timeout=60) for job in jobs] == ["A", "B", "C"]
        with pytest.raises(Exception, match="upper"):
            broken.result(timeout=60)
        queue = cluster.queues[0]
        told = undertow.explain(jobs[0])  # where its time went
        assert "s from submit to its last attempt's start" in told
        assert "s running on " in told
        assert "output: 1 line(s), 11 characters" in told  # "shouting a\n"
        assert re.search(r"outcome: seen here \d+\.\d{3} s after its worker stored it", told)
        with pytest.raises(TypeError, match="takes a Job"):
            undertow.explain(42)
        stats = cluster.stats()
        assert stats["queues"][queue]["states"] == {"done": 3, "failed": 1}
        assert stats["queues"][queue]["length"] == 0
        assert len(stats["workers"]) == 1
        (worker,) = stats["workers"].values()
        assert queue in worker["queues"]
        assert worker["concurrency"] == 1
        assert stats["data"] is not None
        metrics = undertow.serve_metrics(cluster)
        try:
            text = httpx.get(metrics.url, timeout=WAIT).text
        finally:
            metrics.close()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert found[("undertow_jobs", (("queue", queue), ("state", "done")))] == 3
    assert found[("undertow_jobs", (("queue", queue), ("state", "failed")))] == 1
    assert found[("undertow_queue_length", (("queue", queue),))] == 0
    assert found[("undertow_queue_workers", (("queue", queue),))] == 1
    data_server = stats["data"]["server"]
    # the data server's figures, read by a call of their own: the one in flight then
    assert found[("undertow_calls_in_flight", (("server", data_server),))] == 1


def test_a_function_named_stats_stays_the_servers_own():
    server = undertow.Server(name="own")
    server.register("stats", lambda: {"mine": True})
    address = server.start("tcp://127.0.0.1:0")
    try:
        with undertow.connect(address, timeout=WAIT) as client:
            assert client.stats() == {"mine": True}
            assert undertow.stats(client)["functions"]["stats"]["calls"] == 1
    finally:
        server.stop()
    with pytest.raises(TypeError, match=r"undertow.stats\(\) takes a Server"):
        undertow.stats(42)
