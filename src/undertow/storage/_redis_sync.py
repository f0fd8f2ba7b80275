"""The two blocking paths of the Redis job store, for the moments when an event loop is in
the way: a submit from sync code, and a worker's inbox.

A job's latency from submit to start is a chain of wake-ups, and on a quiet machine each
hop into an asyncio loop that was asleep costs 0.1-0.25 ms (measured: a ``call_soon_threadsafe``
into an idle loop 0.11 ms, a whole coroutine run through one 0.24 ms, a handoff through a
``queue.SimpleQueue`` 0.03 ms). So the submitting thread runs the enqueue script itself,
with redis-py's blocking client, instead of handing it to the portal loop; and a worker reads
the jobs handed to it in a thread blocked on ``BLPOP``, which passes them straight to the job
threads. Both use the scripts and encodings of ``storage/_redis_jobs.py``.
"""

from __future__ import annotations

import time
from typing import Any

from undertow.config import redact_url
from undertow.errors import BackendError, BrokerUnavailable
from undertow.storage import _keys as keys
from undertow.storage._jobs import Inbox, JobRecord, Submitter
from undertow.storage._redis_jobs import enqueue_call, enqueued, handed
from undertow.storage._redis_scripts import JobScripts

try:
    import redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError:  # pragma: no cover - RedisBackend refuses to start without the client
    redis = None  # type: ignore[assignment]

__all__ = ["RedisInbox", "RedisSubmitter"]


def _client(url: str, timeout: float) -> Any:
    if redis is None:  # pragma: no cover
        raise BackendError("the Redis client is missing: pip install 'undertow[redis]'")
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def _failed(url: str, exc: Exception) -> BackendError:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return BrokerUnavailable(f"{redact_url(url)} is unreachable: {exc}")
    return BackendError(f"registry {redact_url(url)}: {exc}")


class RedisInbox(Inbox):
    """The jobs handed to ``worker`` (see the ``hand`` step of the enqueue script). Its
    client is thread-safe: a take may wait in one thread while another nudges it."""

    #: the longest wait of a take (seconds)
    WAIT_MAX = 5.0

    def __init__(self, url: str, worker: str, *, timeout: float) -> None:
        self._url, self.worker = url, worker
        self._key = keys.inbox(worker)
        self._client: Any = _client(url, timeout + self.WAIT_MAX)

    def __repr__(self) -> str:
        return f"<RedisInbox {self.worker} at {redact_url(self._url)}>"

    def take(self, wait: float) -> list[JobRecord]:
        try:  # (one job as soon as it comes: the next take finds any others at once)
            if wait > 0:
                popped = self._client.blpop([self._key], timeout=min(wait, self.WAIT_MAX))
                entries = [] if popped is None else [popped[1]]
            else:
                entries = self._client.lpop(self._key, 100) or []
        except RedisError as exc:
            raise _failed(self._url, exc) from exc
        return [handed(entry, self.worker) for entry in entries if entry]  # ("": a nudge)

    def nudge(self) -> None:
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(self._key, b"")
                pipe.pexpire(self._key, int(self.WAIT_MAX * 2000))
                pipe.execute()
        except RedisError as exc:
            raise _failed(self._url, exc) from exc

    def close(self) -> None:
        self._client.close()


class RedisSubmitter(Submitter):
    """Enqueues jobs from the calling thread, one round trip each."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self._url = url
        self._client = _client(url, timeout)
        self._scripts = JobScripts(self._client)

    def enqueue(self, job: JobRecord, *, now: float | None = None) -> JobRecord:
        """What :meth:`~undertow.storage.JobStore.enqueue` does, in this thread."""
        stored, names, args = enqueue_call(job, time.time() if now is None else float(now))
        try:
            reply = self._scripts.enqueue(keys=names, args=args)
        except RedisError as exc:
            raise _failed(self._url, exc) from exc
        return enqueued(stored, reply)

    def close(self) -> None:
        self._client.close()
