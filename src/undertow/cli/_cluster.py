"""``undertow status``: the registry's live services and the job queue's live workers from
the shell."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from typing import Any

import click

from undertow.cluster import Instance, Registry
from undertow.errors import BackendError
from undertow.storage import WorkerInfo, open_backend

__all__ = [
    "PLAIN_SERVERS",
    "live_workers",
    "render_rows",
    "render_table",
    "render_workers",
    "show_status",
    "status_rows",
    "worker_rows",
]

#: what status says of the servers it cannot show
PLAIN_SERVERS = (
    "(a plain undertow.Server is not registered, so it is not listed here; list its "
    "functions with `undertow call tcp://HOST:PORT --list`)"
)


def status_rows(instances: list[Instance], now: float | None = None) -> list[dict[str, Any]]:
    """One row per live instance, for the table and for ``--json``."""
    now = time.time() if now is None else now
    rows = []
    for i in instances:
        age = now - i.heartbeat
        rows.append(
            {
                "service": i.service,
                "address": i.address,
                "addresses": list(i.addresses),
                "host": i.host,
                "pid": i.pid,
                "instance": i.id,
                "started": datetime.datetime.fromtimestamp(i.started, datetime.UTC).isoformat(),
                "uptime_s": round(now - i.started, 1),
                "last_heartbeat_s": round(age, 1),
                "ttl_s": i.ttl,
                "health": "ok" if age < i.ttl / 2 else "late",
                "security": _security(i),
                "methods": [m.name for m in i.methods],
            }
        )
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table, with the instance count of each service."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["service"]] = counts.get(row["service"], 0) + 1
    columns = [
        "SERVICE",
        "INSTANCES",
        "ADDRESS",
        "HOST",
        "PID",
        "UPTIME",
        "HEARTBEAT",
        "HEALTH",
        "SECURITY",
    ]
    lines = [
        [
            row["service"],
            str(counts[row["service"]]),
            row["address"],
            row["host"],
            str(row["pid"]),
            _duration(row["uptime_s"]),
            f"{row['last_heartbeat_s']:.1f}s ago",
            row["health"],
            row["security"],
        ]
        for row in rows
    ]
    return render_rows(columns, lines)


def render_rows(columns: list[str], lines: list[list[str]]) -> str:
    """Columns and lines of text as an aligned table."""
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out += [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    return "\n".join(out)


def _security(instance: Instance) -> str:
    """What protects the instance: ``tokens``, ``curve``, both, or ``none``."""
    parts = [
        name
        for name, on in (("tokens", instance.authenticates), ("curve", bool(instance.curve_key)))
        if on
    ]
    return "+".join(parts) or "none"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def show_status(backend: str | None, as_json: bool) -> None:
    """Print the live services of the registry, then the job queue's live workers."""
    from undertow.cli._patterns import pattern_rows, render_patterns

    with Registry(backend) as registry:
        instances = registry.all_instances()
        rows = status_rows(instances)
        url = registry.url
    patterns = pattern_rows(instances, backend)
    try:
        workers: list[dict[str, Any]] | None = worker_rows(live_workers(backend))
    except BackendError as exc:  # the services are shown; the workers are not known
        workers, unknown = None, str(exc)
    if as_json:
        found = {"backend": url, "instances": rows, "workers": workers, "patterns": patterns}
        click.echo(json.dumps(found, indent=2))
        return
    if rows:
        click.echo(f"registry {url}")
        click.echo(render_table(rows))
        click.echo(PLAIN_SERVERS, err=True)  # a hint for people, kept out of the table
    else:
        click.echo(f"registry {url}: no live services\n{PLAIN_SERVERS}")
    click.echo(
        "\n" + (render_workers(workers) if workers is not None else f"workers: unknown ({unknown})")
    )
    click.echo("\n" + render_patterns(patterns, render_rows))


def live_workers(backend: str | None, timeout: float = 10.0) -> list[WorkerInfo]:
    """The job queue's workers whose last beat is within their ttl, by name."""

    async def read() -> list[WorkerInfo]:
        store = open_backend(backend)
        try:
            async with asyncio.timeout(timeout):
                return await store.workers()
        except TimeoutError:
            raise BackendError(f"backend {store.url} did not answer within {timeout:g} s") from None
        finally:
            await store.close()

    return asyncio.run(read())


def worker_rows(found: list[WorkerInfo], now: float | None = None) -> list[dict[str, Any]]:
    """One row per live worker, for the table and for ``--json``."""
    now = time.time() if now is None else now
    return [
        {
            "name": w.name,
            "host": w.host,
            "pid": w.pid,
            "queues": list(w.queues),
            "concurrency": w.concurrency,
            "running": w.running,
            "done": w.done,
            "failed": w.failed,
            "started": datetime.datetime.fromtimestamp(w.started, datetime.UTC).isoformat(
                timespec="seconds"
            )
            if w.started
            else None,
            "last_beat_s": round(now - w.beat, 1),
            "ttl_s": w.ttl,
        }
        for w in found
    ]


def render_workers(rows: list[dict[str, Any]]) -> str:
    """The workers section of ``undertow status``."""
    if not rows:
        return "workers: none live (start one with `undertow worker`)"
    columns = ["WORKER", "HOST", "QUEUES", "CONCURRENCY", "RUNNING", "DONE", "FAILED", "BEAT"]
    lines = [
        [
            row["name"],
            row["host"],
            ",".join(row["queues"]),
            str(row["concurrency"]),
            str(row["running"]),
            str(row["done"]),
            str(row["failed"]),
            f"{row['last_beat_s']:.1f}s ago",
        ]
        for row in rows
    ]
    return "workers\n" + render_rows(columns, lines)
