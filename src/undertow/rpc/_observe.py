"""A server's figures, as Python data (``server.stats()``, ``client.stats()``) and in
Prometheus' text format (``/metrics`` on its HTTP port, or a port of its own).

The figures are counted as calls are answered (``_metrics.py``) and read only when asked;
the Prometheus form is made then too, from the same snapshot, by a collector of our own on
a registry of our own (the process-wide default registry is left alone).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from undertow.errors import ConfigError
from undertow.rpc._incoming import Incoming
from undertow.rpc._metrics import CallStats
from undertow.rpc._observe_patterns import pattern_families, pattern_worker_families
from undertow.rpc._receivers import Job

__all__ = ["MetricsServer", "prometheus_text", "serve_metrics", "snapshot", "stats_handler"]

#: Prometheus' content type for the text format
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def snapshot(
    name: str, address: str, calls: CallStats, in_flight: int, data: Any, pipes: Any = None
) -> dict[str, Any]:
    """A server's figures as plain data (what ``server.stats()`` returns): its calls, its
    data and, for a master, a pipeline's stage or a sink, what it passed on."""
    figures = {
        "server": name,
        "address": address,
        "calls_in_flight": in_flight,
        "functions": calls.functions(),
        "data": data.stats(),
    }
    patterns = None if pipes is None else pipes.stats()
    if patterns is not None:
        figures["patterns"] = patterns
    return figures


def stats_handler(
    stats: Callable[[], dict[str, Any]], encode: Callable[[Any], Sequence[Any]]
) -> Callable[[Incoming], Job | None]:
    """The raw handler of ``_stats``: the server's figures, msgpack-encoded."""

    def answer(incoming: Incoming) -> Job | None:
        incoming.reply(encode(stats()), "msgpack")
        return None

    return answer


class _Collector:
    """Turns figures into Prometheus metric families when scraped: a server's
    (``server.stats()``), a job queue's (``queue.stats()``) or a cluster's (both)."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        return []  # described when collected: the functions are known only then

    def collect(self) -> Iterator[Any]:
        figures = self._stats()
        if "functions" in figures:
            yield from _server_families(figures)
        if "patterns" in figures:
            yield from pattern_families(figures["server"], figures["patterns"])
        if "pattern_worker" in figures:
            yield from pattern_worker_families(figures["pattern_worker"])
        if "queues" in figures:
            yield from _queue_families(figures)
        elif "workers" in figures:  # a job worker's own (Worker.stats())
            yield from _worker_families(figures["workers"])
        data = figures.get("data")
        if isinstance(data, dict) and "functions" in data:  # a cluster's data server
            yield from _server_families(data)


def _server_families(figures: dict[str, Any]) -> Iterator[Any]:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    server, functions = figures["server"], figures["functions"]
    labels = ["server", "function"]
    families = {
        "calls": CounterMetricFamily("undertow_calls", "Calls answered", labels=labels),
        "errors": CounterMetricFamily(
            "undertow_call_errors", "Calls answered with an error", labels=labels
        ),
        "bytes_in": CounterMetricFamily(
            "undertow_received_bytes", "Bytes of the calls' messages", labels=labels
        ),
        "bytes_out": CounterMetricFamily(
            "undertow_sent_bytes", "Bytes of the answers sent", labels=labels
        ),
        "output_lines": CounterMetricFamily(
            "undertow_output_lines", "Lines of output sent to callers", labels=labels
        ),
    }
    seconds = HistogramMetricFamily(
        "undertow_call_seconds", "Time from a call's arrival to its answer", labels=labels
    )
    for function, stats in functions.items():
        for key, family in families.items():
            family.add_metric([server, function], stats[key])
        buckets = [(_bound(bound), count) for bound, count in stats["buckets"].items()]
        seconds.add_metric([server, function], buckets, sum_value=stats["seconds"])
    yield from families.values()
    yield seconds
    in_flight = GaugeMetricFamily(
        "undertow_calls_in_flight", "Calls received, not answered yet", labels=["server"]
    )
    in_flight.add_metric([server], figures["calls_in_flight"])
    yield in_flight
    yield from _data_families(server, figures["data"], GaugeMetricFamily)


def _queue_families(figures: dict[str, Any]) -> Iterator[Any]:
    """A job backend's queues and workers."""
    from prometheus_client.core import GaugeMetricFamily

    length = GaugeMetricFamily(
        "undertow_queue_length", "Entries a queue holds (waiting to be claimed)", labels=["queue"]
    )
    jobs = GaugeMetricFamily(
        "undertow_jobs", "Stored jobs, by queue and state", labels=["queue", "state"]
    )
    serving = GaugeMetricFamily(
        "undertow_queue_workers", "Live workers taking a queue's jobs", labels=["queue"]
    )
    workers = figures["workers"]
    for name, queue in figures["queues"].items():
        length.add_metric([name], queue["length"])
        for state, count in queue["states"].items():
            jobs.add_metric([name, state], count)
        serving.add_metric([name], sum(name in w["queues"] for w in workers.values()))
    yield from (length, jobs, serving)
    yield from _worker_families(workers)


