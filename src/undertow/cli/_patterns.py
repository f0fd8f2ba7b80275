"""The patterns from the shell: ``undertow master-worker``, ``undertow gateway``, and the
patterns section of
``undertow status`` (what each master, stage and sink has done)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from undertow.cluster import Instance
from undertow.errors import UndertowError
from undertow.patterns import stats

__all__ = ["pattern_rows", "render_patterns", "run_gateway", "run_master_worker"]

#: seconds each server has to give its counters
STATS_TIMEOUT = 3.0


def pattern_rows(instances: list[Instance], backend: str | None) -> list[dict[str, Any]]:
    """One row per instance that took part in a pattern (messages received, or a master)."""
    rows = []
    for instance in instances:
        try:
            counters = stats(instance.address, timeout=STATS_TIMEOUT, registry=backend)
        except UndertowError as exc:  # gone since it was listed, or too old to answer
            rows.append({"service": instance.service, "address": instance.address,
                         "error": str(exc)})  # fmt: skip
            continue
        if counters.get("received") or "pending" in counters:
            rows.append({"service": instance.service, "address": instance.address, **counters})
    return rows


def _latency(row: dict[str, Any]) -> str:
    parts = [
        f"{name} {p.get('p50', 0):g}/{p.get('p99', 0):g}"
        for name, p in sorted(row.get("latency_ms", {}).items())
    ]
    return ", ".join(parts) or "-"


def render_patterns(
    rows: list[dict[str, Any]], render: Callable[[list[str], list[list[str]]], str]
) -> str:
    """The rows as a table (``render``: the table maker of ``undertow status``)."""
    if not rows:
        return "patterns: no master, stage or sink has passed messages on yet"
    columns = ["SERVICE", "RECEIVED", "ANSWERED", "FAILED", "DROPPED", "IN FLIGHT", "WAITING",
               "WORKERS", "LATENCY MS p50/p99"]  # fmt: skip
    lines = []
    for row in rows:
        if "error" in row:
            lines.append([row["service"], "?", "?", "?", "?", "?", "?", "?", row["error"][:60]])
            continue
        lines.append([
            row["service"],
            str(row["received"]),
            str(row["answered"]),
            str(row["failed"]),
            str(row["dropped"]),
            str(row["in_flight"]),
            str(row.get("pending", "-")),
            str(len(row["workers"])) if "workers" in row else "-",
            _latency(row),
        ])  # fmt: skip
    return "patterns\n" + render(columns, lines)


def run_master_worker(
    master: str,
    modules: tuple[str, ...],
    functions: tuple[str, ...],
    slots: int,
    backend: str | None,
    token: str | None,
    metrics_port: int | None = None,
) -> int:
    """Serve ``master``'s messages with the functions given until SIGINT or SIGTERM (with
    ``metrics_port``, its figures for Prometheus at /metrics on that port of 127.0.0.1)."""
    import signal

    import click

    from undertow.cli._worker import collect_functions
    from undertow.patterns import MasterWorker
    from undertow.rpc import serve_metrics

    found = collect_functions(functions, modules)
    if not found:
        raise click.UsageError("give the functions to serve: --module MODULE or --function ...")
    worker = MasterWorker(master, found, slots=slots, token=token, registry=backend)
    signal.signal(signal.SIGTERM, lambda *_: worker.request_stop())
    served = None if metrics_port is None else serve_metrics(worker, port=metrics_port)
    where = "" if served is None else f", metrics {served.url}"
    click.echo(f"undertow: worker of master {master!r} serving {', '.join(sorted(found))}{where}")
    try:
        worker.run()
    finally:
        if served is not None:
            served.close()
    return 0


def run_gateway(
    name: str, stages: tuple[str, ...], http: int, host: str, backend: str | None
) -> int:
    """Serve an HTTP gateway in front of ``stages`` (one: a master's or a service's function;
    several: a pipeline) until SIGINT or SIGTERM; its last word on start is its HTTP URL."""
    import signal
    import threading

    import click

    from undertow.patterns import Gateway, Pipeline

    gateway = Gateway(name, Pipeline(*stages))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    url = gateway.start(http_port=http, host=host, backend=backend)
    click.echo(f"undertow: gateway {name!r} to {' -> '.join(stages)} serving on {url}")
    try:
        stop.wait()
    finally:
        gateway.stop()
    return 0
