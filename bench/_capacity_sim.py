"""The processes of the capacity simulation (``bench.capacity``): many real workers in one
process, or a submitter.

``python -m bench._capacity_sim workers URL --count 250 --lease 30 --out FILE``: ``count``
:class:`~undertow.queue.Worker` objects on one event loop, one slot each, each on a backend of
its own (its connections, its pub/sub subscription, its inbox), one slot each unless
``--concurrency`` says more, each naming a machine of its
own (``sim-P-I``: a host queue each, as on a fleet of machines). They start spread over one
heartbeat interval, as a fleet does, and do what any worker does against Redis: heartbeats,
claims (with the offer of their idle slot), inbox waits, sweeps, renewals, completions. Their
backend notes when each heartbeat was due and when it was stored.

``python -m bench._capacity_sim submit URL --rate 500``: a submitter that queues no-op jobs
with ``JobQueue.submit`` (one by one: handed to an idle worker when there is one) at ``rate``
a second from ``--threads`` threads, or in batches with ``JobQueue.map`` every 10 ms
(``--batch``).

Each prints ``ready`` when it runs, and on SIGTERM writes its figures (JSON) to ``--out``
first, then stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

from bench._jobs_tasks import noop
from undertow.queue import JobQueue, Worker
from undertow.storage import WorkerInfo
from undertow.storage._redis import RedisBackend

QUEUE = "cap"
#: the longest the workers get to stop once the figures are written
STOP_GRACE = 5.0


class TimedBackend(RedisBackend):
    """The Redis backend, noting each heartbeat: (worker, when it was due, when stored)."""

    def __init__(self, url: str, index: int, beats: list[tuple[int, float, float]]) -> None:
        super().__init__(url)
        self.index, self.beats = index, beats

    async def worker_beat(self, info: WorkerInfo, *, ttl: float, now: float | None = None) -> None:
        await super().worker_beat(info, ttl=ttl, now=now)
        self.beats.append((self.index, now or 0.0, time.time()))


async def run_workers(args: argparse.Namespace) -> None:
    beats: list[tuple[int, float, float]] = []
    backends = [TimedBackend(args.url, i, beats) for i in range(args.count)]
    workers = [
        Worker(
            backend,
            [QUEUE],
            functions={"noop": noop},
            concurrency=args.concurrency,
            lease=args.lease,
            hosts=[f"sim-{args.part}-{i}"],
        )
        for i, backend in enumerate(backends)
    ]
    rng = random.Random(args.part)
    spread = args.lease / 3  # one heartbeat interval

    async def one(worker: Worker) -> None:
        await asyncio.sleep(rng.uniform(0.0, spread))
        await worker.run()

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    tasks = [asyncio.create_task(one(w)) for w in workers]
    print("ready", len(workers), flush=True)
    await stopping.wait()
    figures = {
        "beats": beats,
        "done": sum(w.done for w in workers),
        "beat_every": workers[0].state.beat_every,
        "workers": len(workers),
    }
    _write(args.out, figures)
    for worker in workers:
        worker.drain()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_GRACE):
            await asyncio.gather(*tasks, return_exceptions=True)
    os._exit(0)  # (slot threads still waiting on an inbox need not be waited for)


def _write(path: str, figures: dict[str, object]) -> None:
    """Write the figures (before anything else happens at the stop: nothing may lose them)."""
    Path(path).write_text(json.dumps(figures))


def run_submitter(args: argparse.Namespace) -> None:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    queued = [0] * args.threads
    with JobQueue(args.url, token=False, queue=QUEUE) as jobs:
        jobs.queue_length()
        print("ready", flush=True)
        start = time.monotonic()
        threads = [
            threading.Thread(target=_submit, args=(jobs, args, i, queued, start, stopping))
            for i in range(args.threads)
        ]
        for thread in threads:
            thread.start()
        stopping.wait()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
    _write(args.out, {"queued": sum(queued), "seconds": elapsed})


def _submit(
    jobs: JobQueue,
    args: argparse.Namespace,
    index: int,
    queued: list[int],
    start: float,
    stopping: threading.Event,
) -> None:
    """One submitting thread's share of the rate, until stopped."""
    rate = args.rate / args.threads
    while not stopping.is_set():
        due = int((time.monotonic() - start) * rate) - queued[index]
        if due <= 0:
            stopping.wait(0.001 if not args.batch else 0.01)
        elif args.batch:
            queued[index] += len(jobs.map("noop", range(min(due, 5000))))
        else:
            jobs.submit("noop", queued[index])
            queued[index] += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("role", choices=("workers", "submit"))
    parser.add_argument("url")
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=250)
    parser.add_argument("--concurrency", type=int, default=1, help="slots of each worker")
    parser.add_argument("--part", type=int, default=0, help="which process of the workers")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=0.0, help="jobs a second")
    parser.add_argument("--batch", action="store_true", help="JobQueue.map every 10 ms")
    parser.add_argument("--threads", type=int, default=1, help="submitting threads")
    args = parser.parse_args(argv)
    if args.role == "workers":
        asyncio.run(run_workers(args))
    else:
        run_submitter(args)


if __name__ == "__main__":
    main(sys.argv[1:])