def _worker_families(workers: dict[str, dict[str, Any]]) -> Iterator[Any]:
    """Each job worker's slots, jobs running, finished and failed."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    per_worker: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "concurrency": GaugeMetricFamily(
            "undertow_worker_slots", "Jobs a worker may run at once", labels=["worker"]
        ),
        "running": GaugeMetricFamily(
            "undertow_worker_running", "Jobs a worker runs now", labels=["worker"]
        ),
        "done": CounterMetricFamily(
            "undertow_worker_jobs", "Jobs a worker finished since it started", labels=["worker"]
        ),
        "failed": CounterMetricFamily(
            "undertow_worker_failed_jobs", "Jobs a worker finished with an error", labels=["worker"]
        ),
    }
    for name, worker in workers.items():
        for key, family in per_worker.items():
            family.add_metric([name], worker[key])
    yield from per_worker.values()


def _bound(bound: str) -> str:
    return "+Inf" if bound == "inf" else bound


def _data_families(server: str, data: dict[str, Any], gauge: Any) -> Iterator[Any]:
    """The data store's figures: bytes and objects, in memory and spilled to disk."""
    if not data:
        return
    for what, help_text in (("bytes", "Bytes of kept values"), ("objects", "Kept values")):
        family = gauge(f"undertow_data_{what}", help_text, labels=["server", "where"])
        for where in ("memory", "disk"):
            family.add_metric([server, where], data[f"{what}_{where}"])
        yield family


def prometheus_text(stats: Callable[[], dict[str, Any]]) -> bytes:
    """The server's figures in Prometheus' text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats))
    return bytes(generate_latest(registry))


class MetricsServer:
    """A server's ``/metrics`` on a port of its own (:func:`serve_metrics`)."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd, self._thread = httpd, thread
        host, port = httpd.server_address[:2]
        #: where Prometheus scrapes it
        self.url = f"http://{host}:{port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)


def serve_metrics(server: Any, port: int = 0, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``server.stats()`` for Prometheus at ``http://host:port/metrics`` (port 0: a
    free one; ``.url`` says where) in a thread of its own, on 127.0.0.1 unless told
    otherwise (the figures name functions and queues). ``server``: a
    :class:`~undertow.Server`, a :class:`~undertow.Cluster` or a job queue, anything with
    ``stats()`` in their shape. ``close()`` stops it. A server's own figures are also at
    ``/metrics`` on its HTTP port."""
    stats = server.stats
    from prometheus_client import CollectorRegistry, start_http_server

    if isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"a metrics port is a number from 0 to 65535, not {port!r}")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats))
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
    return MetricsServer(httpd, thread)
