"""The two blocking paths of the Redis job store, for the moments when an event loop is in
the way: a submit from sync code, and a worker's inbox.

A job's latency from submit to start is a chain of wake-ups, and on a quiet machine each
hop into an asyncio loop that was asleep costs 0.1-0.25 ms (measured: a ``call_soon_threadsafe``
into an idle loop 0.11 ms, a whole coroutine run through one 0.24 ms, a handoff through a
``queue.SimpleQueue`` 0.03 ms). So the submitting thread runs the enqueue script itself
instead of handing it to the portal loop, and the jobs handed to a worker are read by one of
its idle job threads blocked on ``BLPOP``, which then runs the job itself (queue/_inbox.py).
Both talk to Redis through a connection of their own (:class:`_Line`) and use the scripts
and encodings of ``storage/_redis_jobs.py``.
"""

from __future__ import annotations

import threading
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
    from redis.exceptions import NoScriptError, RedisError
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


class _Line:
    """One connection of a client's pool, used without the client's layers (the pool's
    checkout, the retry wrapper, the command objects): a command 0.08 ms sooner on a quiet
    machine (measured: an LPUSH to a worker blocked in BLPOP, 0.47 against 0.55 ms). One
    thread at a time; a broken connection is dropped and the next call opens another."""

    def __init__(self, client: Any) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None

    def call(self, *args: Any) -> Any:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._pool.make_connection()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except (RedisConnectionError, RedisTimeoutError):
            self.close()
            raise

    def script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a registered ``script`` by its digest (loaded first if the server lacks it)."""
        try:
            return self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.call("SCRIPT", "LOAD", script.script)
            return self.call("EVALSHA", script.sha, len(keys), *keys, *args)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()


class RedisInbox(Inbox):
    """The jobs handed to ``worker`` (see the ``hand`` step of the enqueue script). Its
    client is thread-safe: a take may wait in one thread while another nudges it."""

    #: the longest wait of a take (seconds)
    WAIT_MAX = 5.0

    def __init__(self, url: str, worker: str, *, timeout: float) -> None:
        self._url, self.worker = url, worker
        self._key = keys.inbox(worker)
        self._client: Any = _client(url, timeout + self.WAIT_MAX)
        #: the waits: one slot at a time (the one whose turn it is) waits on the inbox
        self._line = _Line(self._client)

    def __repr__(self) -> str:
        return f"<RedisInbox {self.worker} at {redact_url(self._url)}>"

    def take(self, wait: float) -> list[JobRecord]:
        try:  # (one job as soon as it comes: the next take finds any others at once)
            if wait > 0:
                popped = self._line.call("BLPOP", self._key, min(wait, self.WAIT_MAX))
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
        self._line.close()
        self._client.close()


class RedisSubmitter(Submitter):
    """Enqueues jobs from the calling thread, one round trip each (a connection of its own
    per thread)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self._url = url
        self._client = _client(url, timeout)
        self._scripts = JobScripts(self._client)
        self._local = threading.local()
        self._lines: list[_Line] = []
        self._lock = threading.Lock()

    def enqueue(self, job: JobRecord, *, now: float | None = None) -> JobRecord:
        """What :meth:`~undertow.storage.JobStore.enqueue` does, in this thread."""
        stored, names, args = enqueue_call(job, time.time() if now is None else float(now))
        try:
            reply = self._line().script(self._scripts.enqueue, names, args)
        except RedisError as exc:
            raise _failed(self._url, exc) from exc
        return enqueued(stored, reply)

    def _line(self) -> _Line:
        line: _Line | None = getattr(self._local, "line", None)
        if line is None:
            line = self._local.line = _Line(self._client)
            with self._lock:
                self._lines.append(line)
        return line

    def close(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        for line in lines:
            line.close()
        self._client.close()
