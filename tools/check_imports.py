"""Import rules that import-linter's contracts do not state, checked in CI.

1. No import circles between the package's modules (lazy imports inside functions count:
   they are circles that were hidden, not removed).
2. No import of another package's private module: ``undertow.a._x`` may be imported by the
   modules of ``undertow.a`` (and below) only; everyone else imports the names that
   ``undertow.a`` exports.

Prints each breach and exits 1 if there is one, else prints the counts and exits 0.
Run: ``python tools/check_imports.py`` (from the repository root, with undertow installed).
"""

from __future__ import annotations

import sys

import grimp

PACKAGE = "undertow"


def circles(graph: grimp.ImportGraph) -> list[str]:
    """Each import ``a -> b`` between the package's modules where ``b`` leads back to ``a``,
    with the way back."""
    found = []
    for importer in sorted(graph.modules):
        if not importer.startswith(PACKAGE + "."):
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if not imported.startswith(PACKAGE + "."):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                found.append(f"{importer} -> " + " -> ".join(back))
    return found


def private_owners(module: str) -> list[str]:
    """The packages that must contain an importer of ``module``: the parent of each private
    (``_name``) part of its path."""
    parts = module.split(".")
    return [
        ".".join(parts[:i])
        for i, part in enumerate(parts[1:], start=1)
        if part.startswith("_") and not part.startswith("__")
    ]


def private_breaches(graph: grimp.ImportGraph) -> list[str]:
    """Imports of a private module by a module outside the package that owns it."""
    found = []
    for importer in sorted(graph.modules):
        if importer.split(".")[0] != PACKAGE:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            for owner in private_owners(imported):
                if importer == owner or importer.startswith(owner + "."):
                    continue
                lines = graph.get_import_details(importer=importer, imported=imported)
                where = ", ".join(str(d["line_number"]) for d in lines) or "?"
                found.append(f"{importer} (line {where}) imports {imported}, private to {owner}")
                break
    return found


def main() -> int:
    """Check, print, and say by the exit status whether the rules hold."""
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    groups = circles(graph)
    breaches = private_breaches(graph)
    for circle in groups:
        print("import circle:", circle)
    for breach in breaches:
        print("private import:", breach)
    print(
        f"check_imports: {len(groups)} imports in circles, "
        f"{len(breaches)} cross-package private imports"
    )
    return 1 if groups or breaches else 0


if __name__ == "__main__":
    sys.exit(main())
