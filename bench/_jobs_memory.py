"""Memory per queued job: a fresh process submits N no-op jobs with no worker running and
reports its own RSS (after a warm-up job, half way, at the end) and the store's size before
and after (Redis ``INFO used_memory``; SQLite's pages in use, and its files).

Run by ``bench.jobs`` as ``python -m bench._jobs_memory SYSTEM URL N``; prints one JSON line.
Handles are dropped batch by batch, so the client's RSS should stay flat: what grows is what
the queue keeps.
"""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._jobs_procs import REPO, rss_bytes

QUEUE = "bench-mem"
BATCH = 5000
TIMEOUT = 600.0
#: the systems measured, and the share of N each submits: Celery sends one task a round trip
#: and RQ builds each job in Python, so a tenth keeps each run under a minute (the figures are
#: per job; the flatness check then compares 5,000 with 10,000 jobs)
SYSTEMS = {"undertow-redis": 1, "undertow-sqlite": 1, "rq": 10, "celery": 10}


def redis_used(url: str) -> dict[str, int]:
    import redis

    with redis.Redis.from_url(url, socket_timeout=30) as conn:
        info: dict[str, Any] = conn.info("memory")
    return {"used_memory": int(info["used_memory"])}


def sqlite_used(url: str) -> dict[str, int]:
    path = url.removeprefix("sqlite://")
    conn = sqlite3.connect(path, timeout=30)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    files = sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*"))
    return {"pages_bytes": (pages - free) * size, "files_bytes": files}


def _submitter(system: str, url: str) -> Callable[[int], None]:
    """A function that queues that many no-op jobs on ``system``, dropping the handles."""
    if system.startswith("undertow"):
        from undertow.queue import JobQueue

        queue = JobQueue(url, token=False, queue=QUEUE, timeout=60.0)

        def submit(n: int) -> None:
            queue.map("noop", range(n))

        return submit
    if system == "rq":
        import redis

        rq = importlib.import_module("rq")  # optional: by name, so mypy needs it not
        rq_queue = rq.Queue(QUEUE, connection=redis.Redis.from_url(url, socket_timeout=60))

        def enqueue(n: int) -> None:
            rq_queue.enqueue_many(
                [rq.Queue.prepare_data("bench._jobs_tasks.noop", (i,)) for i in range(n)]
            )

        return enqueue
    if system == "celery":
        from bench._jobs_celery_app import make_app

        app = make_app(url)

        def send(n: int) -> None:
            for i in range(n):
                app.send_task("noop", args=[i], queue=QUEUE)

        return send
    raise ValueError(f"no memory measurement for {system!r}")


def child(system: str, url: str, n: int) -> dict[str, Any]:
    """Submit ``n`` jobs after a warm-up one; the figures (run in a process of its own)."""
    used = sqlite_used if url.startswith("sqlite") else redis_used
    submit = _submitter(system, url)
    submit(1)  # connections, imports, the schema: not what a job costs
    store_before, rss = used(url), {"start": rss_bytes()}
    started = time.perf_counter()
    done = 0
    while done < n:
        step = min(BATCH, n - done)
        submit(step)
        done += step
        if "half" not in rss and done >= n // 2:
            rss["half"] = rss_bytes()
    seconds = time.perf_counter() - started
    rss["end"] = rss_bytes()
    return {
        "jobs": n,
        "submit_s": round(seconds, 3),
        "rss_bytes": rss,
        "store_before": store_before,
        "store_after": used(url),
    }


def measure(system: str, url: str, n: int) -> dict[str, Any]:
    """Run :func:`child` in a fresh process; its figures with the bytes per queued job."""
    args = [sys.executable, "-m", "bench._jobs_memory", system, url, str(n)]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError(f"memory run of {system} failed ({out.returncode}): {out.stderr}")
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    before, after = found["store_before"], found["store_after"]
    key = "used_memory" if "used_memory" in after else "pages_bytes"
    rss = found["rss_bytes"]
    found["store_bytes_per_job"] = round((after[key] - before[key]) / n, 1)
    found["client_rss_bytes_per_job"] = round((rss["end"] - rss["start"]) / n, 1)
    found["client_rss_growth_second_half_bytes"] = rss["end"] - rss["half"]
    if "files_bytes" in after:
        files = (after["files_bytes"] - before["files_bytes"]) / n
        found["store_file_bytes_per_job"] = round(files, 1)
    return found


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
