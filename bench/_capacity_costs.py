"""What each operation costs Redis, counted through undertow's own code paths: a job's whole
life (submit, claim, complete, result), a worker's heartbeat, an idle worker's second, a
lease renewal, a service's registration and heartbeat, a catalog write; and the memory a
queued job takes.

Each figure runs the real API (``JobQueue``, ``Worker``, the Redis backend's methods) against
a flushed redis-server and divides ``bench._capacity_count``'s counts by the operations done.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import redis

from bench._capacity_count import counting, measure, redis_cpu, used_memory
from bench._jobs_tasks import noop
from undertow.data import DataRecord, Location
from undertow.queue import JobQueue, Worker
from undertow.storage import Backend, Instance, JobRecord, Offer, WorkerInfo, open_backend

QUEUE = "cap"
FUNCTIONS = {"noop": noop}
#: a worker of the benchmark names its machine so (a host queue of its own, as on a real host)
HOST = "cap-host"


def _flush(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        client.flushall()


def _run(coro_fn: Callable[[Backend], Any], url: str) -> Any:
    """Run ``coro_fn(backend)`` on a backend of its own, closed after."""

    async def main() -> Any:
        backend = open_backend(url)
        try:
            return await coro_fn(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


def job_life(url: str, n: int) -> dict[str, Any]:
    """A job's life in steps, ``n`` no-op jobs each: submitted one by one and by ``map``
    (nobody waiting), claimed and completed by a worker that drains the queue (``burst``),
    and each result read once."""
    found: dict[str, Any] = {}
    _flush(url)
    with JobQueue(url, token=False, queue=QUEUE) as jobs:
        jobs.queue_length()  # (the portal and its connection, opened before counting)
        found["submit_one"] = measure(url, n, lambda: [jobs.submit("noop", i) for i in range(n)])
        mapped: list[Any] = []
        found["submit_map"] = measure(url, n, lambda: mapped.extend(jobs.map("noop", range(n))))
        worker = Worker(url, [QUEUE], functions=FUNCTIONS, concurrency=4, hosts=[HOST])
        found["worker_drain"] = measure(url, 2 * n, lambda: worker.work(burst=True))
        found["result_read"] = measure(url, n, lambda: [job.result(10) for job in mapped])
        # a burst worker checks, before it stops, that no job waits on its queues: that
        # check alone, with the 2n finished jobs still stored, per stored job
        again = Worker(url, [QUEUE], functions=FUNCTIONS, concurrency=4, hosts=[HOST])
        found["burst_exit_scan"] = measure(url, 2 * n, lambda: again.work(burst=True))
    found["worker_drain_net"] = _less(found["worker_drain"], found["burst_exit_scan"])
    return found


def _less(gross: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``gross`` without ``part`` (both per the same count): each command's calls less."""
    out = dict(gross)
    for field in ("commands", "sent"):
        out[field] = {
            name: round(max(calls - part[field].get(name, 0.0), 0.0), 3)
            for name, calls in gross[field].items()
        }
    out["commands_total"] = round(sum(out["commands"].values()), 3)
    out["round_trips"] = round(sum(out["sent"].values()), 3)
    return out


class RunningWorker:
    """A real worker running in a thread of its own (not in burst mode), until stopped."""

    def __init__(self, url: str, *, lease: float = 30.0) -> None:
        self.worker = Worker(
            url, [QUEUE], functions=FUNCTIONS, concurrency=1, lease=lease, hosts=[HOST]
        )
        self.thread = threading.Thread(target=self.worker.work, args=(False,), daemon=True)

    def __enter__(self) -> RunningWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.drain()
        self.thread.join(30.0)


def idle_and_handed(url: str, n: int, idle_s: float) -> dict[str, Any]:
    """An idle worker's traffic per second (its claims, beats, sweeps, inbox waits); then
    ``n`` jobs submitted one at a time to that worker, each result awaited: a job handed to
    an idle worker, end to end (the idle traffic of the same span taken off)."""
    _flush(url)
    found: dict[str, Any] = {}
    with RunningWorker(url), JobQueue(url, token=False, queue=QUEUE) as jobs:
        jobs.queue_length()
        time.sleep(1.0)  # (its start-up: groups, durability check, first beat; not counted)
        with counting(url) as idle:
            time.sleep(idle_s)
        found["idle_worker_per_s"] = idle.per(idle_s)
        found["idle_worker_per_s"]["redis_cpu_us"] = _cpu_per_s(url, idle_s)
        started = time.monotonic()
        with counting(url) as handed:
            for i in range(n):
                jobs.submit("noop", i).result(10)
        span = time.monotonic() - started
    raw = handed.per(n)
    rate = found["idle_worker_per_s"]
    net = {
        name: round(calls - rate["commands"].get(name, 0.0) * span / n, 3)
        for name, calls in raw["commands"].items()
    }
    raw["idle_share_removed"] = {"seconds": round(span, 3), "commands_net": net}
    raw["commands_total_net"] = round(sum(net.values()), 3)
    found["handed_job_end_to_end"] = raw
    return found


Op = Callable[[], Awaitable[Any]]


async def _ops(url: str, n: int, ops: dict[str, Op]) -> dict[str, Any]:
    """Each op ``n`` times while counting its commands; then ``n`` times more with nothing
    watching, for Redis's CPU per op (a MONITOR would add its own)."""
    out: dict[str, Any] = {}
    client = redis.Redis.from_url(url)
    try:
        for name, op in ops.items():
            with counting(url) as found:
                for _ in range(n):
                    await op()
            out[name] = found.per(n)
            before = redis_cpu(client)
            for _ in range(n):
                await op()
            out[name]["redis_cpu_us"] = round((redis_cpu(client) - before) * 1e6 / n, 1)
    finally:
        client.close()
    return out


