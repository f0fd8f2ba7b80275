"""What a data server tells the catalog: a record for each value it keeps, gone when deleted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from undertow.data._records import DataRecord, Location
from undertow.data._store import Entry

__all__ = ["catalog_listener", "location_of", "record_of"]

log = logging.getLogger(__name__)


def location_of(form: dict[str, Any]) -> Location:
    """Where a pointer's JSON form says its value is."""
    return Location(
        protocol=form["protocol"], host=form["host"], port=form["port"], path=form["path"]
    )


def record_of(entry: Entry, form: dict[str, Any]) -> DataRecord:
    """The catalog's record of a value a data server keeps (``form``: its pointer)."""
    return DataRecord(
        key=entry.key,
        secret=entry.secret,
        type_name=entry.type_name,
        size=entry.size,
        created=entry.created,
        owner=entry.owner,
        tags=list(entry.tags),
        locations=[location_of(form)],
    )


def catalog_listener(
    record: Callable[[DataRecord], Any],
    forget: Callable[[str, Location], Any],
    forms: Callable[[Entry], list[dict[str, Any]]],
) -> Callable[[str, Entry, dict[str, Any] | None], None]:
    """A data server listener that records each value kept and forgets each one deleted,
    at every location the server offers it (``forms``), through ``record`` and ``forget``,
    which may hand the work to another thread."""

    def listener(event: str, entry: Entry, form: dict[str, Any] | None) -> None:
        if event == "put" and form is not None:
            record(record_of(entry, form))
        elif event == "delete":
            for offered in forms(entry):
                forget(entry.key, location_of(offered))

    return listener
