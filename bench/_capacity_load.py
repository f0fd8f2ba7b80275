"""One step of the capacity simulation: worker processes and a submitter against one Redis,
and what the step sustained (heartbeats, jobs, Redis CPU and latency, the clients' CPU).

The figures are taken over a window that opens once every worker has started (they start
spread over one heartbeat interval) and a few seconds more.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from bench._capacity_count import OWN, commandstats, redis_cpu
from bench._jobs_procs import Children
from undertow.storage._keys import JOB_COUNTS

#: the probe's pause between two PINGs (seconds)
PROBE_EVERY = 0.01
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Step:
    """What one step runs."""

    name: str
    workers: int
    processes: int
    lease: float
    rate: float
    window: float
    batch: bool = False
    #: threads of the submitter (each submits one job at a time, waiting for its answer)
    threads: int = 4
    #: slots of each worker
    concurrency: int = 1

    @property
    def beat_every(self) -> float:
        return self.lease / 3


class Probe(threading.Thread):
    """PINGs Redis every :data:`PROBE_EVERY` seconds on a connection of its own, timing
    each answer: what any client waits for one command while the step runs."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="capacity-probe")
        self.client = redis.Redis.from_url(url)
        self.times: list[float] = []
        self.recording = False
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(PROBE_EVERY):
            start = time.perf_counter()
            self.client.ping()
            if self.recording:
                self.times.append(time.perf_counter() - start)
        self.client.close()


def cpu_seconds(pid: int) -> float:
    """CPU seconds a process used so far (user + system, all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _start(step: Step, url: str, children: Children, tmp: Path) -> list[tuple[Any, Path]]:
    """The worker processes and the submitter, each ready; with the files of their figures."""
    started = []
    per = [step.workers // step.processes] * step.processes
    per[0] += step.workers - sum(per)
    base = [sys.executable, "-m", "bench._capacity_sim"]
    for part, count in enumerate(per):
        out = tmp / f"{step.name}-workers-{part}.json"
        args = [*base, "workers", url, "--count", str(count), "--part", str(part)]
        args += ["--lease", str(step.lease), "--out", str(out)]
        args += ["--concurrency", str(step.concurrency)]
        started.append((children.start(f"workers-{part}", args, ready=rb"ready \d+"), out))
    if step.rate > 0:
        out = tmp / f"{step.name}-submit.json"
        args = [*base, "submit", url, "--rate", str(step.rate), "--out", str(out)]
        args += ["--threads", str(1 if step.batch else step.threads)]
        args += ["--batch"] if step.batch else []
        started.append((children.start("submitter", args, ready=rb"ready"), out))
    return started


def _snapshot(client: redis.Redis, pids: list[int]) -> dict[str, Any]:
    counts: Any = client.hget(JOB_COUNTS, "cap done")  # (the store's count of done jobs)
    return {
        "t": time.monotonic(),
        "wall": time.time(),
        "commands": commandstats(client),
        "redis_cpu": redis_cpu(client),
        "cpu": [cpu_seconds(pid) for pid in pids],
        "done": int(counts or 0),
        "clients": int(client.info("clients")["connected_clients"]),
    }


def run_step(step: Step, url: str, children: Children, tmp: Path) -> dict[str, Any]:
    """Run ``step``; its figures."""
    client = redis.Redis.from_url(url)
    client.flushall()
    probe = Probe(url)
    probe.start()
    started = _start(step, url, children, tmp)
    pids = [child.proc.pid for child, _ in started]
    try:
        time.sleep(step.beat_every + 3.0)  # every worker started, beat once, settled
        before = _snapshot(client, pids)
        probe.recording = True
        time.sleep(step.window)
        probe.recording = False
        after = _snapshot(client, pids)
    finally:
        for child, _ in reversed(started):
            children.stop(child)
        probe.stopping.set()
    figures = [json.loads(out.read_text()) for _, out in started if out.exists()]
    found = _figures(step, before, after, figures, probe.times)
    client.close()
    return found


def _figures(
    step: Step,
    before: dict[str, Any],
    after: dict[str, Any],
    figures: list[dict[str, Any]],
    probe: list[float],
) -> dict[str, Any]:
    seconds = after["t"] - before["t"]
    commands = after["commands"] - before["commands"]
    total = sum(v for k, v in commands.items() if k not in OWN)
    cpu = [b - a for a, b in zip(before["cpu"], after["cpu"], strict=True)]
    sim_cpu = sum(cpu[: step.processes])
    jobs = (after["done"] - before["done"]) / seconds
    redis_cpu_share = (after["redis_cpu"] - before["redis_cpu"]) / seconds
    return {
        "step": asdict(step),
        "seconds": round(seconds, 2),
        "connected_clients": after["clients"],
        "heartbeats": _beats(step, figures, before["wall"], after["wall"]),
        "jobs_per_s": round(jobs, 1),
        "submitted_per_s": _submitted(figures),
        "redis_cpu_cores": round(redis_cpu_share, 3),
        "redis_cpu_us_per_job": round(redis_cpu_share * 1e6 / jobs, 1) if jobs else None,
        "commands_per_s": round(total / seconds, 1),
        "evalsha_per_s": round(commands.get("evalsha", 0) / seconds, 1),
        "blpop_per_s": round(commands.get("blpop", 0) / seconds, 1),
        "commands_per_job": round(total / seconds / jobs, 1) if jobs else None,
        "simulator_cpu_cores": round(sim_cpu / seconds, 3),
        "submitter_cpu_cores": round(sum(cpu[step.processes :]) / seconds, 3),
        "probe_ping_ms": {
            "n": len(probe),
            "p50": round(percentile(probe, 0.5) * 1000, 3),
            "p99": round(percentile(probe, 0.99) * 1000, 3),
            "max": round(max(probe, default=0.0) * 1000, 3),
        },
        "loadavg_1": round(os.getloadavg()[0], 2),
    }


def _submitted(figures: list[dict[str, Any]]) -> float | None:
    for found in figures:
        if "queued" in found:
            return round(float(found["queued"]) / max(float(found["seconds"]), 1e-9), 1)
    return None


def _beats(step: Step, figures: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Heartbeats stored in the window against those due, and how late they were (from
    when each was due, a beat interval after the last one, to when it was stored)."""
    beats = [b for found in figures for b in found.get("beats", [])]
    parts = [found for found in figures if "beats" in found]
    lateness: list[float] = []
    last: dict[tuple[int, int], float] = {}
    stored = 0
    for part, found in enumerate(parts):
        for worker, due_from, done in sorted(found["beats"], key=lambda b: b[2]):
            key = (part, worker)
            if start <= done <= end:
                stored += 1
                if key in last:
                    lateness.append(done - (last[key] + step.beat_every))
            last[key] = due_from
    scheduled = step.workers * (end - start) / step.beat_every
    return {
        "stored": stored,
        "per_s": round(stored / (end - start), 1),
        "scheduled_per_s": round(scheduled / (end - start), 1),
        "achieved_share": round(stored / scheduled, 3) if scheduled else None,
        "lateness_ms_p50": round(percentile(lateness, 0.5) * 1000, 1),
        "lateness_ms_p99": round(percentile(lateness, 0.99) * 1000, 1),
        "lateness_ms_max": round(max(lateness, default=0.0) * 1000, 1),
        "all_beats": len(beats),
    }
