"""The job-queue benchmark's report: machine info, summaries of the raw figures (median and
spread over rounds), the targets with pass flags, and the markdown tables."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sqlite3
import statistics
import subprocess
from typing import Any

from bench._jobs_procs import REPO
from bench._jobs_systems import CONCURRENCY, LABELS, SYSTEMS

TARGET_REDIS_JOBS_PER_S = 5000.0
TARGET_SQLITE_JOBS_PER_S = 1500.0
TARGET_REDIS_P50_MS = 1.0
_DISTS = ("undertow", "msgspec", "redis", "hiredis", "celery", "kombu", "rq", "dask")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return str(out.stdout).rstrip()


def _redis_version(url: str) -> str:
    if not url:
        return "not used"
    import redis

    with redis.Redis.from_url(url, socket_timeout=10) as conn:
        return str(conn.info("server")["redis_version"])


def machine_info(systems: list[str], redis_url: str) -> dict[str, Any]:
    """Where and with what the benchmark ran."""
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "loadavg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "redis_server": _redis_version(redis_url),
        "undertow_commit": _git("rev-parse", "--short", "HEAD"),
        # the sources measured may hold changes not yet committed
        "undertow_src_changed_files": _git("status", "--porcelain", "--", "src").splitlines(),
        "systems": systems,
    }
    info.update({dist: _version(dist) for dist in (*_DISTS, "distributed")})
    return info


# -- summaries -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolated between the nearest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "rounds": values,
    }


def _throughput(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("end_to_end", "drain"):
        found = [r[mode] for r in runs if mode in r]
        if found:
            out[mode] = _spread([f["jobs_per_s"] for f in found])
            out[mode]["submit_jobs_per_s"] = _spread([f["submit_jobs_per_s"] for f in found])
    return out


def _latency(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    per_round = [r["latency_ms"] for r in runs if r.get("latency_ms")]
    if not per_round:
        return None
    pooled = [x for samples in per_round for x in samples]
    return {
        "samples": len(pooled),
        "p50_ms": round(percentile(pooled, 50), 3),
        "p99_ms": round(percentile(pooled, 99), 3),
        "mean_ms": round(statistics.fmean(pooled), 3),
        "max_ms": round(max(pooled), 3),
        "per_round_p50_ms": [round(percentile(s, 50), 3) for s in per_round],
    }


def _memory(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {
        "jobs": runs[0]["jobs"],
        "store_bytes_per_job": _spread([r["store_bytes_per_job"] for r in runs]),
        "client_rss_bytes_per_job": _spread([r["client_rss_bytes_per_job"] for r in runs]),
        "client_rss_growth_second_half_bytes_max": max(
            r["client_rss_growth_second_half_bytes"] for r in runs
        ),
        "submit_jobs_per_s": _spread([round(r["jobs"] / r["submit_s"], 1) for r in runs]),
    }
    files = [r["store_file_bytes_per_job"] for r in runs if "store_file_bytes_per_job" in r]
    if files:
        out["store_file_bytes_per_job"] = _spread(files)
    return out


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Throughput, latency and memory of each system, from the raw figures of every round."""
    throughput: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    for name, by_key in raw.items():
        for workers in ("1", "2"):
            if by_key.get(workers):
                throughput.setdefault(name, {})[workers] = _throughput(by_key[workers])
        found = _latency(by_key.get("1", []))
        if found is not None:
            latency[name] = found
        if by_key.get("memory"):
            memory[name] = _memory(by_key["memory"])
    return {"throughput": throughput, "latency": latency, "memory": memory}


