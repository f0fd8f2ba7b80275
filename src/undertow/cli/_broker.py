"""``undertow broker``: a Redis server set up for the job queue, durable by default.

It runs ``redis-server`` in the foreground (this process becomes it, so signals reach it)
with its files in a directory of its own: an append-only file synced before each write is
acknowledged (``appendfsync always``: a job the queue acknowledged survives a crash of the
broker, or of its machine), no RDB snapshots. Beyond loopback it requires a password, made
on first use and kept in that directory (mode 0600); the configuration file that carries it
is private too, so the password never shows in ``ps``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import click

from undertow._util import is_loopback
from undertow.config import home

__all__ = ["run_broker"]

_FSYNC = ("always", "everysec")


def _private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user alone."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


def _password(directory: Path) -> str:
    path = directory / "password"
    if not path.exists():
        _private_file(path, secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def broker_config(directory: Path, *, bind: str, port: int, fsync: str) -> tuple[Path, str]:
    """Write the server's configuration in ``directory``; its path and the URL clients use
    (the password, if any, shown as ``****``)."""
    if fsync not in _FSYNC:
        raise click.BadParameter(f"{fsync!r}: use one of {_FSYNC}", param_hint="--fsync")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # its append-only files hold every job's payload and result
    lines = [
        f"bind {bind}",
        f"port {port}",
        f"dir {directory}",
        "appendonly yes",
        f"appendfsync {fsync}",
        'save ""',
    ]
    auth = ""
    if not is_loopback(bind):
        lines.append(f"requirepass {_password(directory)}")
        auth = ":****@"
    path = directory / "redis.conf"
    _private_file(path, "\n".join(lines) + "\n")
    host = f"[{bind}]" if ":" in bind else bind
    return path, f"redis://{auth}{host}:{port}/0"


def run_broker(*, bind: str, port: int, directory: str | None, fsync: str) -> None:
    """Become redis-server, configured for the job queue."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise click.ClickException(
            "redis-server is not installed: install it (Debian: apt install redis-server; "
            "macOS: brew install redis), or use the embedded SQLite backend"
        )
    where = Path(directory) if directory else home() / "broker"
    config, url = broker_config(where, bind=bind, port=port, fsync=fsync)
    click.echo(f"undertow: broker on {url} (append-only, fsync {fsync}), files in {where}")
    if "****" in url:
        click.echo(f"undertow: its password is in {where / 'password'}; clients put it in the URL")
    click.echo(f"undertow: set UNDERTOW_BACKEND={url.replace(':****@', ':PASSWORD@')}")
    os.execv(binary, [binary, str(config)])  # noqa: S606 - redis-server, found on PATH
