"""Messaging-pattern benchmark: undertow's master/workers and pipeline against pylm, Ray, Dask
and raw ZeroMQ PUSH/PULL through the same topologies, measured in the same run.

Run from the repository root::

    python -m bench.patterns                 # 3 rounds, every system (~8 minutes on 2 cores)
    python -m bench.patterns --quick         # 1 round, fewer messages
    python -m bench.patterns --rounds 5 --systems undertow,raw,pylm

What each cell measures, and how each system is driven, is in ``bench/_patterns_peers.py``
(topology A: a master and 2 workers; B: 3 chained stages; 100 B and 1 MB messages, each
answered unchanged and checked). Each round measures every system once, in turn, so that a
slow minute of the machine hits them alike; the figure kept is the median of the rounds, with
the spread (lowest, highest). Every measurement runs in a fresh process (``--cell``), so that
nothing one system leaves in a process reaches the next.

The floor is measured twice at 1 MB: ``raw``, as a plain pyzmq program runs, and
``raw+malloc``, its processes given the glibc malloc thresholds undertow sets in its own
(``undertow/_util/_memory.py``: large buffers reused instead of faulted in again), so that
the comparison holds with the same help on both sides.

Targets: undertow >= 2x the best of pylm, Ray and Dask for 100-byte messages, and >= 0.8x
raw ZeroMQ for 1 MB (both floors are reported). Results go to
``bench/results_patterns.json``; a markdown table for the README to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._patterns_peers import (
    LARGE,
    SMALL,
    SYSTEMS,
    TOPOLOGIES,
    installed,
    plan,
)
from undertow._util._memory import MMAP_THRESHOLD, TRIM_THRESHOLD

DEFAULT_OUT = Path(__file__).resolve().parent / "results_patterns.json"
PEERS = ("pylm", "ray", "dask")
#: raw ZeroMQ again, its processes with the malloc thresholds undertow sets in its own
#: (``undertow._util._memory``): the floor with the same help, measured at 1 MB only
TUNED_FLOOR = "raw+malloc"


def _cell(system: str, topology: str, size: int, n: int, timeout: float) -> float | None:
    """One measurement, in a process of its own: what one system leaves in a process (Ray's
    and Dask's state, undertow's malloc settings) does not reach the next."""
    env = dict(os.environ)
    if system == TUNED_FLOOR:
        system = "raw"
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
        env["MALLOC_TRIM_THRESHOLD_"] = str(TRIM_THRESHOLD)
    args = [sys.executable, "-m", "bench._patterns_peers", "--cell",
            system, topology, str(size), str(n), str(timeout)]  # fmt: skip
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True,
                              timeout=timeout + 60, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        print(f"{system} {topology} {size}: no answer within {timeout + 60:.0f} s", file=sys.stderr)
        return None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(done.stderr[-3000:], file=sys.stderr)
        return None
    return float(lines[-1])


def with_tuned_floor(systems: list[str]) -> list[str]:
    """``systems``, with the floor measured twice: as is, and with undertow's malloc settings."""
    if "raw" not in systems:
        return systems
    at = systems.index("raw") + 1
    return [*systems[:at], TUNED_FLOOR, *systems[at:]]


def run(systems: list[str], rounds: int, quick: bool) -> dict[str, Any]:
    chosen = plan(quick)
    raw: dict[str, list[float | None]] = {}
    for r in range(rounds):
        for system in systems:
            for topology in TOPOLOGIES:
                for size in (SMALL, LARGE):
                    if system == TUNED_FLOOR and size != LARGE:
                        continue
                    n = chosen.n("raw" if system == TUNED_FLOOR else system, size)
                    value = _cell(system, topology, size, n, chosen.timeout)
                    key = f"{system} {topology} {size}"
                    raw.setdefault(key, []).append(value)
                    shown = "failed" if value is None else f"{value:,.0f} msgs/s"
                    print(f"round {r + 1}: {key}: {shown}", file=sys.stderr, flush=True)
    return raw


def summarise(raw: dict[str, list[float | None]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, values in raw.items():
        good = [v for v in values if v is not None]
        out[key] = {
            "median": statistics.median(good) if good else None,
            "low": min(good) if good else None,
            "high": max(good) if good else None,
            "runs": values,
        }
    return out


def targets(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for topology in TOPOLOGIES:
        ours = summary.get(f"undertow {topology} {SMALL}", {}).get("median")
        peers = [summary.get(f"{p} {topology} {SMALL}", {}).get("median") for p in PEERS]
        best = max((p for p in peers if p), default=None)
        if ours and best:
            ratio = round(ours / best, 2)
            found.append({"target": f"{topology}, 100 B: >= 2x the best peer",
                          "ratio": ratio, "pass": ours >= 2 * best})  # fmt: skip
        ours = summary.get(f"undertow {topology} {LARGE}", {}).get("median")
        floors = (("raw", "raw ZeroMQ"), (TUNED_FLOOR, "raw ZeroMQ, same malloc settings"))
        for system, what in floors:
            floor = summary.get(f"{system} {topology} {LARGE}", {}).get("median")
            if ours and floor:
                ratio = round(ours / floor, 2)
                found.append({"target": f"{topology}, 1 MB: >= 0.8x {what}",
                              "ratio": ratio, "pass": ours >= 0.8 * floor})  # fmt: skip
    return found


def table(summary: dict[str, dict[str, Any]], systems: list[str]) -> str:
    lines = [
        "| system | A 100 B | A 1 MB | B 100 B | B 1 MB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for system in systems:
        cells = []
        for topology in TOPOLOGIES:
            for size in (SMALL, LARGE):
                s = summary.get(f"{system} {topology} {size}", {})
                if s.get("median") is None:
                    cells.append("-")
                else:
                    cells.append(f"{s['median']:,.0f} ({s['low']:,.0f}-{s['high']:,.0f})")
        lines.append(f"| {system} | {' | '.join(cells)} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
        "python": platform.python_version(),
        "commit": commit,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, fewer messages")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; quick 1)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    missing = [s for s in systems if not installed(s)]
    for system in missing:
        print(f"{system}: left out, {SYSTEMS[system][1]} is not installed", file=sys.stderr)
    systems = with_tuned_floor([s for s in systems if s not in missing])
    rounds = args.rounds or (1 if args.quick else 3)
    began = time.monotonic()
    summary = summarise(run(systems, rounds, args.quick))
    result = {
        "machine": machine(),
        "rounds": rounds,
        "quick": args.quick,
        "seconds": round(time.monotonic() - began),
        "summary": summary,
        "targets": targets(summary),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("messages per second, median of the rounds (lowest-highest)\n")
    print(table(summary, systems))
    print()
    for t in result["targets"]:
        print(f"- {t['target']}: {t['ratio']}x, {'PASS' if t['pass'] else 'FAIL'}")
    print(f"\n{result['seconds']} s in all; {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
