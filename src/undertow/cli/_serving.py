"""The options of every command that serves (``undertow serve``, ``undertow data serve``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from undertow.config import HostSettings

__all__ = ["serving"]


def serving(fn: Any) -> Any:
    """The options of every command that serves: where, how it registers, its security."""
    for option in reversed(_SERVING_OPTIONS):
        fn = option(fn)
    return fn


def _default(name: str) -> str:
    """The default of the ``HostSettings`` field ``name``, as an option's help shows it."""
    (field,) = [f for f in dataclasses.fields(HostSettings) if f.name == name]
    value = field.default
    if isinstance(value, int) and value >= 2**30 and value % 2**30 == 0:
        return f"{value}, {value >> 30} GiB"
    return str(value)


# no default but None, "not given": the loader then takes the environment, the file, the default
_SERVING_OPTIONS = [
    click.option("--host", default=None, help=f"Interface to bind (default: {_default('host')})."),
    click.option(
        "--port",
        default=None,
        type=int,
        help=f"Port (default: {_default('port')}, a free one).",
    ),
    click.option(
        "--backend",
        default=None,
        help="Registry URL (default: $UNDERTOW_BACKEND, else ~/.undertow/cluster.db).",
    ),
    click.option("--name", default=None, help="Register the one service under this name."),
    click.option("--advertise", default=None, help="Host name clients should use to reach it."),
    click.option(
        "--ttl",
        default=None,
        type=float,
        help="Seconds the registry keeps an instance without a heartbeat.",
    ),
    click.option(
        "--token",
        default=None,
        help="A token callers must sign with (better: set UNDERTOW_TOKEN, which other users "
        "cannot see).",
    ),
    click.option(
        "--tokens",
        default=None,
        type=click.Path(dir_okay=False),
        help="A file of tokens callers may sign with, one per line ($UNDERTOW_TOKENS).",
    ),
    click.option(
        "--allow-anonymous", is_flag=True, help="With tokens, also serve callers without one."
    ),
    click.option(
        "--insecure",
        is_flag=True,
        help="Serve beyond loopback without tokens, or plain HTTP beyond loopback (tokens travel "
        "in clear); prints a warning.",
    ),
    click.option(
        "--curve-secret",
        default=None,
        type=click.Path(dir_okay=False),
        help="CURVE secret key file (from `undertow keygen`): encrypt every connection.",
    ),
    click.option(
        "--http",
        "http_port",
        type=int,
        default=None,
        metavar="PORT",
        help="Also serve over HTTP on this port (0: a free one); needs undertow[http].",
    ),
    click.option(
        "--metrics",
        "metrics_port",
        type=int,
        default=None,
        metavar="PORT",
        help="Serve the figures for Prometheus at /metrics on this port (0: a free one).",
    ),
    click.option(
        "--data-dir",
        default=None,
        type=click.Path(file_okay=False),
        help="Where data servers spill values, a directory per service "
        "(default: ~/.undertow/data/SERVICE).",
    ),
    click.option(
        "--memory-limit",
        default=None,
        type=int,
        help="Bytes of values each data server keeps in memory before it spills "
        f"(default: {_default('memory_limit')}).",
    ),
]
