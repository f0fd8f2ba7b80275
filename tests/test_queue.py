"""The job queue end to end (undertow.queue), on both backends: submitting by name and as a
signed pickle, workers that refuse what they must not unpickle, retries and dead letters,
errors, output, cancellation, idempotency, many jobs on several slots."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from undertow.errors import (
    AuthenticationError,
    FunctionNotFound,
    JobCancelled,
    JobFailed,
    JobTimeout,
    RemoteTraceback,
)
from undertow.queue import Job, JobQueue, JobState, Worker
from undertow.security import TokenAuth, new_token
from undertow.storage import JobRecord, WorkerInfo, open_backend

from ._waiting import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def queue(url: str) -> Iterator[JobQueue]:
    with JobQueue(url, token=False) as q:
        yield q


def add(x: int, y: int = 0) -> int:
    return x + y


def square(x: int) -> int:
    return x * x


def boom(n: int) -> None:
    raise ValueError(f"bad {n}")


def chatty(name: str) -> str:
    print(f"hello from {name}")
    print("second line")
    return name


async def add_async(x: int, y: int) -> int:
    return x + y  # a coroutine function: the worker runs it on its loop


FUNCTIONS: dict[str, Any] = {
    "add": add,
    "square": square,
    "boom": boom,
    "chatty": chatty,
    "add_async": add_async,
}


def worker(url: str, **options: Any) -> Worker:
    options.setdefault("functions", FUNCTIONS)
    options.setdefault("poll_max", 0.05)
    return Worker(url, ["default"], **options)


class Trap:
    """Unpickling this creates a file: the proof that a payload was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_a_registered_function_by_name(url: str, queue: JobQueue):
    job = queue.submit("add", 1, y=2)
    assert job.state is JobState.QUEUED
    assert not job.done()
    assert repr(job) == f"<Job {job.id} add queued>"
    worker(url).work(burst=True)
    assert job.result(timeout=10) == 3
    assert job.done()
    assert job.exception() is None
    assert queue.job(job.id).result() == 3  # a handle from the id alone
    queue.submit("add_async", 2, 3)
    worker(url).work(burst=True)
    assert [j.result() for j in queue.jobs(state="done")] == [3, 5]


def test_a_notebook_lambda_with_a_token(url: str):
    token = new_token("me")
    offset = 40
    with JobQueue(url, token=token) as q:
        job = q.submit(lambda x: x + offset, 2)
        assert "lambda" in job.function
        worker(url, auth=TokenAuth([token])).work(burst=True)
        assert job.result(timeout=10) == 42
        assert job.record().submitter == "me"
    with JobQueue(url, token=new_token("me")) as other:  # same name, another secret
        with pytest.raises(AuthenticationError, match="not signed with your token"):
            other.job(job.id).result()


def test_a_callable_without_a_token_is_refused_at_submit(queue: JobQueue):
    with pytest.raises(AuthenticationError, match="token"):
        queue.submit(lambda: 1)
    assert queue.queue_length() == 0


def _unsigned(payload: bytes) -> bytes:
    body, _key_id, _mac = msgspec.msgpack.decode(payload)
    return msgspec.msgpack.encode([body, "", b""])


async def _enqueue(url: str, record: JobRecord) -> None:
    backend = open_backend(url)
    try:
        await backend.enqueue(record)
    finally:
        await backend.close()


@pytest.mark.parametrize("how", ["unsigned", "wrong secret", "unknown key", "no auth"])
def test_a_pickle_that_does_not_check_out_is_never_unpickled(url: str, tmp_path: Path, how: str):
    trap = tmp_path / "unpickled"
    token = new_token("me")
    signer = {"wrong secret": new_token("me"), "unknown key": new_token("eve")}.get(how, token)
    with JobQueue(url, token=signer) as q:
        job = q.submit(print, Trap(trap))
        if how == "unsigned":
            record = job.record()
            q.job(job.id).cancel()  # take the signed one out; put an unsigned copy in
            record.id, record.payload = uuid.uuid4().hex, _unsigned(record.payload)
            asyncio.run(_enqueue(url, record))
            job = q.job(record.id)
        worker(url, auth=None if how == "no auth" else TokenAuth([token])).work(burst=True)
        assert job.state is JobState.FAILED
        with pytest.raises(AuthenticationError, match=r"refused|no authenticator") as caught:
            job.result(timeout=10)
        assert job.id in str(caught.value)
    assert not trap.exists()


