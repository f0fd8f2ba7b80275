"""``undertow data ls``: the data catalog from the shell, without its secrets."""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from undertow.cli._cluster import render_rows
from undertow.cluster import DataRecord, Registry

__all__ = ["data_rows", "list_data"]


def data_rows(records: list[DataRecord]) -> list[dict[str, Any]]:
    """One row per value, secret left out."""
    return [
        {
            "key": r.key,
            "type": r.type_name,
            "size": r.size,
            "owner": r.owner,
            "tags": list(r.tags),
            "created": datetime.datetime.fromtimestamp(r.created, datetime.UTC).isoformat(
                timespec="seconds"
            ),
            "locations": [location.url for location in r.locations],
        }
        for r in records
    ]


def list_data(
    tags: list[str], owner: str | None, type_name: str | None, backend: str | None, as_json: bool
) -> None:
    """Print the catalog's values that match, oldest first."""
    with Registry(backend) as registry:
        rows = data_rows(registry.find_data(tags=tags, owner=owner, type_name=type_name))
        url = registry.url
    if as_json:
        click.echo(json.dumps({"backend": url, "data": rows}, indent=2))
        return
    if not rows:
        click.echo(f"registry {url}: no data" + (" matches" if tags or owner or type_name else ""))
        return
    click.echo(f"registry {url}")
    columns = ["KEY", "TYPE", "SIZE", "OWNER", "TAGS", "CREATED", "LOCATION"]
    lines = [
        [
            row["key"],
            row["type"],
            f"{row['size']:,}",
            row["owner"],
            ",".join(row["tags"]),
            row["created"],
            " ".join(row["locations"]),
        ]
        for row in rows
    ]
    click.echo(render_rows(columns, lines))
