"""Capacity model of one Redis: what each operation costs it, and how many workers and jobs a
second it carries, measured with undertow's own code against a redis-server of our own.

Run from the repository root::

    python -m bench.capacity                 # 3 runs: per-operation costs, then the ramp
    python -m bench.capacity --quick         # a smoke run: small counts, one small step
    python -m bench.capacity --runs 1 --out /tmp/capacity.json
    python -m bench.capacity --report bench/results_capacity.json   # its summary again

Per operation (``bench._capacity_costs``): the Redis commands of a job's life, a worker's
heartbeat, an idle worker's second, a service's registration and heartbeat, a catalog write,
and the memory of a queued job. The ramp (``bench._capacity_load``): 1,000 real workers in 4
processes against the same Redis, a submitter, a probe timing PINGs; then more workers,
shorter heartbeat intervals, more jobs a second. Last, saturation
(``bench._capacity_saturate``): heartbeats, idle claims and submits replayed from a light
client until Redis's core is full. Results go to ``bench/results_capacity.json``;
a markdown summary to stdout. docs/capacity.md reads the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from bench._capacity_costs import all_costs
from bench._capacity_load import Step, run_step
from bench._capacity_report import summary
from bench._capacity_saturate import saturation
from bench._jobs_procs import Children, redis_server
from bench._jobs_report import machine_info

DEFAULT_OUT = Path(__file__).resolve().parent / "results_capacity.json"
#: connections Redis accepts (each worker holds 3-4: its commands, pub/sub, inbox)
MAXCLIENTS = 16000


@dataclass(frozen=True)
class Plan:
    """How much a run does."""

    runs: int
    #: operations counted per per-operation figure
    ops: int
    idle_s: float
    memory_jobs: int
    steps: tuple[Step, ...]
    #: seconds each operation is replayed to saturate Redis
    saturate_s: float = 5.0

    @classmethod
    def make(cls, quick: bool, runs: int | None) -> Plan:
        if quick:
            step = Step("smoke", workers=40, processes=2, lease=3.0, rate=50.0, window=3.0)
            return cls(runs or 1, 50, 1.0, 1000, (step,), saturate_s=0.5)
        return cls(runs or 3, 500, 30.0, 10_000, RAMP)


#: the ramp: 1,000 workers idle, then with jobs; shorter heartbeats; more workers; batches;
#: then two workers of 4 slots fed by batches
RAMP = (
    Step("idle-1000", workers=1000, processes=4, lease=30.0, rate=0.0, window=15.0),
    Step("jobs-250", workers=1000, processes=4, lease=30.0, rate=250.0, window=15.0),
    Step("jobs-500", workers=1000, processes=4, lease=30.0, rate=500.0, window=15.0),
    Step("jobs-1000", workers=1000, processes=4, lease=30.0, rate=1000.0, window=15.0),
    Step("jobs-2000", workers=1000, processes=4, lease=30.0, rate=2000.0, window=15.0),
    Step("beat-1s-idle", workers=1000, processes=4, lease=3.0, rate=0.0, window=15.0),
    Step("beat-0.3s-idle", workers=1000, processes=4, lease=0.9, rate=0.0, window=15.0),
    Step("idle-2000", workers=2000, processes=8, lease=30.0, rate=0.0, window=15.0),
    Step("batch-1000", workers=1000, processes=4, lease=30.0, rate=1000.0, window=15.0, batch=True),
    # the batch path alone, Redis's cost per job without 1,000 idle workers around it
    Step("fat-2x4-map-4000", 2, 2, lease=30.0, rate=4000.0, window=15.0, batch=True, concurrency=4),
)


def _attempt(errors: list[dict[str, Any]], what: str, step: Any) -> Any:
    """Run one measurement; a failure is recorded and the run goes on without it."""
    try:
        return step()
    except Exception as exc:
        errors.append({"what": what, "error": f"{type(exc).__name__}: {exc}"})
        print(f"  failed: {what}: {exc}", file=sys.stderr, flush=True)
        traceback.print_exc(file=sys.stderr)
        return None


def one_run(plan: Plan, url: str, children: Children, tmp: Path, errors: list[Any]) -> Any:
    """The per-operation costs, then each step of the ramp."""
    print("per-operation costs", file=sys.stderr, flush=True)
    costs = _attempt(
        errors,
        "costs",
        lambda: all_costs(url, n=plan.ops, idle_s=plan.idle_s, memory_jobs=plan.memory_jobs),
    )
    steps = []
    for step in plan.steps:
        print(f"step {step.name}", file=sys.stderr, flush=True)
        found = _attempt(errors, step.name, lambda s=step: run_step(s, url, children, tmp))
        if found is not None:
            steps.append(found)
            print(f"  {json.dumps(found)}", file=sys.stderr, flush=True)
    print("saturation", file=sys.stderr, flush=True)  # (last: it empties the database)
    saturated = _attempt(errors, "saturation", lambda: saturation(url, plan.saturate_s))
    return {"costs": costs, "steps": steps, "saturation": saturated}


def _machine(url: str) -> dict[str, Any]:
    info = machine_info(["undertow-redis"], url)
    info["cpu_model"] = _cpu_model()
    info["note"] = (
        "redis-server, the simulated workers, the submitter and the probe share this "
        "machine's CPUs; compare redis_cpu_cores with simulator_cpu_cores"
    )
    info.pop("systems", None)
    return info


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run_all(plan: Plan) -> dict[str, Any]:
    began = time.perf_counter()
    results: dict[str, Any] = {"runs": [], "errors": []}
    children = Children()
    try:
        with tempfile.TemporaryDirectory(prefix="undertow-bench-capacity-") as tmp:
            os.environ["UNDERTOW_HOME"] = str(Path(tmp) / "home")
            (Path(tmp) / "redis").mkdir()
            with redis_server(children, Path(tmp) / "redis") as url:
                with redis.Redis.from_url(url) as client:
                    client.config_set("maxclients", MAXCLIENTS)
                results["machine"] = _machine(url)
                for index in range(plan.runs):
                    print(f"run {index + 1} of {plan.runs}", file=sys.stderr, flush=True)
                    found = one_run(plan, url, children, Path(tmp), results["errors"])
                    results["runs"].append({"run": index + 1, **found})
    finally:
        children.stop_all()
    results["machine"]["loadavg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.perf_counter() - began, 1)
    results["medians"] = _medians(results["runs"])
    return results


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over runs of each step's main figures, by step."""
    by_step: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for found in run["steps"]:
            by_step.setdefault(found["step"]["name"], []).append(found)
    keys = ("jobs_per_s", "redis_cpu_cores", "simulator_cpu_cores", "commands_per_s")
    out: dict[str, Any] = {}
    for name, found in by_step.items():
        out[name] = {k: statistics.median(f[k] for f in found) for k in keys}
        out[name]["heartbeats_per_s"] = statistics.median(f["heartbeats"]["per_s"] for f in found)
        out[name]["probe_p99_ms"] = statistics.median(f["probe_ping_ms"]["p99"] for f in found)
    return out


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, write the JSON and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    parser.add_argument("--runs", type=int, default=None, help="runs (default 3; quick 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    parser.add_argument("--report", type=Path, help="print the summary of this JSON; run nothing")
    args = parser.parse_args(argv)
    if args.report is not None:
        print(summary(json.loads(args.report.read_text())))
        return 0
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    plan = Plan.make(args.quick, args.runs)
    results = run_all(plan)
    results["config"] = {"quick": args.quick, "runs": plan.runs, "ops": plan.ops}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(f"\nwritten to {args.out} in {results['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