def _get(tree: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _target(name: str, value: float | None, op: str, limit: float) -> dict[str, Any]:
    ok = value is not None and (value <= limit if op == "<=" else value >= limit)
    return {"name": name, "value": value, "op": op, "limit": limit, "pass": bool(ok)}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """undertow's goals, each with the measured value (None: not measured) and a pass flag."""
    thr, lat = results["throughput"], results["latency"]
    return [
        _target(
            "undertow Redis, 2 workers, end to end jobs/s (median)",
            _get(thr, "undertow-redis", "2", "end_to_end", "median"),
            ">=",
            TARGET_REDIS_JOBS_PER_S,
        ),
        _target(
            "undertow SQLite, 2 workers, end to end jobs/s (median)",
            _get(thr, "undertow-sqlite", "2", "end_to_end", "median"),
            ">=",
            TARGET_SQLITE_JOBS_PER_S,
        ),
        _target(
            "undertow Redis, enqueue-to-start p50 ms",
            _get(lat, "undertow-redis", "p50_ms"),
            "<=",
            TARGET_REDIS_P50_MS,
        ),
    ]


# -- markdown ------------------------------------------------------------------------------------


def _rate(spread: dict[str, Any] | None) -> str:
    if not spread:
        return "-"
    return f"{spread['median']:,.0f} ({spread['min']:,.0f}-{spread['max']:,.0f})"


def _throughput_table(thr: dict[str, Any]) -> list[str]:
    rows = [
        "| system | workers | end to end, jobs/s | drain only, jobs/s | submit, jobs/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in (s for s in SYSTEMS if s in thr):
        for workers, found in sorted(thr[name].items()):
            submit = _get(found, "end_to_end", "submit_jobs_per_s")
            rows.append(
                f"| {LABELS[name]} | {workers} | {_rate(found.get('end_to_end'))} "
                f"| {_rate(found.get('drain'))} | {_rate(submit)} |"
            )
    return rows


def _latency_table(lat: dict[str, Any]) -> list[str]:
    rows = [
        "| system | p50 ms | p99 ms | mean ms | p50 of each round, ms | samples |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in (s for s in SYSTEMS if s in lat):
        f = lat[name]
        rounds = ", ".join(f"{x:.2f}" for x in f["per_round_p50_ms"])
        rows.append(
            f"| {LABELS[name]} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['mean_ms']:.2f} "
            f"| {rounds} | {f['samples']} |"
        )
    return rows


def _memory_table(mem: dict[str, Any]) -> list[str]:
    rows = [
        "| system | jobs queued | store, bytes/job | client RSS, bytes/job "
        "| client RSS growth, 2nd half (max) | submit, jobs/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in (s for s in SYSTEMS if s in mem):
        f = mem[name]
        store = f"{f['store_bytes_per_job']['median']:,.0f}"
        if "store_file_bytes_per_job" in f:
            store += f" (files {f['store_file_bytes_per_job']['median']:,.0f})"
        growth = f["client_rss_growth_second_half_bytes_max"] / 1e6
        rows.append(
            f"| {LABELS[name]} | {f['jobs']:,} | {store} "
            f"| {f['client_rss_bytes_per_job']['median']:,.0f} | {growth:.1f} MB "
            f"| {_rate(f['submit_jobs_per_s'])} |"
        )
    return rows


def summary(results: dict[str, Any]) -> str:
    """The markdown tables: throughput, latency, memory, targets."""
    machine, plan = results["machine"], results["config"]
    load = machine["loadavg_1_5_15_at_start"], machine.get("loadavg_1_5_15_at_end")
    out = [
        f"Job queues, {plan['jobs']:,} no-op jobs a run, {plan['rounds']} rounds (median "
        f"(min-max)); {machine['cpu_count']} CPUs, load average {load[0]} at start, {load[1]} "
        f"at end; undertow {machine['undertow']} ({machine['undertow_commit']}). Worker "
        f"processes of {CONCURRENCY} threads each (RQ: one job at a time).",
        "",
        *_throughput_table(results["throughput"]),
        "",
        f"Enqueue-to-start, one worker idle between jobs (pauses of 0-{plan['latency_gap']} s):",
        "",
        *_latency_table(results["latency"]),
        "",
        "Memory per queued job, no worker running:",
        "",
        *_memory_table(results["memory"]),
        "",
        "| target | measured | goal | pass |",
        "| --- | --- | --- | --- |",
    ]
    for t in results["targets"]:
        value = "not measured" if t["value"] is None else f"{t['value']:,.2f}"
        out.append(f"| {t['name']} | {value} | {t['op']} {t['limit']:,g} | {t['pass']} |")
    if results["skipped"]:
        out += ["", "Left out: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items())]
    if results["errors"]:
        out += ["", f"{len(results['errors'])} measurement(s) failed: see errors in the JSON."]
    return "\n".join(out)
