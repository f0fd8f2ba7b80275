"""The markdown summary of ``bench.capacity``: the per-operation table, the ramp with the
spread over runs, and the model drawn from them (Redis CPU per idle worker and per job, and
where one core of Redis would be full)."""

from __future__ import annotations

import statistics
from typing import Any

#: per-operation rows: (label, path in the costs, what the figure is per)
ROWS = (
    ("submit one job (JobQueue.submit, no idle worker)", "job_life.submit_one", "job"),
    ("submit by JobQueue.map (500 a batch)", "job_life.submit_map", "job"),
    ("claim + complete (a worker draining the queue)", "job_life.worker_drain_net", "job"),
    ("read a result (job.result(), job done)", "job_life.result_read", "job"),
    ("a job handed to an idle worker, end to end", "handed_job_end_to_end", "job"),
    ("worker heartbeat", "heartbeat", "beat"),
    ("empty claim with an offer (idle poll)", "claim_empty_with_offer", "claim"),
    ("lease renewal", "renew", "renewal"),
    ("sweep (nothing expired)", "sweep", "sweep"),
    ("an idle worker, one second", "idle_worker_per_s", "second"),
    ("service registration", "service_register", "instance"),
    ("service heartbeat", "service_heartbeat", "beat"),
    ("catalog write (a data server's put)", "catalog_write", "value"),
    ("catalog lookup (one record)", "catalog_lookup", "lookup"),
    ("a burst worker's check before it stops", "job_life.burst_exit_scan", "job stored"),
)
#: a step is Redis-saturated from this share of one core
REDIS_FULL = 0.85
#: the machine (2 cores) is full from this many cores busy in all
MACHINE_FULL = 1.7


def _get(costs: dict[str, Any], path: str) -> dict[str, Any] | None:
    found: Any = costs
    for part in path.split("."):
        if not isinstance(found, dict) or part not in found:
            return None
        found = found[part]
    return found if isinstance(found, dict) else None


