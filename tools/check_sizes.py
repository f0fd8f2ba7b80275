"""Size budgets of the package, checked in CI: no module over 500 lines, no function (or
method) over 50 lines, counting from its ``def`` line (decorators and docstring included) to
its last line.

Prints each breach and exits 1 if there is one; ``--report`` lists the largest modules and
functions whatever their size.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src" / "undertow"
MAX_MODULE = 500
MAX_FUNCTION = 50


def functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, lines)`` of every function in ``tree``."""
    found: list[tuple[str, int, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                end = child.end_lineno or child.lineno
                found.append((name, child.lineno, end - child.lineno + 1))
                walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def main() -> int:
    """Check every module under src/undertow; exit status 1 on a breach."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="list the largest, pass or fail")
    args = parser.parse_args()
    modules: list[tuple[int, str]] = []
    defs: list[tuple[int, str]] = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(ROOT.parent)
        modules.append((len(text.splitlines()), str(where)))
        for name, line, size in functions(ast.parse(text)):
            defs.append((size, f"{where}:{line} {name}"))
    breaches = [f"module {w}: {n} lines (max {MAX_MODULE})" for n, w in modules if n > MAX_MODULE]
    breaches += [
        f"function {w}: {n} lines (max {MAX_FUNCTION})" for n, w in defs if n > MAX_FUNCTION
    ]
    if args.report:
        for n, w in sorted(modules, reverse=True)[:10]:
            print(f"{n:5} {w}")
        for n, w in sorted(defs, reverse=True)[:15]:
            print(f"{n:5} {w}")
    for breach in breaches:
        print(breach)
    print(f"check_sizes: {len(breaches)} over budget")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
