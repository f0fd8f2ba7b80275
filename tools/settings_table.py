"""The settings tables of docs/guide.md, made from the settings dataclasses (name, environment
variable, default, meaning), so that the guide says what the code does.

``python tools/settings_table.py`` prints the tables; ``--write`` puts them in the guide
between its two markers, and ``--check`` exits 1 when the guide's tables differ from what
the dataclasses make (tests/test_settings.py checks the same).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from undertow.config import HostSettings, ServerSettings, Settings

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
BEGIN = "<!-- settings tables: made by tools/settings_table.py --write; do not edit by hand -->"
END = "<!-- end of the settings tables -->"
#: the sections the guide documents, in its order
SECTIONS: list[type[Settings]] = [HostSettings, ServerSettings]


def default_text(value: Any) -> str:
    """A default as config.toml spells it ("unset" for None), with GiB for a round size."""
    if value is None:
        return "unset"
    if isinstance(value, bool | str):
        return f"`{json.dumps(value)}`"
    if isinstance(value, int) and value >= 2**30 and value % 2**30 == 0:
        return f"`{value}` ({value >> 30} GiB)"
    return f"`{value}`"


def table(cls: type[Settings]) -> str:
    """The markdown table of ``cls``: one row per field."""
    lines = [
        f"`[{cls.section}]`: {summary(cls)}",
        "",
        "| setting | variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        env = f"`UNDERTOW_{f.name.upper()}`" if f.metadata["env"] else "-"
        # a table cell: "|" would end it, and "<name>" would be read as an HTML tag
        doc = f.metadata["doc"].replace("|", "\\|").replace("<", "\\<")
        if not f.metadata["file"]:
            doc += " (an argument only: not read from the environment or the file)"
        lines.append(f"| `{f.name}` | {env} | {default_text(f.default)} | {doc} |")
    return "\n".join(lines)


def summary(cls: type[Settings]) -> str:
    """The first sentence of the class's docstring, in markdown."""
    text = " ".join((cls.__doc__ or "").split()).replace("``", "`")
    return text.partition(". ")[0].rstrip(".") + "."


def tables() -> str:
    """Every section's table, between the guide's markers."""
    return "\n\n".join([BEGIN, *(table(cls) for cls in SECTIONS), END])


def in_guide(text: str) -> str:
    """The tables as the guide ``text`` holds them, markers included."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{GUIDE} has no settings tables: add the lines {BEGIN!r} and {END!r}")
    return text[start : end + len(END)]


def main(argv: list[str] | None = None) -> int:
    """Print, write or check the tables; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help="put the tables in docs/guide.md")
    what.add_argument("--check", action="store_true", help="exit 1 if the guide's tables differ")
    args = parser.parse_args(argv)
    made = tables()
    if not (args.write or args.check):
        print(made)
        return 0
    text = GUIDE.read_text()
    found = in_guide(text)
    if args.check:
        if found != made:
            print(f"{GUIDE}: the settings tables are out of date; run {sys.argv[0]} --write")
            return 1
        return 0
    GUIDE.write_text(text.replace(found, made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