def _cpu_per_s(url: str, seconds: float) -> float:
    """Redis's CPU (microseconds a second) over ``seconds`` of whatever runs meanwhile."""
    with redis.Redis.from_url(url) as client:
        before = redis_cpu(client)
        time.sleep(seconds)
        return round((redis_cpu(client) - before) * 1e6 / seconds, 1)


def worker_ops(url: str, n: int) -> dict[str, Any]:
    """A heartbeat, an empty claim (what an idle worker sends every poll), a lease renewal
    and a sweep, each ``n`` times through the backend's API as the worker calls it."""
    _flush(url)

    async def steps(backend: Backend) -> dict[str, Any]:
        name = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        info = WorkerInfo(name=name, queues=[f"host:{HOST}", QUEUE], concurrency=1, host=HOST)
        job = JobRecord(id=uuid.uuid4().hex, queues=[QUEUE], function="noop")
        await backend.enqueue(job)
        await backend.worker_beat(info, ttl=30.0)
        (held,) = await backend.claim([QUEUE], name, lease=30.0)

        async def claim() -> Any:
            offer = Offer(1, time.time() + 3.0, 5.0)
            return await backend.claim(info.queues, name, lease=30.0, offer=offer)

        return await _ops(
            url,
            n,
            {
                "heartbeat": lambda: backend.worker_beat(info, ttl=30.0),
                "claim_empty_with_offer": claim,
                "renew": lambda: backend.renew(held.id, held.attempts, lease=30.0),
                "sweep": lambda: backend.sweep(),
            },
        )

    found: dict[str, Any] = _run(steps, url)
    return found


def service_and_catalog(url: str, n: int) -> dict[str, Any]:
    """A service's registration and its heartbeat (the records ``undertow serve`` writes),
    and a data server's catalog write for a value kept (``record_data`` of the record its
    listener makes at each put: two tags, one location), and a lookup of one record."""
    _flush(url)
    where = Location(protocol="zmq", host="198.18.0.1", port=5556)
    instance = _instance()
    records = iter([_record(where) for _ in range(2 * n)])
    keys = [r.key for r in [_record(where)]]

    async def steps(backend: Backend) -> dict[str, Any]:
        await backend.register(instance)  # (its heartbeats renew it)

        async def register() -> None:
            await backend.register(msgspec.structs.replace(instance, id=uuid.uuid4().hex))

        async def write() -> None:
            record = next(records)
            keys.append(record.key)
            await backend.record_data(record)

        return await _ops(
            url,
            n,
            {
                "service_register": register,
                "service_heartbeat": lambda: backend.heartbeat(instance.beat()),
                "catalog_write": write,
                "catalog_lookup": lambda: backend.data_record(keys[-1]),
            },
        )

    found: dict[str, Any] = _run(steps, url)
    return found


def _instance() -> Instance:
    """A service instance's record, as a service host makes it."""
    now = time.time()
    return Instance(
        service="capacity",
        id=uuid.uuid4().hex,
        addresses=["tcp://198.18.0.1:5555"],
        host=HOST,
        pid=os.getpid(),
        started=now,
        heartbeat=now,
        ttl=10.0,
    )


def _record(where: Location) -> DataRecord:
    return DataRecord(
        key=uuid.uuid4().hex,
        secret=uuid.uuid4().hex,
        type_name="numpy.ndarray",
        size=8_000_000,
        created=time.time(),
        owner="",
        tags=["raw", "2026"],
        locations=[where],
    )


def bytes_per_job(url: str, n: int) -> dict[str, Any]:
    """Redis memory per queued job (``used_memory`` growth over ``n`` jobs queued by
    ``map``, no worker): a small argument, and a 1 KiB one; then per finished job, kept for
    its ``result_ttl`` (the same jobs run by a worker, each returning None)."""
    found: dict[str, Any] = {}
    for label, arg in (("small", 7), ("1KiB", b"x" * 1024)):
        _flush(url)
        with redis.Redis.from_url(url) as client, JobQueue(url, token=False, queue=QUEUE) as jq:
            jq.queue_length()
            before = used_memory(client)
            jq.map("noop", [arg] * n)
            queued = used_memory(client)
            Worker(url, [QUEUE], functions=FUNCTIONS, concurrency=4, hosts=[HOST]).work()
            done = used_memory(client)
        found[label] = {
            "jobs": n,
            "bytes_per_job": round((queued - before) / n, 1),
            "bytes_per_finished_job": round((done - before) / n, 1),
        }
    _flush(url)
    return found


def all_costs(url: str, *, n: int, idle_s: float, memory_jobs: int) -> dict[str, Any]:
    """Every per-operation figure, in one dictionary."""
    out: dict[str, Any] = {}
    _flush(url)
    out["redis_alone_cpu_us_per_s"] = _cpu_per_s(url, min(idle_s, 5.0))
    out["job_life"] = job_life(url, n)
    out.update(idle_and_handed(url, max(n // 4, 10), idle_s))
    idle = out["idle_worker_per_s"]
    idle["redis_cpu_us_net"] = round(idle["redis_cpu_us"] - out["redis_alone_cpu_us_per_s"], 1)
    out.update(worker_ops(url, n))
    out.update(service_and_catalog(url, n))
    out["memory"] = bytes_per_job(url, memory_jobs)
    return out
