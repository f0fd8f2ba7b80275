"""``undertow worker`` as a process of its own: jobs submitted with JobQueue run through it,
by name or as signed callables, and a signal drains it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from undertow import AuthenticationError
from undertow.queue import JobQueue, JobState
from undertow.security import new_token

from ._processes import read_line
from ._waiting import wait_until

pytestmark = [pytest.mark.multiproc, pytest.mark.timeout(90)]

#: the console script, whose sys.path does not hold the current directory (`-m` would add it)
UNDERTOW = [str(Path(sys.executable).parent / "undertow")]
RUN_TIMEOUT = 60.0

MODULE = """
import threading
from pathlib import Path

def double(x):
    print("doubling", x)
    return x * 2

def shout(text):
    return text.upper()

def hold(started, release):
    Path(started).touch()
    idle, deadline = threading.Event(), 0
    while not Path(release).exists() and deadline < 3000:   # 30 s at most
        idle.wait(0.01)
        deadline += 1
    return "held"

def _private():
    return "never registered"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory holding the module of job functions, where the worker is started."""
    (tmp_path / "jobfns.py").write_text(MODULE)
    return tmp_path


def worker(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``undertow worker ARGS`` run to its end."""
    return subprocess.run(
        [*UNDERTOW, "worker", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_jobs_by_name_run_through_a_burst_worker(url: str, workdir: Path):
    with JobQueue(url, token=False) as jobs:
        doubled = jobs.submit("double", 21)
        twice = jobs.submit("twice", 5, queue="batch")
        shouted = jobs.submit("shout", "hi", queue="batch")
        done = worker(
            "--burst",
            "--backend", url,
            "--queue", "batch", "--queue", "default",
            "--function", "twice=jobfns:double",
            "--module", "jobfns",
            cwd=workdir,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        first = done.stdout.splitlines()[0]
        assert first.startswith("undertow: worker ")
        assert first.endswith(f" on queues batch, default ({jobs.url})")
        assert "only jobs by name run" in done.stderr
        assert "jobs by name: double, hold, shout, twice" in done.stderr  # never _private
        assert doubled.result(timeout=10) == 42
        assert twice.result(timeout=10) == 10
        assert shouted.result(timeout=10) == "HI"
        assert doubled.output() == "doubling 21\n"


def test_a_worker_given_a_token_runs_a_submitted_lambda(workdir: Path):
    url = f"sqlite://{workdir / 'cluster.db'}"
    alice = new_token("alice")
    with JobQueue(url, token=alice) as jobs:
        lam = jobs.submit(lambda x: x + 1, 41)
        done = worker("--burst", "--backend", url, cwd=workdir, env={"UNDERTOW_TOKEN": alice})
        assert done.returncode == 0, done.stderr
        assert "pickled callables run for: alice" in done.stderr
        assert lam.result(timeout=10) == 42

        # a worker without tokens fails such a job unread
        refused = jobs.submit(lambda x: x + 1, 1)
        done = worker("--burst", "--backend", url, "--module", "jobfns", cwd=workdir)
        assert done.returncode == 0, done.stderr
        with pytest.raises(AuthenticationError, match="no authenticator"):
            refused.result(timeout=10)


def test_sigterm_lets_the_running_job_finish_then_exits_0(workdir: Path):
    url = f"sqlite://{workdir / 'cluster.db'}"
    started, release = workdir / "started", workdir / "release"
    with JobQueue(url, token=False) as jobs:
        held = jobs.submit("hold", str(started), str(release))
        waiting = jobs.submit("double", 1)
        proc = subprocess.Popen(
            [*UNDERTOW, "worker", "--backend", url, "--module", "jobfns"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert read_line(proc).startswith("undertow: worker ")
            assert wait_until(started.exists, 30), "the worker never started the job"
            proc.send_signal(signal.SIGTERM)
            assert "SIGTERM, draining: finishing 1 job(s)" in read_line(proc)
            release.touch()
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate(timeout=10)
        assert b"Traceback" not in err, err.decode()
        assert held.result(timeout=10) == "held"
        assert waiting.record().state is JobState.QUEUED  # claimed nothing more


def test_a_second_signal_stops_at_once(workdir: Path):
    url = f"sqlite://{workdir / 'cluster.db'}"
    started, release = workdir / "started", workdir / "release"
    with JobQueue(url, token=False) as jobs:
        held = jobs.submit("hold", str(started), str(release))
        proc = subprocess.Popen(
            [*UNDERTOW, "worker", "--backend", url, "--module", "jobfns", "--lease", "60"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            read_line(proc)
            assert wait_until(started.exists, 30), "the worker never started the job"
            proc.send_signal(signal.SIGINT)
            assert "SIGINT, draining" in read_line(proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 128 + signal.SIGTERM  # the job was never released
        finally:
            release.touch()
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        # left to its lease: still running as far as the store knows, no result stored
        assert held.record().state is JobState.RUNNING


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--function", "x=nosuchmodule:f"], ["no module named 'nosuchmodule'", "PYTHONPATH"]),
        (["--function", "x=jobfns:nothing"], ["has no attribute 'nothing'"]),
        (["--function", "double"], ["is not NAME=module:attr"]),
        (["--module", "broken"], ["importing 'broken' failed", "ZeroDivisionError", "broken.py:1"]),
        ([], ["nothing to run"]),
    ],
)
def test_a_bad_function_is_a_clean_error(workdir: Path, args: list[str], words: list[str]):
    (workdir / "broken.py").write_text("1 / 0\n")
    done = worker("--burst", *args, cwd=workdir)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr


def test_the_help_shows_examples_one_a_line(workdir: Path):
    done = worker("--help", cwd=workdir)
    assert done.returncode == 0
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert "undertow worker --module imaging" in lines
    assert "undertow worker --function resize=imaging:resize --concurrency 4" in lines


def _scraped(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, s.labels.get("worker", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_worker_serves_its_own_figures_with_metrics(workdir: Path):
    url = f"sqlite://{workdir / 'cluster.db'}"
    with JobQueue(url, token=False) as jobs:
        done = [jobs.submit("double", i) for i in range(3)] + [jobs.submit("shout", 7)]
        proc = subprocess.Popen(
            [*UNDERTOW, "worker", "--backend", url, "--module", "jobfns", "--metrics", "0"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            ready = read_line(proc)
            assert ready.startswith("undertow: worker "), ready
            name = ready.split()[2]
            metrics = re.search(r"metrics (http://127\.0\.0\.1:\d+/metrics)", ready)
            assert metrics is not None, ready
            for job in done[:3]:
                job.exception(timeout=30)
            assert isinstance(done[3].exception(timeout=30), AttributeError)  # 7.upper()

            def finished() -> bool:
                seen = _scraped(metrics.group(1))
                return seen.get(("undertow_worker_jobs_total", name)) == 4

            assert wait_until(finished, 30), _scraped(metrics.group(1))
            seen = _scraped(metrics.group(1))
            assert seen["undertow_worker_failed_jobs_total", name] == 1
            assert seen["undertow_worker_running", name] == 0
            assert seen["undertow_worker_slots", name] == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            proc.communicate(timeout=10)
