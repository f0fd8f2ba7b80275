"""Job-queue benchmark: undertow's durable queue (on Redis and on SQLite) against Celery, RQ and
Dask distributed, measured in the same run on this machine.

Run from the repository root::

    python -m bench.jobs                 # full run (~15-20 minutes on 2 busy cores)
    python -m bench.jobs --quick         # 1,000 jobs a run, fewer samples
    python -m bench.jobs --rounds 5 --out /tmp/jobs.json

What it measures, systems interleaved round by round (README.md, "Job queues", says how):
no-op jobs per second end to end and "drain only" with 1 and 2 worker processes,
enqueue-to-start latency with an idle worker, and memory per queued job. Peers that are not
installed are left out. Results go to ``bench/results_jobs.json``; a markdown summary to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import _jobs_memory
from bench._jobs_procs import Children, redis_server
from bench._jobs_report import machine_info, summarise, summary, targets
from bench._jobs_systems import PEER_MODULES, SYSTEMS, System, flush_redis, make_system

DEFAULT_OUT = Path(__file__).resolve().parent / "results_jobs.json"
#: the longest a measurement may take before it counts as failed (seconds, at least)
RUN_TIMEOUT = 180.0
SAMPLE_TIMEOUT = 30.0
WARMUP_JOBS = 50
LATENCY_WARMUP = 3


@dataclass(frozen=True)
class Plan:
    """How much each measurement does."""

    jobs: int
    rounds: int
    #: latency samples per system and round, each after an idle pause of up to latency_gap s
    latency_samples: int
    latency_gap: float
    memory_jobs: int

    @classmethod
    def make(cls, quick: bool, rounds: int | None) -> Plan:
        if quick:
            return cls(1000, rounds or 3, 20, 0.2, 10_000)
        return cls(5000, rounds or 3, 100, 0.2, 100_000)


def available_systems(wanted: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The systems to measure, and why each other one is left out."""
    skipped: dict[str, str] = {}
    redis_ok = shutil.which("redis-server") is not None and _importable("redis")
    chosen = []
    for name in wanted or SYSTEMS:
        module = PEER_MODULES.get(name)
        if module is not None and not _importable(module):
            skipped[name] = f"{module} is not installed"
        elif name != "undertow-sqlite" and name != "dask" and not redis_ok:
            skipped[name] = "redis-server or the redis package is missing"
        else:
            chosen.append(name)
    return chosen, skipped


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- one system, one worker count ----------------------------------------------------------------


def _timed_batch(system: System, n: int, *, paused: bool) -> dict[str, float]:
    """Queue ``n`` jobs and wait for every result. End to end: the clock runs from the first
    submit to the last result seen (each through the system's API), workers running. Paused
    (drain only): the workers are frozen while the jobs are queued; the clock runs from their
    release until the store says the queue is empty and every result stored; then every
    result is read, untimed."""
    deadline = time.monotonic() + max(RUN_TIMEOUT, n / 20)
    if paused:
        system.pause()
    submitting = time.perf_counter()
    handles = system.submit_many(n)
    submitted = started = time.perf_counter()
    if paused:
        system.resume()
        system.drained(handles, deadline)
    else:
        started = submitting
        system.collect(handles, deadline)
    seconds = time.perf_counter() - started
    if paused:
        system.collect(handles, deadline)  # every result is there, and a success
    return {
        "seconds": round(seconds, 4),
        "jobs_per_s": round(n / seconds, 1),
        "submit_s": round(submitted - submitting, 4),
        "submit_jobs_per_s": round(n / (submitted - submitting), 1),
    }


def _latencies(system: System, plan: Plan, rng: random.Random) -> list[float]:
    """Enqueue-to-start of single jobs (ms), each after an idle pause drawn from
    [0, latency_gap] s, after a few untimed ones."""
    for _ in range(LATENCY_WARMUP):
        system.latency(time.monotonic() + SAMPLE_TIMEOUT)
    samples = []
    for _ in range(plan.latency_samples):
        time.sleep(rng.uniform(0.0, plan.latency_gap))  # the worker idles meanwhile
        seconds = system.latency(time.monotonic() + SAMPLE_TIMEOUT)
        samples.append(round(seconds * 1000.0, 3))
    return samples


