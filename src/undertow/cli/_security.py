"""``undertow token new`` and ``undertow keygen``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from undertow.errors import UndertowError
from undertow.security import new_token
from undertow.transport import keygen, load_public

__all__ = ["keygen_command", "new_token_command"]


def new_token_command(name: str, append: str | None) -> None:
    try:
        token = new_token(name)
    except UndertowError as exc:
        raise click.ClickException(str(exc)) from None
    if append is not None:
        path = Path(append).expanduser()
        try:
            # made, or kept, readable by its owner only: it holds every user's secret
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as file:
                file.write(token + "\n")
            path.chmod(0o600)
        except OSError as exc:
            raise click.ClickException(f"cannot add the token to {path}: {exc.strerror}") from None
        click.echo(f"added a token for {name!r} to {path}", err=True)
    click.echo(token)


def keygen_command(name: str, directory: str) -> None:
    try:
        public, secret = keygen(directory, name)
    except (UndertowError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"public key file (give it to clients): {public}")
    click.echo(f"secret key file (the server's, keep it private): {secret}")
    click.echo(f"public key: {load_public(public)}")
