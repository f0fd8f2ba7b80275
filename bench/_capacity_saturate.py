"""Redis driven to saturation by our own scripts: how many heartbeats, idle claims and
submits a second one Redis core runs.

The ramp (``bench._capacity_load``) runs real workers, which on a small machine use the CPU
before Redis does. Here the client side is made as light as it gets: each operation is
recorded once per variant through the real Redis backend (its ``_run`` is swapped for a
recorder, so the keys and arguments are exactly the backend's), encoded once as an
``EVALSHA`` request, and replayed over a few connections with many requests in flight,
replies counted by hiredis's parser. Redis's main thread's CPU over the window says whether
it was Redis that ran out (near one core) or the replaying client.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis

from undertow.storage import JobRecord, Offer, WorkerInfo, open_backend

__all__ = ["saturation"]

#: how requests are sent: (connections, requests in flight on each): many in flight on a
#: few connections (Redis reads and answers them in batches: the scripts' own cost), and one
#: at a time on many (each a read and a write of its own, as from separate workers)
SHAPES = {"pipelined": (8, 64), "one at a time": (128, 1)}
#: Redis's main thread at this share of a core or more: it is what ran out
SATURATED = 0.85


def _encode(words: Sequence[Any]) -> bytes:
    """One request in the Redis protocol."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word if isinstance(word, bytes) else str(word).encode()
        parts += [f"${len(data)}\r\n".encode(), data, b"\r\n"]
    return b"".join(parts)


def _record(
    url: str, make: Callable[[Any, int], Any], variants: int, reply: Any
) -> tuple[list[bytes], Any]:
    """``variants`` requests of one operation, as the backend sends them (the recorder
    answers ``reply``, as Redis would); the script."""
    backend: Any = open_backend(url)
    taken: list[bytes] = []
    seen: dict[str, Any] = {}

    async def record(script: Any, names: Sequence[str], args: Sequence[Any]) -> Any:
        seen["script"] = script
        taken.append(_encode(["EVALSHA", script.sha, len(names), *names, *args]))
        return reply

    backend._run = record

    async def each() -> None:
        try:
            for i in range(variants):
                await make(backend, i)
        finally:
            await backend.close()

    asyncio.run(each())
    return taken, seen["script"]


def _heartbeat(backend: Any, i: int) -> Any:
    info = WorkerInfo(name=f"sat:{i}:worker", queues=[f"host:h{i % 100}", "default"])
    return backend.worker_beat(info, ttl=30.0)


def _idle_claim(backend: Any, i: int) -> Any:
    offer = Offer(slots=1, until=time.time() + 30.0, lease=30.0)
    queues = [f"host:h{i % 100}", "default"]
    return backend.claim(queues, f"sat:{i}:worker", lease=30.0, offer=offer)


def _submit(backend: Any, i: int) -> Any:
    job = JobRecord(id=uuid.uuid4().hex, queues=["sat"], function="f", payload=b"\x91\x01")
    return backend.enqueue(job)


#: the operations: name, how one is made, how many variants (a submit needs a new id
#: each), what Redis answers it
OPERATIONS: tuple[tuple[str, Callable[[Any, int], Any], int, Any], ...] = (
    ("worker heartbeat", _heartbeat, 1000, None),
    ("idle worker's claim (nothing queued; its offer made again)", _idle_claim, 1000, []),
    ("submit one job (no idle worker)", _submit, 60_000, [b"stored"]),
)


def _redis_cpu(client: redis.Redis) -> float:
    """Seconds of CPU of Redis's main thread so far (the whole process on older Redis)."""
    cpu = client.info("cpu")
    if "used_cpu_user_main_thread" in cpu:
        return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _replay(
    url: str, requests: list[bytes], seconds: float, once: bool, shape: tuple[int, int]
) -> tuple[int, float]:
    """Send ``requests`` round and round for ``seconds`` (``once``: each at most once) over
    ``shape`` (connections, in flight on each); the replies counted and the wall time."""
    where = urllib.parse.urlsplit(url)
    connections, depth = shape
    conns = [socket.create_connection((where.hostname, where.port)) for _ in range(connections)]
    readers = {c.fileno(): hiredis.Reader() for c in conns}
    sel = selectors.DefaultSelector()
    sent = done = 0
    began = time.perf_counter()
    deadline = began + seconds
    limit = len(requests) if once else None
    try:
        for conn in conns:
            batch = [requests[(sent + k) % len(requests)] for k in range(depth)]
            conn.sendall(b"".join(batch))
            sent += depth
            sel.register(conn, selectors.EVENT_READ, conn)
        while done < sent:
            ready = sel.select(10.0)
            if not ready:
                raise RuntimeError(f"Redis answered nothing for 10 s ({sent - done} waiting)")
            for key, _ in ready:
                conn = key.data
                reader = readers[conn.fileno()]
                reader.feed(conn.recv(1 << 20))
                got = 0
                while (reply := reader.gets()) is not False:
                    if isinstance(reply, hiredis.ReplyError):
                        raise RuntimeError(f"Redis refused a replayed request: {reply}")
                    got += 1
                done += got
                if limit is not None:
                    got = min(got, limit - sent)
                if got > 0 and time.perf_counter() < deadline:
                    batch = [requests[(sent + k) % len(requests)] for k in range(got)]
                    conn.sendall(b"".join(batch))
                    sent += got
    finally:
        sel.close()
        for conn in conns:
            conn.close()
    return done, time.perf_counter() - began


def _one(
    url: str, operation: tuple[str, Any, int, Any], seconds: float, shape: str
) -> dict[str, Any]:
    name, make, variants, reply = operation
    requests, script = _record(url, make, variants, reply)
    with redis.Redis.from_url(url) as client:
        client.script_load(script.script)
        cpu0, mine0 = _redis_cpu(client), time.process_time()
        once = name.startswith("submit")
        replies, wall = _replay(url, requests, seconds, once, SHAPES[shape])
        redis_cores = (_redis_cpu(client) - cpu0) / wall
        client_cores = (time.process_time() - mine0) / wall
        client.flushdb()  # (what the step left: workers, offers, jobs)
    return {
        "operation": name,
        "sent": shape,
        "per_s": round(replies / wall),
        "redis_cpu_cores": round(redis_cores, 2),
        "client_cpu_cores": round(client_cores, 2),
        "redis_us_each": round(1e6 * redis_cores * wall / max(replies, 1), 1),
        "saturated": redis_cores >= SATURATED,
    }


def saturation(url: str, seconds: float = 5.0) -> list[dict[str, Any]]:
    """Each operation replayed as fast as Redis answers, for ``seconds``: its rate, Redis's
    CPU, the replaying client's, and whether Redis was the one that ran out. Flushes the
    database after each (run it last)."""
    return [_one(url, op, seconds, shape) for shape in SHAPES for op in OPERATIONS]
