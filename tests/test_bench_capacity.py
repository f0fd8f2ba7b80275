"""The capacity benchmark runs end to end: ``python -m bench.capacity --quick`` starts its own
redis-server, counts the Redis commands of each operation, runs a small simulation step, and
writes figures that make sense."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.multiproc,
    pytest.mark.slow,
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 55.0


def test_quick_capacity_run_counts_commands_and_sustains_jobs(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["errors"] == []
    (run,) = results["runs"]
    costs = run["costs"]
    # every operation runs Redis commands, sent in at least one round trip
    for path in ("heartbeat", "renew", "claim_empty_with_offer", "catalog_write"):
        assert costs[path]["commands_total"] > 0, path
        assert costs[path]["round_trips"] >= 1, path
    for step in ("submit_one", "submit_map", "worker_drain_net", "result_read"):
        assert costs["job_life"][step]["commands_total"] > 0, step
    # a heartbeat is one script: its own call and the commands it runs
    assert costs["heartbeat"]["commands"]["evalsha"] == pytest.approx(1.0, abs=0.05)
    assert costs["memory"]["small"]["bytes_per_job"] > 0
    assert costs["memory"]["1KiB"]["bytes_per_job"] > costs["memory"]["small"]["bytes_per_job"]
    (step,) = run["steps"]
    assert step["jobs_per_s"] > 0
    assert step["heartbeats"]["stored"] > 0
    assert step["redis_cpu_cores"] > 0
    assert "| step |" in done.stdout  # the markdown summary
    # each operation replayed until Redis answered; the submits each once (new ids)
    assert {f["operation"] for f in run["saturation"]} >= {"worker heartbeat"}
    assert all(f["per_s"] > 0 for f in run["saturation"])
    assert "Redis saturated by each operation" in done.stdout
