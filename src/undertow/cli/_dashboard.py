"""``undertow dashboard``: the live page of the cluster, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from undertow.errors import UndertowError

__all__ = ["dashboard"]


@click.command()
@click.option(
    "--backend",
    default=None,
    help="Backend URL (default: $UNDERTOW_BACKEND, else ~/.undertow/cluster.db).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=8787,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: a free one).",
)
@click.option(
    "--token",
    default=None,
    envvar="UNDERTOW_DASHBOARD_TOKEN",
    help="What the page must be given ($UNDERTOW_DASHBOARD_TOKEN; default: a new random one).",
)
@click.option(
    "--expose",
    is_flag=True,
    help="Allow a --host beyond loopback (plain HTTP: prefer an SSH tunnel).",
)
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Another name the page is reached by (its Host header is checked; repeatable).",
)
def dashboard(**options: Any) -> None:
    """Serve a live page of the cluster: services, workers, queues, jobs, data, latency.

    Prints one line with the URL to open, token included (open it once: it becomes a
    cookie). Beyond 127.0.0.1 it needs --expose; the token is always required.

    \b
        undertow dashboard
        undertow dashboard --backend redis://queue-host:6379/0 --port 0
    """
    from undertow.dashboard import serve

    try:
        handle = serve(**options)
    except (UndertowError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"undertow: dashboard at {handle.url}", nl=True)
    try:
        stop.wait()
    finally:
        handle.close()