def test_retries_then_a_dead_letter(url: str, queue: JobQueue):
    job = queue.submit("boom", 7, retries=2, backoff=0.01)
    worker(url).work(burst=True)
    record = job.record()
    assert (record.state, record.attempts, record.max_attempts) == (JobState.DEAD, 3, 3)
    with pytest.raises(JobFailed, match="dead") as caught:
        job.result(timeout=10)
    assert caught.value.job_id == job.id
    assert isinstance(caught.value.__cause__, ValueError)
    assert str(caught.value.__cause__) == "bad 7"


def test_only_the_exceptions_of_retry_on_are_retried(url: str, queue: JobQueue):
    job = queue.submit("boom", 1, retries=3, retry_on=[KeyError], backoff=0.01)
    retried = queue.submit("boom", 2, retries=1, retry_on=[LookupError, ValueError], backoff=0.01)
    worker(url).work(burst=True)
    assert (job.record().state, job.record().attempts) == (JobState.FAILED, 1)
    assert (retried.record().state, retried.record().attempts) == (JobState.DEAD, 2)


def test_a_failing_jobs_exception_comes_back_readable(url: str, queue: JobQueue):
    job = queue.submit("boom", 42)
    missing = queue.submit("nope")
    worker(url).work(burst=True)
    with pytest.raises(ValueError, match="bad 42") as caught:
        job.result(timeout=10)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "boom" in cause.text
    assert isinstance(job.exception(), ValueError)
    with pytest.raises(FunctionNotFound, match="nope") as not_found:
        missing.result(timeout=10)
    assert "add" in not_found.value.available


def test_output_is_captured_per_job(url: str, queue: JobQueue):
    jobs = [queue.submit("chatty", name) for name in ("ann", "bob", "cy")]
    worker(url, concurrency=3).work(burst=True)
    for job, name in zip(jobs, ("ann", "bob", "cy"), strict=True):
        assert job.result(timeout=10) == name
        assert job.output() == f"hello from {name}\nsecond line\n"


def test_a_queued_job_is_cancelled_and_never_runs(url: str, queue: JobQueue):
    ran: list[int] = []
    job = queue.submit("record", 1)
    assert job.cancel()
    assert job.state is JobState.CANCELLED
    worker(url, functions={"record": ran.append}).work(burst=True)
    assert ran == []
    with pytest.raises(JobCancelled):
        job.result(timeout=10)
    assert job.cancel()  # cancelled already, as concurrent.futures says
    done = queue.submit("record", 2)
    worker(url, functions={"record": ran.append}).work(burst=True)
    assert not done.cancel()  # too late
    assert done.state is JobState.DONE


def test_a_running_job_is_cancelled_at_its_next_renewal(url: str, queue: JobQueue):
    started = threading.Event()

    async def wait_forever() -> None:
        started.set()
        await asyncio.Event().wait()

    w = worker(url, functions={"wait": wait_forever}, lease=0.3)
    thread = threading.Thread(target=w.work, kwargs={"burst": False})
    thread.start()
    try:
        job = queue.submit("wait")
        assert started.wait(10)
        assert job.cancel()
        with pytest.raises(JobCancelled):
            job.result(timeout=10)
    finally:
        w.drain()
        thread.join(10)
    assert not thread.is_alive()


def test_an_idempotency_key_queues_once(url: str, queue: JobQueue):
    first = queue.submit("add", 1, idempotency_key="order-17")
    second = queue.submit("add", 2, idempotency_key="order-17")
    assert first == second
    worker(url).work(burst=True)
    assert second.result(timeout=10) == 1
    assert len(queue.jobs()) == 1


