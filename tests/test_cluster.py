"""undertow.Cluster: a cluster started from a notebook (registry, data server and workers in
child processes, a session token), or attached to by URL; waiting on jobs and futures."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import undertow
from undertow.errors import ClusterError, JobTimeout

from ._waiting import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[undertow.Cluster]:
    """One cluster started here for the tests that only use it."""
    with undertow.Cluster(workers=2, concurrency=2, modules=["tests._cluster_jobs"]) as c:
        yield c


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_notebook_functions_and_lambdas_run_on_the_workers(cluster: undertow.Cluster):
    def double(x: int) -> int:  # a local function: pickled by value, signed with the token
        return 2 * x

    assert cluster.submit(double, 21).result(timeout=60) == 42
    jobs = cluster.map(lambda x, y: x * y, range(20), range(20))
    assert [job.result(timeout=60) for job in jobs] == [x * x for x in range(20)]


def test_jobs_by_name_and_their_output_printed_here(
    cluster: undertow.Cluster, capsys: pytest.CaptureFixture[str]
):
    job = cluster.submit("shout", "hey")
    assert job.result(timeout=60) == "HEY"
    assert "shouting hey" in capsys.readouterr().out
    assert job.output() == "shouting hey\n"
    job.result(timeout=5)  # printed once per handle
    assert capsys.readouterr().out == ""


def test_the_workers_are_processes_of_their_own(cluster: undertow.Cluster):
    assert len(cluster.workers) == 2
    pids = {job.result(timeout=60) for job in [cluster.submit("where") for _ in range(20)]}
    assert os.getpid() not in pids


def test_put_leaves_data_on_the_clusters_data_server(cluster: undertow.Cluster):
    pointer = cluster.put(list(range(100)), tags=["test"])
    assert pointer[10:13] == [10, 11, 12]
    assert cluster.submit(lambda p: sum(p.fetch()), pointer).result(timeout=60) == 4950


def test_wait_and_as_completed_take_jobs_and_futures_together(cluster: undertow.Cluster, serve):
    server = undertow.Server()
    server.register("echo", lambda x: x)
    client = undertow.connect(serve(server))
    jobs = cluster.map(lambda x: x + 1, range(5))
    future = client.echo.submit(7)
    done, not_done = undertow.wait([*jobs, future], timeout=60)
    assert not_done == set()
    assert done == {*jobs, future}
    seen = list(undertow.as_completed([*cluster.map(abs, [-1, -2]), client.echo.submit(1)]))
    assert len(seen) == 3
    slow = cluster.submit(time.sleep, 3)
    with pytest.raises(JobTimeout):
        list(undertow.as_completed([slow], timeout=0.2))
    done, not_done = undertow.wait([slow], timeout=0.2)
    assert (done, not_done) == (set(), {slow})
    assert slow.cancel()
    client.close()


def test_repr_and_html_say_what_runs_and_hide_the_token(cluster: undertow.Cluster):
    text = repr(cluster)
    assert "here" in text
    assert "2 x 2 slots" in text
    assert "running" in text
    page = cluster._repr_html_()
    assert "undertow.Cluster" in page
    assert "data server" in page
    assert cluster._token is not None
    assert cluster._token not in text + page


def test_close_stops_every_process_and_removes_the_session(tmp_path: Path):
    cluster = undertow.Cluster(workers=1, concurrency=1)
    pids = [c.process.pid for c in cluster._children]
    directory = cluster._dir
    assert len(pids) == 2
    assert directory.exists()
    cluster.close()
    assert not any(alive(pid) for pid in pids)
    assert not directory.exists()
    assert "closed" in repr(cluster)
    with pytest.raises(ClusterError, match="closed"):
        cluster.submit(abs, -1)
    cluster.close()  # twice is fine


def test_the_processes_stop_when_the_notebook_is_killed(tmp_path: Path):
    script = textwrap.dedent(
        """
        import sys, undertow
        cluster = undertow.Cluster(workers=1, concurrency=1)
        print(*[c.process.pid for c in cluster._children], flush=True)
        sys.stdin.read()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as kernel:
        assert kernel.stdout is not None
        pids = [int(p) for p in kernel.stdout.readline().split()]
        assert len(pids) == 2
        assert all(alive(p) for p in pids)
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(10)
    assert wait_until(lambda: not any(alive(p) for p in pids), timeout=30)


def test_a_worker_that_cannot_start_is_an_error_with_its_output():
    with pytest.raises(ClusterError, match="no_such_module"):
        undertow.Cluster(workers=1, data=False, modules=["no_such_module"])


def test_attaching_runs_jobs_on_the_running_clusters_workers(url: str, tmp_path: Path):
    token = undertow.security.new_token("me")
    with undertow.Cluster(url, token=token) as attached:
        assert attached.workers == []
        assert "attached" in repr(attached)
        job = attached.submit(lambda: "ran")
        assert attached.add_workers(1, concurrency=1)
        assert job.result(timeout=60) == "ran"
        assert undertow.job(job.id, backend=url, token=token).result(timeout=10) == "ran"
        assert [j.id for j in attached.jobs(state="done")] == [job.id]


def test_bad_options_are_refused_by_name():
    with pytest.raises(ValueError, match="queues='default'"):
        undertow.Cluster(queues="default")
    with pytest.raises(ValueError, match="queue name"):
        undertow.Cluster("sqlite:///nowhere.db", queues=["no spaces"])


def test_close_lets_the_workers_finish_the_jobs_they_hold(url: str):
    token = undertow.security.new_token("me")
    attached = undertow.Cluster(url, token=token, workers=1, concurrency=1)
    job = attached.submit(time.sleep, 1.0)
    assert wait_until(lambda: job.state is not undertow.queue.JobState.QUEUED, 30)
    attached.close()  # a drain: the job ends here, it is not left to its lease
    with undertow.JobQueue(url, token=token) as queue:
        record = queue.job(job.id).record()
    assert (record.state, record.attempts) == (undertow.queue.JobState.DONE, 1)


def test_after_a_kernel_restart_a_pickled_result_is_read_again():
    script = textwrap.dedent(
        """
        import sys, undertow
        cluster = undertow.Cluster(workers=1, concurrency=1)
        job = cluster.submit(lambda: {"answer": 42})  # a pickle, signed by the session
        job.result(timeout=60)
        print(job.id, cluster.backend, cluster._dir, flush=True)
        sys.stdin.read()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as kernel:
        assert kernel.stdout is not None
        job_id, backend, directory = kernel.stdout.readline().split()
        kernel.send_signal(signal.SIGKILL)  # the kernel dies; its files stay
        kernel.wait(10)
    try:
        assert undertow.job(job_id, backend=backend, token=False).result(timeout=10) == {
            "answer": 42
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_closed_session_forgets_its_token(undertow_home: Path):
    cluster = undertow.Cluster(workers=0, data=False)
    kept = list((undertow_home / "sessions").glob("session-*.token"))
    assert len(kept) == 1
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    cluster.close()
    assert not kept[0].exists()
