"""``undertow config show`` and ``undertow config path``: the settings as a process started
here would see them, and where each value comes from."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from undertow.cli._cluster import render_rows
from undertow.config import SettingRow, config_file, effective_settings
from undertow.errors import ConfigError

__all__ = ["render_settings", "show_path", "show_settings", "shown_value"]


def shown_value(value: Any) -> str:
    """A value as config.toml would spell it: strings quoted, true/false; "unset" for None,
    and a hidden secret as ``***``."""
    if value is None:
        return "unset"
    if value == "***" or (isinstance(value, int | float) and not isinstance(value, bool)):
        return str(value)
    return json.dumps(value)


def render_settings(rows: list[SettingRow]) -> str:
    """One line per setting (name, value, source), under a ``[section]`` line of its own."""
    lines: list[list[str]] = []
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append([f"[{section}]", "", ""])
        lines.append([f"  {row.name}", shown_value(row.value), row.source])
    table = render_rows(["", "", ""], lines).splitlines()[1:]
    # a blank line before each section but the first
    return "\n".join(
        ("\n" if line.startswith("[") and n else "") + line for n, line in enumerate(table)
    )


def show_settings(as_json: bool) -> None:
    """Print every setting's effective value and its source; a bad value is a clean error."""
    try:
        rows = effective_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
        return
    path = config_file()
    click.echo(f"settings file: {path}" + ("" if path.is_file() else " (no such file)"))
    click.echo(render_settings(rows))


def show_path() -> None:
    """Print the settings file's path (on stderr, a word when it does not exist yet)."""
    path = config_file()
    click.echo(str(path))
    if not path.is_file():
        click.echo("(it does not exist yet: every setting has its default)", err=True)
