"""Calls that are durable jobs: a server function with the option ``queue`` (both backends)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import undertow
from undertow.errors import ConfigError, PermissionDenied
from undertow.queue import JobQueue
from undertow.security import TokenAuth, allow, new_token

pytestmark = pytest.mark.timeout(60)


def add(x: int, y: int = 0) -> int:
    print(f"adding {x} and {y}")
    return x + y


@pytest.fixture
def server(url: str, monkeypatch: pytest.MonkeyPatch) -> undertow.Server:
    monkeypatch.setenv("UNDERTOW_BACKEND", url)  # the server's worker and the client's jobs
    s = undertow.Server(name="lab")
    s.register("add", add)
    s.register("slow_add", add)
    s.config({"slow_*": {"queue": "lab-jobs"}})
    return s


def test_a_queued_function_returns_a_job_the_server_runs(server: undertow.Server, serve):
    client = undertow.connect(serve(server))
    job = client.slow_add(1, y=2)
    assert isinstance(job, undertow.Job)
    assert job.result(timeout=30) == 3
    assert job.output() == "adding 1 and 2\n"
    assert job.record().queues == ["lab-jobs"]
    assert client.add(1, 2) == 3  # not queued: an ordinary call
    assert client.slow_add.enqueue(2, 3).result(timeout=30) == 5
    assert server.describe()["slow_add"]["queue"] == "lab-jobs"
    client.close()


def test_enqueue_of_a_function_that_is_not_queued_says_how(server: undertow.Server, serve):
    client = undertow.connect(serve(server))
    with pytest.raises(ConfigError, match=r"add\(\) is not queued.*'queue'"):
        client.add.enqueue(1, 2)
    client.close()


async def test_an_async_client_awaits_the_job_then_its_result(server: undertow.Server, serve):
    address = serve(server)
    client = await undertow.connect_async(address)
    job = await client.slow_add(4, 5)
    assert isinstance(job, undertow.Job)
    assert await job == 9
    assert await (await client.slow_add.enqueue(1)) == 1
    await client.aclose()


def test_a_bad_queue_name_is_refused_at_config():
    s = undertow.Server()
    s.register("f", add)
    with pytest.raises(ConfigError, match=r"queue for .*no spaces"):
        s.config({"f": {"queue": "no spaces"}})


def test_queued_jobs_pass_the_servers_checks_as_calls_do(url: str, monkeypatch, serve):
    monkeypatch.setenv("UNDERTOW_BACKEND", url)
    alice, bob = new_token("alice"), new_token("bob")
    s = undertow.Server(name="guarded", auth=TokenAuth([alice, bob]))
    s.register("slow_add", add)
    s.config({"slow_*": {"queue": "guarded-jobs", "auth": allow("alice")}})
    address = serve(s)
    with undertow.connect(address, token=alice) as client:
        assert client.slow_add(1, 2).result(timeout=30) == 3
    with undertow.connect(address, token=bob) as client:
        job = client.slow_add(1, 2)  # queued: the rule is asked when the job comes to run
        with pytest.raises(PermissionDenied, match="bob may not run slow_add"):
            job.result(timeout=30)
    with JobQueue(url, token=False) as anonymous:  # straight into the store, unsigned
        job = anonymous.submit("slow_add", 1, 2, queue="guarded-jobs")
        with pytest.raises(PermissionDenied, match="an anonymous submitter"):
            job.result(timeout=30)


class Trap:
    """Unpickling this creates a file: the proof that a payload was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_a_servers_job_worker_never_runs_a_pickle(url: str, monkeypatch, serve, tmp_path: Path):
    monkeypatch.setenv("UNDERTOW_BACKEND", url)
    bob = new_token("bob")
    s = undertow.Server(name="guarded", auth=TokenAuth([bob]))
    s.register("slow_add", add)
    s.config({"slow_*": {"queue": "guarded-jobs"}})
    serve(s)
    trap = tmp_path / "unpickled"
    with JobQueue(url, token=bob) as queue:  # a token the server knows: still no pickle
        job = queue.submit(print, Trap(trap), queue="guarded-jobs")
        with pytest.raises(PermissionDenied, match="bob may not run"):
            job.result(timeout=30)
        assert queue.submit("slow_add", 2, 2, queue="guarded-jobs").result(timeout=30) == 4
    assert not trap.exists()


def test_a_client_on_another_backend_is_told_before_queueing(
    server: undertow.Server, serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    client = undertow.connect(serve(server))  # told where the server takes its jobs
    monkeypatch.setenv("UNDERTOW_BACKEND", f"sqlite://{tmp_path / 'elsewhere.db'}")
    with pytest.raises(ConfigError, match=r"slow_add\(\) is queued on .*set UNDERTOW_BACKEND"):
        client.slow_add(1, 2)
    client.close()