def _top(commands: dict[str, float], n: int = 5) -> str:
    ranked = sorted(commands.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {round(calls, 2):g}" for name, calls in ranked if calls >= 0.05)


def cost_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| operation | Redis commands (all) | sent by the client | Redis CPU us "
        "| most run (per op) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, path, per in ROWS:
        found = [f for run in runs if run.get("costs") and (f := _get(run["costs"], path))]
        if not found:
            continue
        total = statistics.median(f.get("commands_total_net", f["commands_total"]) for f in found)
        sent = statistics.median(f["round_trips"] for f in found)
        commands = (
            found[0].get("idle_share_removed", {}).get("commands_net") or found[0]["commands"]
        )
        # (an idle worker's own CPU is lost in Redis's background work: the ramp's
        # idle step, 1,000 of them, gives it)
        cpu = [f["redis_cpu_us"] for f in found if "redis_cpu_us" in f and per != "second"]
        cpu_cell = _spread(cpu) if cpu else ""
        figures = f"{round(total, 2):g} | {round(sent, 3):g} | {cpu_cell}"
        lines.append(f"| {label}, per {per} | {figures} | {_top(commands)} |")
    return lines


def memory_lines(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for label in ("small", "1KiB"):
        memory = [run["costs"]["memory"][label] for run in runs if run.get("costs")]
        for field, what in (("bytes_per_job", "queued"), ("bytes_per_finished_job", "finished")):
            per = [m[field] for m in memory if field in m]
            if not per:
                continue
            gb = statistics.median(per) * 1_000_000 / 1e9
            lines.append(
                f"- {what} job, {label} argument: {_spread(per)} bytes; "
                f"1,000,000 {what}: {gb:.2f} GB"
            )
    return lines


def verdict(found: dict[str, Any]) -> str:
    """Who ran out first in a step: Redis, the machine (clients), or nobody."""
    busy = found["redis_cpu_cores"] + found["simulator_cpu_cores"] + found["submitter_cpu_cores"]
    if found["redis_cpu_cores"] >= REDIS_FULL:
        return "Redis saturated"
    late = (found["heartbeats"]["achieved_share"] or 1.0) < 0.95
    if busy >= MACHINE_FULL or late:
        return "machine full (clients)"
    return "sustained"


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:g}"
    return f"{statistics.median(values):g} ({min(values):g}-{max(values):g})"


def ramp_table(runs: list[dict[str, Any]]) -> list[str]:
    by_step: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for found in run["steps"]:
            by_step.setdefault(found["step"]["name"], []).append(found)
    lines = [
        "| step | workers | beat every | submit/s | jobs/s | beats/s (due) | beat late p99 ms "
        "| Redis CPU (cores) | simulators CPU | PING p99 ms | commands/s | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, found in by_step.items():
        step = found[0]["step"]
        rate = f"{step['rate']:g}" + (" (map)" if step["batch"] else "")
        beats = _spread([f["heartbeats"]["per_s"] for f in found])
        due = found[0]["heartbeats"]["scheduled_per_s"]
        verdicts = sorted({verdict(f) for f in found})
        cells = [
            name,
            str(step["workers"])
            + (f" x {step['concurrency']}" if step.get("concurrency", 1) > 1 else ""),
            f"{step['lease'] / 3:g} s",
            rate,
            _spread([f["jobs_per_s"] for f in found]),
            f"{beats} of {due:g}",
            _spread([f["heartbeats"]["lateness_ms_p99"] for f in found]),
            _spread([f["redis_cpu_cores"] for f in found]),
            _spread([f["simulator_cpu_cores"] for f in found]),
            _spread([f["probe_ping_ms"]["p99"] for f in found]),
            _spread([round(f["commands_per_s"]) for f in found]),
            " / ".join(verdicts),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def model(medians: dict[str, Any]) -> list[str]:
    """Redis CPU per idle worker, per heartbeat and per job (from the steps' medians), and
    how much of each one core of Redis would carry."""
    idle = medians.get("idle-1000")
    if idle is None or not idle["redis_cpu_cores"]:
        return []
    per_worker = idle["redis_cpu_cores"] / 1000
    lines = [
        f"- an idle worker (beat every 10 s): {per_worker * 1e6:.0f} us of Redis CPU a second;"
        f" one core: ~{1 / per_worker:,.0f} idle workers",
    ]
    beat = medians.get("beat-1s-idle")
    if beat is not None and beat["heartbeats_per_s"] > idle["heartbeats_per_s"]:
        extra = beat["redis_cpu_cores"] - idle["redis_cpu_cores"]
        more = beat["heartbeats_per_s"] - idle["heartbeats_per_s"]
        lines.append(
            f"- beats every 1 s instead of 10 s (sweeps 10x as often too): {extra:+.3f} cores "
            f"for {more:,.0f} beats/s more, {extra * 1e6 / more:.0f} us a beat"
        )
    slopes = [
        (m["redis_cpu_cores"] - idle["redis_cpu_cores"]) / m["jobs_per_s"]
        for name, m in medians.items()
        if name.startswith("jobs-") and m["jobs_per_s"] > 0
    ]
    if slopes:
        per_job = statistics.median(slopes)
        spare = max(1.0 - idle["redis_cpu_cores"], 0.0)
        lines.append(
            f"- a job handed to an idle worker, beyond the idle traffic: {per_job * 1e6:.0f} us;"
            f" one core, beside 1,000 idle workers: ~{spare / per_job:,.0f} jobs/s"
        )
    fat = medians.get("fat-2x4-map-4000")
    if fat is not None and fat["jobs_per_s"] > 0:
        per_job = fat["redis_cpu_cores"] / fat["jobs_per_s"]
        lines.append(
            f"- a job on the batch path (map, 2 workers of 4 slots): {per_job * 1e6:.0f} us;"
            f" one core: ~{1 / per_job:,.0f} jobs/s"
        )
    return lines


def saturation_table(runs: list[dict[str, Any]]) -> list[str]:
    """Redis driven to a full core by each operation replayed (``bench._capacity_saturate``)."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        for found in run.get("saturation") or []:
            rows.setdefault((found["operation"], found["sent"]), []).append(found)
    if not rows:
        return []
    lines = [
        "Redis saturated by each operation replayed (the backend's own requests):",
        "",
        "| operation | sent | per second | Redis µs each | Redis CPU | client CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (operation, sent), found in rows.items():
        rate = _spread([float(f["per_s"]) for f in found])
        each = _spread([float(f["redis_us_each"]) for f in found])
        redis_cpu = _spread([float(f["redis_cpu_cores"]) for f in found])
        client_cpu = _spread([float(f["client_cpu_cores"]) for f in found])
        lines.append(f"| {operation} | {sent} | {rate} | {each} | {redis_cpu} | {client_cpu} |")
    return lines


def summary(results: dict[str, Any]) -> str:
    runs = results.get("runs", [])
    machine = results.get("machine", {})
    out = [
        f"## Capacity of one Redis ({machine.get('date_utc', '?')}, "
        f"{machine.get('cpu_count')} CPUs: {machine.get('cpu_model', '?')}, "
        f"redis {machine.get('redis_server', '?')}, {len(runs)} run(s))",
        "",
        *cost_table(runs),
        "",
        *memory_lines(runs),
        "",
        *ramp_table(runs),
        "",
        *saturation_table(runs),
        "",
        *model(results.get("medians", {})),
    ]
    if results.get("errors"):
        out += ["", f"{len(results['errors'])} measurement(s) failed: see the JSON's errors"]
    return "\n".join(out)