def run_config(system: System, plan: Plan, rng: random.Random) -> dict[str, Any]:
    """Start the workers; latency (1 worker only), end to end, drain only; stop them."""
    found: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        system.start()
        found["start_s"] = round(time.perf_counter() - started, 3)
        if system.workers == 1:
            found["latency_ms"] = _latencies(system, plan, rng)
        system.collect(system.submit_many(WARMUP_JOBS), time.monotonic() + RUN_TIMEOUT)
        found["end_to_end"] = _timed_batch(system, plan.jobs, paused=False)
        found["drain"] = _timed_batch(system, plan.jobs, paused=True)
    finally:
        system.close()
    return found


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Run:
    """Where a run keeps its processes, files and figures."""

    plan: Plan
    systems: list[str]
    children: Children
    tmp: Path
    redis_url: str = ""
    raw: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None

    def attempt(self, what: dict[str, Any], step: Callable[[], Any]) -> Any:
        """Run one measurement; a failure is recorded and the run goes on without it."""
        try:
            return step()
        except Exception as exc:
            assert self.errors is not None
            self.errors.append({**what, "error": f"{type(exc).__name__}: {exc}"})
            print(f"  failed: {what}: {exc}", file=sys.stderr, flush=True)
            traceback.print_exc(file=sys.stderr)
            return None


def _round(run: Run, index: int, rng: random.Random) -> None:
    assert run.raw is not None
    order = run.systems[index % len(run.systems) :] + run.systems[: index % len(run.systems)]
    for name in order:
        for workers in (1, 2):
            print(f"round {index + 1}: {name}, {workers} worker(s)", file=sys.stderr, flush=True)

            def step(name: str = name, workers: int = workers) -> dict[str, Any]:
                system = make_system(
                    name, workers, run.children, redis_url=run.redis_url, tmp=run.tmp
                )
                return run_config(system, run.plan, rng)

            what = {"round": index + 1, "system": name, "workers": workers}
            found = run.attempt(what, step)
            if found is not None:
                run.raw.setdefault(name, {}).setdefault(str(workers), []).append(found)
    for name in (s for s in order if s in _jobs_memory.SYSTEMS):
        print(f"round {index + 1}: memory of {name}", file=sys.stderr, flush=True)

        def measure(name: str = name) -> dict[str, Any]:
            return _memory(run, name)

        found = run.attempt({"round": index + 1, "system": name, "memory": True}, measure)
        if found is not None:
            run.raw.setdefault(name, {}).setdefault("memory", []).append(found)


def _memory(run: Run, name: str) -> dict[str, Any]:
    n = run.plan.memory_jobs // _jobs_memory.SYSTEMS[name]
    if name == "undertow-sqlite":
        path = run.tmp / f"memory-{time.monotonic_ns()}.db"
        try:
            return _jobs_memory.measure(name, f"sqlite://{path}", n)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    try:
        return _jobs_memory.measure(name, run.redis_url, n)
    finally:
        flush_redis(run.redis_url)


def run_all(plan: Plan, systems: list[str], skipped: dict[str, str]) -> dict[str, Any]:
    """Every round of every measurement; the results (raw figures, summaries, targets)."""
    began = time.perf_counter()
    results: dict[str, Any] = {"config": asdict(plan), "skipped": skipped}
    children = Children()
    try:
        with tempfile.TemporaryDirectory(prefix="undertow-bench-jobs-") as tmp:
            run = Run(plan, systems, children, Path(tmp), raw={}, errors=[])
            os.environ["UNDERTOW_HOME"] = str(run.tmp / "home")
            redis_needed = any(s not in ("undertow-sqlite", "dask") for s in systems)
            with _maybe_redis(children, run.tmp, redis_needed) as url:
                run.redis_url = url
                results["machine"] = machine_info(systems, url)
                rng = random.Random(15)
                for index in range(plan.rounds):
                    _round(run, index, rng)
    finally:
        children.stop_all()
    results["raw"], results["errors"] = run.raw, run.errors
    results.update(summarise(run.raw or {}))
    results["targets"] = targets(results)
    results["all_targets_pass"] = all(t["pass"] for t in results["targets"])
    results["machine"]["loadavg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.perf_counter() - began, 1)
    return results


def _maybe_redis(children: Children, tmp: Path, needed: bool) -> Any:
    if not needed:
        return contextlib.nullcontext("")
    workdir = tmp / "redis"
    workdir.mkdir()
    return redis_server(children, workdir)


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, write the JSON and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 jobs a run, fewer samples")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    parser.add_argument(
        "--systems", default=None, help=f"comma-separated subset of {','.join(SYSTEMS)}"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    # Dask's workers log their lost heartbeats when the cluster closes: noise here
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    plan = Plan.make(args.quick, args.rounds)
    systems, skipped = available_systems(args.systems.split(",") if args.systems else None)
    results = run_all(plan, systems, skipped)
    results["config"]["quick"] = args.quick
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(f"\nwritten to {args.out} in {results['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
