"""``undertow jobs ls/show/cancel/retry``, ``undertow queues`` and the workers section of
``undertow status``: the real command (click's runner, and one process) against a real SQLite
file and a real redis-server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest
from click.testing import CliRunner, Result

from undertow.cli import main
from undertow.storage import Backend, JobRecord, JobState, WorkerInfo, open_backend
from undertow.wire import encode_error, error_info

from ._processes import free_port

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")


def undertow(url: str, *args: str) -> Result:
    """``undertow ARGS --backend URL``, run in this process."""
    return CliRunner(catch_exceptions=False).invoke(main, [*args, "--backend", url])


def on_store(url: str, op: Callable[[Backend], Awaitable[T]]) -> T:
    """``op(store)`` on a backend of ``url`` opened for it."""

    async def run() -> T:
        store = open_backend(url)
        try:
            return await op(store)
        finally:
            await store.close()

    return asyncio.run(run())


def record(url: str, job_id: str) -> JobRecord:
    found = on_store(url, lambda s: s.job(job_id))
    assert found is not None
    return found


@dataclass
class Seeded:
    queued: str  # on default, by alice
    failed: str  # on gpu and default, printed two lines, failed with a ZeroDivisionError
    done: str  # on cpu, by bob


async def _seed(store: Backend) -> Seeded:
    def job(queues: list[str], submitter: str) -> JobRecord:
        return JobRecord(id=uuid.uuid4().hex, queues=queues, function="resize", submitter=submitter)

    now = time.time() - 120
    failed = await store.enqueue(job(["gpu", "default"], "alice"), now=now)
    done = await store.enqueue(job(["cpu"], "bob"), now=now + 1)
    queued = await store.enqueue(job(["default"], "alice"), now=now + 2)
    await store.claim(["gpu", "cpu"], "host-1:42:abc", lease=30, count=2, now=now + 3)
    await store.append_output(failed.id, "epoch 1\nepoch 2\n", attempt=1)
    try:
        1 / 0  # noqa: B018 - the error the job fails with
    except ZeroDivisionError as exc:
        error = encode_error(error_info(exc))
    await store.fail(failed.id, 1, error, now=now + 4)
    await store.complete(done.id, 1, b"\x93result", now=now + 5)
    return Seeded(queued=queued.id, failed=failed.id, done=done.id)


@pytest.fixture
def seeded(url: str) -> Seeded:
    return on_store(url, _seed)


# -- ls -------------------------------------------------------------------------------------


def test_ls_lists_every_job_oldest_first(url: str, seeded: Seeded):
    shown = undertow(url, "jobs", "ls")
    assert shown.exit_code == 0, shown.output
    header, *rows = shown.stdout.splitlines()[1:]
    assert header.split() == [
        "ID",
        "STATE",
        "FUNCTION",
        "QUEUES",
        "ATTEMPTS",
        "SUBMITTED",
        "WORKER",
    ]
    assert [r.split()[:5] for r in rows] == [
        [seeded.failed, "failed", "resize", "gpu,default", "1/1"],
        [seeded.done, "done", "resize", "cpu", "1/1"],
        [seeded.queued, "queued", "resize", "default", "0/1"],
    ]
    assert rows[0].split()[5:] == ["2m00s", "ago", "host-1:42:abc"]
    assert rows[2].split()[-1] == "-"  # no worker yet


def test_ls_filters_by_state_queue_and_submitter(url: str, seeded: Seeded):
    def ids(*args: str) -> list[str]:
        shown = undertow(url, "jobs", "ls", "--json", *args)
        assert shown.exit_code == 0, shown.output
        return [row["id"] for row in json.loads(shown.stdout)["jobs"]]

    assert ids("--state", "FAILED") == [seeded.failed]
    assert ids("--queue", "default") == [seeded.failed, seeded.queued]
    assert ids("--submitter", "bob") == [seeded.done]
    assert ids("--queue", "default", "--state", "queued") == [seeded.queued]
    limited = undertow(url, "jobs", "ls", "--limit", "1")
    assert len(limited.stdout.splitlines()) == 4  # backend, header, one job, the note
    assert "--limit for more" in limited.stdout
    assert "no jobs match" in undertow(url, "jobs", "ls", "--queue", "nothing").stdout


def test_ls_as_json_says_the_whole_row(url: str, seeded: Seeded):
    shown = json.loads(undertow(url, "jobs", "ls", "--json", "--state", "done").stdout)
    assert shown["backend"].startswith(url.partition("://")[0])
    (row,) = shown["jobs"]
    assert row["id"] == seeded.done
    assert (row["attempts"], row["max_attempts"], row["submitter"]) == (1, 1, "bob")
    assert row["submitted"].endswith("+00:00")
    assert 115 < row["age_s"] < 600


# -- show -----------------------------------------------------------------------------------


def test_show_prints_the_record_its_error_and_its_output(url: str, seeded: Seeded):
    shown = undertow(url, "jobs", "show", seeded.failed)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == f"job {seeded.failed}"
    fields = dict(line.strip().split(None, 1) for line in lines[1:6])
    assert fields["state"].startswith("failed")
    assert fields["queues"] == "gpu, default"
    assert fields["submitter"] == "alice"
    assert "error: builtins.ZeroDivisionError: division by zero" in lines
    assert "  ZeroDivisionError: division by zero" in lines  # the traceback's last line
    assert lines[-3:] == ["output:", "  epoch 1", "  epoch 2"]


def test_show_as_json_decodes_the_error_and_sizes_the_bytes(url: str, seeded: Seeded):
    failed = json.loads(undertow(url, "jobs", "show", "--json", seeded.failed).stdout)["job"]
    assert failed["error"]["type"] == "builtins.ZeroDivisionError"
    assert failed["error"]["message"] == "division by zero"
    assert "1 / 0" in failed["error"]["traceback"]
    assert failed["output"] == ["epoch 1\nepoch 2\n"]
    done = json.loads(undertow(url, "jobs", "show", "--json", seeded.done).stdout)["job"]
    assert (done["result_bytes"], done["error"], done["output"]) == (7, None, [])
    assert done["finished"] is not None


def test_show_takes_an_id_with_dashes_and_names_an_unknown_or_bad_one(url: str, seeded: Seeded):
    dashed = str(uuid.UUID(seeded.done)).upper()
    assert undertow(url, "jobs", "show", dashed).stdout.startswith(f"job {seeded.done}")
    unknown = uuid.uuid4().hex
    missing = undertow(url, "jobs", "show", unknown)
    assert missing.exit_code == 1
    assert f"no job {unknown}" in missing.stderr
    assert "undertow jobs ls" in missing.stderr
    bad = undertow(url, "jobs", "show", "12ab")
    assert bad.exit_code == 2
    assert "'12ab' is not a job id" in bad.stderr
    assert "32 hex digits" in bad.stderr


# -- cancel and retry -----------------------------------------------------------------------


def test_cancel_says_the_state_after_for_each_id(url: str, seeded: Seeded):
    unknown = uuid.uuid4().hex
    done = undertow(url, "jobs", "cancel", seeded.queued, unknown, seeded.done)
    assert done.exit_code == 1
    assert done.stdout.splitlines() == [
        f"{seeded.queued} cancelled",
        f"{seeded.done} done: left as it is (it had finished)",
    ]
    assert f"no job {unknown}" in done.stderr
    assert record(url, seeded.queued).state == JobState.CANCELLED


def test_cancel_of_a_running_job_asks_its_worker_to_stop(url: str):
    async def running(store: Backend) -> str:
        j = await store.enqueue(JobRecord(id=uuid.uuid4().hex, queues=["q"], function="f"))
        await store.claim(["q"], "w", lease=30)
        return j.id

    job_id = on_store(url, running)
    shown = undertow(url, "jobs", "cancel", "--json", job_id)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["cancel"] == [{"id": job_id, "state": "running"}]
    assert record(url, job_id).cancel_requested


def test_retry_queues_a_failed_job_again_and_leaves_the_others(url: str, seeded: Seeded):
    done = undertow(url, "jobs", "retry", seeded.failed, seeded.queued)
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [
        f"{seeded.failed} queued: a worker will take it",
        f"{seeded.queued} queued: a worker will take it",  # already: left as it was
    ]
    left = undertow(url, "jobs", "retry", seeded.done)
    assert left.stdout.splitlines() == [
        f"{seeded.done} done: left as it is (only failed, dead and cancelled jobs are retried)"
    ]
    again = record(url, seeded.failed)
    assert (again.state, again.error, again.max_attempts) == (JobState.QUEUED, None, 2)
    unknown = uuid.uuid4().hex
    refused = undertow(url, "jobs", "retry", "--json", unknown)
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["retry"] == [{"id": unknown, "state": None}]
    assert unknown in refused.stderr


def test_cancel_and_retry_check_every_id_before_changing_any(url: str, seeded: Seeded):
    shown = undertow(url, "jobs", "cancel", seeded.queued, "not-an-id")
    assert shown.exit_code == 2
    assert "'not-an-id' is not a job id" in shown.stderr
    assert record(url, seeded.queued).state == JobState.QUEUED
    assert undertow(url, "jobs", "retry").exit_code == 2  # an id is required


# -- queues ---------------------------------------------------------------------------------


def test_queues_shows_each_length_and_the_jobs_by_state(url: str, seeded: Seeded):
    shown = undertow(url, "queues")
    assert shown.exit_code == 0, shown.output
    table = [line.split() for line in shown.stdout.splitlines()[1:]]
    assert table == [
        ["QUEUE", "LENGTH", "QUEUED", "RUNNING", "DONE", "FAILED", "DEAD", "CANCELLED"],
        ["cpu", "0", "0", "0", "1", "0", "0", "0"],
        ["default", "2", "1", "0", "0", "1", "0", "0"],  # the failed job's entry stays
        ["gpu", "0", "0", "0", "0", "1", "0", "0"],
    ]
    as_json = json.loads(undertow(url, "queues", "--json").stdout)["queues"]
    assert as_json[1] == {"name": "default", "length": 2, "states": {"queued": 1, "failed": 1}}


def test_queues_of_an_empty_store(url: str):
    shown = undertow(url, "queues")
    assert shown.exit_code == 0, shown.output
    assert "no queues" in shown.stdout


# -- status, bad input, the backend ---------------------------------------------------------


def test_status_shows_the_live_workers(url: str):
    info = WorkerInfo(
        name="host-1:42:abc",
        host="host-1",
        pid=42,
        queues=["gpu", "default"],
        concurrency=4,
        running=2,
        done=17,
        failed=1,
        started=time.time() - 60,
    )
    empty = undertow(url, "status")
    assert "workers: none live" in empty.stdout
    on_store(url, lambda s: s.worker_beat(info, ttl=60))
    shown = undertow(url, "status")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    at = lines.index("workers")
    assert lines[at + 1].split() == [
        "WORKER", "HOST", "QUEUES", "CONCURRENCY", "RUNNING", "DONE", "FAILED", "BEAT"
    ]  # fmt: skip
    assert lines[at + 2].split()[:7] == [
        "host-1:42:abc",
        "host-1",
        "gpu,default",
        "4",
        "2",
        "17",
        "1",
    ]
    (row,) = json.loads(undertow(url, "status", "--json").stdout)["workers"]
    assert (row["name"], row["pid"], row["ttl_s"]) == ("host-1:42:abc", 42, 60.0)
    assert 0 <= row["last_beat_s"] < 30


def test_bad_filters_are_named_with_the_fix(url: str):
    state = undertow(url, "jobs", "ls", "--state", "finished")
    assert state.exit_code == 2
    assert "'finished' is not one of 'queued', 'running', 'done'" in state.stderr
    queue = undertow(url, "jobs", "ls", "--queue", "a b")
    assert queue.exit_code == 2
    assert "queue name 'a b' must be" in queue.stderr


def test_an_unreachable_or_unknown_backend_is_named():
    down = f"redis://127.0.0.1:{free_port()}/0"
    shown = undertow(down, "jobs", "ls")
    assert shown.exit_code == 1
    assert "127.0.0.1" in shown.stderr
    unknown = undertow("ftp://nowhere", "queues")
    assert unknown.exit_code == 1
    assert "ftp://nowhere" in unknown.stderr


@pytest.mark.multiproc
def test_the_commands_run_as_a_process(url: str, seeded: Seeded):
    done = subprocess.run(
        [sys.executable, "-m", "undertow.cli", "jobs", "ls", "--json", "--backend", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["jobs"]) == 3