def test_map_of_50_jobs_on_4_slots_gives_every_result_once(url: str, queue: JobQueue):
    calls: list[int] = []
    lock = threading.Lock()

    def counted(x: int) -> int:
        with lock:
            calls.append(x)
        return x * x

    jobs = queue.map("counted", range(50))
    assert len({j.id for j in jobs}) == 50
    worker(url, functions={"counted": counted}, concurrency=4).work(burst=True)
    assert [j.result(timeout=10) for j in jobs] == [x * x for x in range(50)]
    assert sorted(calls) == list(range(50))
    assert {j.record().attempts for j in jobs} == {1}


def test_result_times_out_at_its_deadline(queue: JobQueue):
    job = queue.submit("add", 1)
    with pytest.raises(JobTimeout, match=r"within 0\.05 s") as caught:
        job.result(timeout=0.05)
    assert isinstance(caught.value, TimeoutError)


async def test_a_job_is_awaitable(url: str, queue: JobQueue):
    job = queue.submit("add", 20, 22)
    thread = threading.Thread(target=worker(url).work)
    thread.start()
    try:
        assert await job == 42
        assert await job.result_async(timeout=5) == 42
    finally:
        await asyncio.to_thread(thread.join, 10)


def test_a_job_that_is_not_there(queue: JobQueue):
    with pytest.raises(ValueError, match="32 lowercase hex digits"):
        queue.job("x")
    ghost = queue.job(uuid.uuid4().hex)
    with pytest.raises(Exception, match="not in"):
        ghost.result(timeout=1)
    assert "unknown" in repr(ghost)


def test_a_worker_drained_before_it_runs_returns_at_once(url: str, queue: JobQueue):
    queue.submit("add", 1)
    w = worker(url)
    w.drain()
    w.work(burst=False)
    assert [j.state for j in queue.jobs()] == [JobState.QUEUED]
    assert isinstance(queue.jobs()[0], Job)


async def _live_workers(url: str) -> list[WorkerInfo]:
    backend = open_backend(url)
    try:
        return await backend.workers()
    finally:
        await backend.close()


def test_a_running_worker_beats_and_leaves_when_it_stops(url: str, queue: JobQueue):
    w = worker(url, concurrency=2, lease=0.6)  # a beat every 0.2 s
    thread = threading.Thread(target=w.work, kwargs={"burst": False})
    thread.start()
    try:
        assert wait_until(lambda: bool(asyncio.run(_live_workers(url))), 20)
        (info,) = asyncio.run(_live_workers(url))
        assert (info.name, info.queues, info.concurrency) == (w.name, w.queues, 2)
        assert info.queues[-1] == "default"  # after this host's own queue
        queue.submit("add", 1, 2).result(timeout=20)
        with pytest.raises(ValueError, match="bad 1"):
            queue.submit("boom", 1).result(timeout=20)
        assert wait_until(lambda: asyncio.run(_live_workers(url))[0].done == 2, 20)
        assert asyncio.run(_live_workers(url))[0].failed == 1
    finally:
        w.drain()
        thread.join(20)
    assert asyncio.run(_live_workers(url)) == []  # gone at once on a clean stop


def test_an_idle_worker_is_told_of_new_jobs_at_once(redis_url: str):
    w = worker(redis_url, poll_max=60.0)
    w.state.poll_min = w.state._poll = 30.0  # polling alone would take 30 s to see the job
    thread = threading.Thread(target=w.work, kwargs={"burst": False})
    thread.start()
    try:
        assert wait_until(lambda: w.state._claim_at > 0, 20)  # the first (empty) claim
        with JobQueue(redis_url, token=False) as q:  # (a batch is announced, not handed)
            [job] = q.map("add", [2], [3])
            assert job.result(timeout=10) == 5
    finally:
        w.drain()
        thread.join(20)
