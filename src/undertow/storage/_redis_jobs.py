"""The job store on Redis: the :class:`JobStore` operations of :class:`RedisBackend`.

Each operation that touches more than one key is one Lua script (storage/_redis_scripts.py),
so it is atomic and one round trip; the key names are in storage/_keys.py.

A job's record is a HASH of its fields rather than one encoded string: the scripts change the
few fields a step needs (state, attempts, lease) in place, without reading, decoding and
writing back the payload, and a payload or result stays the exact bytes given (the msgpack
library inside Redis would turn binary strings into text). A read is one HGETALL, turned into a
:class:`JobRecord` by msgspec.

A QUEUED job not due yet (a retry's backoff, or ``not_before`` given at enqueue) waits in the
delayed set, not on its queues: claims and sweeps push it back onto its queues when it is due.
So :meth:`queue_length` counts the jobs waiting now (and stale entries), not the delayed ones.

The counts by queue and state that :meth:`queues` reads are kept by the scripts as jobs move
(one hash); the workers' records are a hash, and a sorted set says until when each is live.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from undertow.storage import _keys as keys
from undertow.storage._jobs import (
    JobRecord,
    JobState,
    JobStore,
    Offer,
    QueueInfo,
    WorkerInfo,
    check_job_id,
    check_queue_name,
    check_worker_name,
)
from undertow.storage._redis_scripts import JobScripts

if TYPE_CHECKING:
    from undertow.errors import BackendError

try:
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - RedisBackend refuses to start without the client
    RedisError = OSError  # type: ignore[misc,assignment]

__all__ = ["RedisJobs"]

#: the fields held as raw bytes (every other field is text)
_BYTES = frozenset({b"payload", b"result", b"error"})
#: jobs a sweep handles per script run (it runs again while there are more), so that one run
#: never holds Redis for long
_SWEEP_BATCH = 1000
#: records read per round trip when listing
_PAGE = 200
#: a record's field names, in order, and their defaults
_FIELDS = JobRecord.__struct_fields__
_DEFAULTS: dict[str, Any] = dict(
    zip(_FIELDS[-len(JobRecord.__struct_defaults__) :], JobRecord.__struct_defaults__, strict=True)
)
#: the fields not stored at their default (a missing one reads as the default, in the
#: scripts as in JobRecord): those of a job that has not run, but the ones the scripts need
_OMITTED = frozenset(
    {"codec", "submitter", "not_before", "started", "finished", "worker", "lease_until"}
    | {"cancel_requested", "reason", "result_ttl", "route", "local_queues", "local_until"}
)
#: the prefixes every script that builds a job's or a queue's key name is given
_PREFIXES = (keys.JOB_PREFIX, keys.QUEUE_PREFIX)


class RedisJobs(JobStore):
    """The job store over ``self._redis`` (a mixin of :class:`RedisBackend`)."""

    announces = True
    _redis: Any
    url: str

    if TYPE_CHECKING:

        def _failed(self, exc: Exception) -> BackendError: ...

    @property
    def _scripts(self) -> JobScripts:
        """The scripts, registered with this backend's client on first use."""
        scripts: JobScripts | None = self.__dict__.get("_job_scripts")
        if scripts is None:
            scripts = self.__dict__["_job_scripts"] = JobScripts(self._redis)
        return scripts

    async def _run(self, script: Any, names: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await script(keys=names, args=args)
        except RedisError as exc:
            raise self._failed(exc) from exc

    async def notifications(self, queues: Sequence[str]) -> AsyncIterator[str]:
        channels = {keys.signal(check_queue_name(q)): q for q in queues}
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            async for message in pubsub.listen():
                name = message.get("channel", b"")
                yield channels.get(name.decode() if isinstance(name, bytes) else name, "")
        except RedisError as exc:
            raise self._failed(exc) from exc
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def enqueue(self, job: JobRecord, *, now: float | None = None) -> JobRecord:
        stored, names, args = enqueue_call(job, _now(now))
        reply = await self._run(self._scripts.enqueue, names, args)
        return enqueued(stored, reply)

    async def enqueue_many(
        self, jobs: Sequence[JobRecord], *, now: float | None = None
    ) -> list[JobRecord]:
        at = _now(now)
        prepared = [_prepared(job, at) for job in jobs]
        if not prepared:
            return []
        args: list[Any] = [*_PREFIXES, repr(at)]
        for stored, idem in prepared:
            queues = list(dict.fromkeys(stored.queues))
            text, binary = _fields(stored)
            fields = text + binary
            args += [stored.id, idem, repr(stored.not_before), len(queues), *queues]
            args += [len(fields), *fields]
        names = [keys.JOBS, keys.JOBS_DELAYED]
        replies = await self._run(self._scripts.enqueue_many, names, args)
        # (the replies stop at an id that exists: its reply raises the ValueError)
        pairs = zip(prepared, replies, strict=False)
        return [enqueued(stored, reply) for (stored, _), reply in pairs]

    async def claim(
        self,
        queues: Sequence[str],
        worker: str,
        *,
        lease: float,
        count: int = 1,
        now: float | None = None,
        offer: Offer | None = None,
    ) -> list[JobRecord]:
        for name in queues:
            check_queue_name(name)
        if not queues or count < 1:
            return []
        at = _now(now)
        names = [keys.JOBS_RUNNING, keys.JOBS_DELAYED, *(keys.queue(q) for q in queues)]
        args = [*_PREFIXES, repr(at), repr(at + lease), count, check_worker_name(worker)]
        if offer is None:
            args += [0, 0, 0]
        else:
            args += [max(offer.slots, 0), repr(offer.until), repr(offer.lease)]
        taken = await self._run(self._scripts.claim, names, args)
        return [_decode_flat(flat) for flat in taken]

    async def withdraw(self, worker: str) -> None:
        await self._run(self._scripts.withdraw, [], [*_PREFIXES, repr(_now(None)), worker])

    async def renew(
        self, job_id: str, attempt: int, *, lease: float, now: float | None = None
    ) -> bool:
        at = _now(now)
        args = [*_PREFIXES, repr(at), check_job_id(job_id), str(attempt), repr(at + lease)]
        return bool(await self._run(self._scripts.renew, [keys.JOBS_RUNNING], args))

    async def complete(
        self, job_id: str, attempt: int, result: bytes, *, now: float | None = None
    ) -> bool:
        names = [keys.JOBS_RUNNING, keys.JOBS_FINAL]
        args = [*_PREFIXES, repr(_now(now)), check_job_id(job_id), str(attempt), result]
        return bool(await self._run(self._scripts.complete, names, args))

    async def complete_many(
        self, results: Sequence[tuple[str, int, bytes]], *, now: float | None = None
    ) -> list[bool]:
        args: list[Any] = [*_PREFIXES, repr(_now(now))]
        for job_id, attempt, result in results:
            args += [check_job_id(job_id), str(attempt), result]
        if not results:
            return []
        names = [keys.JOBS_RUNNING, keys.JOBS_FINAL]
        return [bool(done) for done in await self._run(self._scripts.complete_many, names, args)]

    async def fail(
        self,
        job_id: str,
        attempt: int,
        error: bytes,
        *,
        retry_delay: float | None = None,
        now: float | None = None,
    ) -> JobState | None:
        names = [keys.JOBS_RUNNING, keys.JOBS_DELAYED, keys.JOBS_FINAL]
        delay = "" if retry_delay is None else repr(float(retry_delay))
        args = [*_PREFIXES, repr(_now(now)), check_job_id(job_id), str(attempt), error, delay]
        state = await self._run(self._scripts.fail, names, args)
        return None if state is None else JobState(state.decode())

    async def sweep(self, *, now: float | None = None) -> int:
        names = [keys.JOBS_RUNNING, keys.JOBS_DELAYED, keys.JOBS_FINAL, keys.JOBS]
        args = [
            *_PREFIXES,
            repr(_now(now)),
            _SWEEP_BATCH,
            keys.IDEMPOTENCY_PREFIX,
            keys.OUTPUT_SUFFIX,
        ]
        total = 0
        while True:
            changed, more = await self._run(self._scripts.sweep, names, args)
            total += int(changed)
            if not more:
                return total

    async def cancel(self, job_id: str, *, now: float | None = None) -> JobState | None:
        names = [keys.JOBS_DELAYED, keys.JOBS_FINAL]
        args = [*_PREFIXES, repr(_now(now)), check_job_id(job_id)]
        state = await self._run(self._scripts.cancel, names, args)
        return None if state is None else JobState(state.decode())

    async def retry(self, job_id: str, *, now: float | None = None) -> JobState | None:
        args = [*_PREFIXES, repr(_now(now)), check_job_id(job_id)]
        state = await self._run(self._scripts.retry, [keys.JOBS_FINAL], args)
        return None if state is None else JobState(state.decode())

    async def queues(self) -> list[QueueInfo]:
        counts, lengths = await self._run(
            self._scripts.queues, [keys.JOB_COUNTS], [keys.QUEUE_PREFIX]
        )
        found = {
            name.decode(): QueueInfo(name=name.decode(), length=int(length))
            for name, length in zip(lengths[0::2], lengths[1::2], strict=True)
        }
        for field, number in zip(counts[0::2], counts[1::2], strict=True):
            name, _, state = field.decode().partition(" ")
            found[name].states[state] = int(number)
        return [found[name] for name in sorted(found)]

    async def worker_beat(self, info: WorkerInfo, *, ttl: float, now: float | None = None) -> None:
        check_worker_name(info.name)
        if not ttl > 0:
            raise ValueError(f"worker ttl {ttl!r} must be a positive number of seconds")
        at = _now(now)
        record = msgspec.json.encode(msgspec.structs.replace(info, beat=at, ttl=float(ttl)))
        args = [repr(at), info.name, repr(at + ttl), record]
        await self._run(self._scripts.beat, [keys.WORKERS, keys.WORKERS_INFO], args)

    async def workers(self, *, now: float | None = None) -> list[WorkerInfo]:
        names = [keys.WORKERS, keys.WORKERS_INFO]
        records = await self._run(self._scripts.workers, names, [repr(_now(now))])
        found = [msgspec.json.decode(record, type=WorkerInfo) for record in records]
        return sorted(found, key=lambda w: w.name)

    async def worker_gone(self, name: str) -> bool:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(keys.WORKERS, check_worker_name(name))
                pipe.hdel(keys.WORKERS_INFO, name)
                removed, _ = await pipe.execute()
        except RedisError as exc:
            raise self._failed(exc) from exc
        return bool(removed)

    async def job(self, job_id: str) -> JobRecord | None:
        try:
            fields = await self._redis.hgetall(keys.job(check_job_id(job_id)))
        except RedisError as exc:
            raise self._failed(exc) from exc
        return _decode(fields.items()) if fields else None

    async def jobs_by_id(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        ids = [check_job_id(job_id) for job_id in job_ids]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(keys.job(job_id))
                replies = await pipe.execute()
        except RedisError as exc:
            raise self._failed(exc) from exc
        return [_decode(fields.items()) if fields else None for fields in replies]

    async def jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        submitter: str | None = None,
        limit: int = 1000,
        after: str | None = None,
        newest_first: bool = False,
    ) -> list[JobRecord]:
        def wanted(record: JobRecord) -> bool:
            return (
                (state is None or record.state == state)
                and (queue is None or queue in record.queues)
                and (submitter is None or record.submitter == submitter)
            )

        found: list[JobRecord] = []
        try:
            if state == JobState.RUNNING:  # the running set (jobs held by workers), no scan
                running = await self.jobs_by_id(await self._running(after, newest_first))
                return [r for r in running if r is not None and wanted(r)][: max(limit, 0)]
            start = await self._start_after(after, newest_first)
            while len(found) < limit:
                ids = await self._redis.zrange(
                    keys.JOBS, start, start + _PAGE - 1, desc=newest_first
                )
                if not ids:
                    break
                start += len(ids)
                async with self._redis.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.hgetall(keys.job(job_id.decode()))
                    replies = await pipe.execute()
                records = (_decode(fields.items()) for fields in replies if fields)
                found += [record for record in records if wanted(record)]
        except RedisError as exc:
            raise self._failed(exc) from exc
        return found[: max(limit, 0)]

    async def _start_after(self, after: str | None, newest_first: bool) -> int:
        """The index, in the jobs' sorted set read in that order, of the job after ``after``
        (0 without one); a LookupError if ``after`` is not stored."""
        if after is None:
            return 0
        name = keys.JOBS
        rank = await (
            self._redis.zrevrank(name, check_job_id(after))
            if newest_first
            else self._redis.zrank(name, check_job_id(after))
        )
        if rank is None:
            raise LookupError(
                f"job {after} is not stored (purged?): it cannot mark where a page starts; "
                "ask for the first page again (after=None)"
            )
        return int(rank) + 1

    async def _running(self, after: str | None, newest_first: bool) -> list[str]:
        """The ids of the RUNNING jobs in the jobs' order (by submission, then id), those
        after ``after`` only; a LookupError if ``after`` is not stored."""
        ids = [i.decode() for i in await self._redis.zrange(keys.JOBS_RUNNING, 0, -1)]
        scores = await self._redis.zmscore(keys.JOBS, ids) if ids else []
        order = sorted(((s, i) for s, i in zip(scores, ids, strict=True) if s is not None))
        order = order[::-1] if newest_first else order
        if after is not None:
            await self._start_after(after, newest_first)  # (it names an unknown one)
            mark = (await self._redis.zscore(keys.JOBS, after), after)
            order = [o for o in order if (o < mark if newest_first else o > mark)]
        return [job_id for _, job_id in order]

    async def queue_length(self, queue: str) -> int:
        try:
            return int(await self._redis.llen(keys.queue(check_queue_name(queue))))
        except RedisError as exc:
            raise self._failed(exc) from exc

    async def append_output(self, job_id: str, text: str, *, attempt: int | None = None) -> bool:
        names = [keys.job(check_job_id(job_id)), keys.job_output(job_id)]
        fence = "" if attempt is None else str(attempt)
        return bool(await self._run(self._scripts.append, names, [text, fence]))

    async def durability(self) -> str | None:
        try:
            found = await self._redis.config_get("appendonly")
        except RedisError:  # CONFIG may be renamed or refused (managed Redis): not known
            return None
        setting = {_text(k): _text(v) for k, v in found.items()}.get("appendonly", "")
        if setting.lower() == "yes":
            return None
        return (
            f"redis at {self.url} keeps no append-only file, so jobs it acknowledged are "
            "lost if it restarts; start it with `undertow broker`, or run it with "
            "--appendonly yes --appendfsync always (or everysec, to lose at most a second)"
        )

    async def output(self, job_id: str, start: int = 0) -> list[str]:
        try:
            pieces = await self._redis.lrange(keys.job_output(check_job_id(job_id)), start, -1)
        except RedisError as exc:
            raise self._failed(exc) from exc
        return [piece.decode() for piece in pieces]


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def enqueue_call(job: JobRecord, at: float) -> tuple[JobRecord, list[str], list[Any]]:
    """The record ``job`` is stored as (enqueued ``at``), and the key names and arguments
    of the enqueue script that stores it (text fields in one msgpack array: one argument
    for the client to write, not one per field)."""
    stored, idem = _prepared(job, at)
    names = [keys.job(job.id), keys.JOBS, keys.JOBS_DELAYED]
    names += [keys.queue(name) for name in dict.fromkeys(job.queues)]
    text, binary = _fields(stored)
    args = [*_PREFIXES, repr(at), job.id, idem, repr(stored.not_before)]
    return stored, names, [*args, msgspec.msgpack.encode(text), *binary]


def _fields(job: JobRecord) -> tuple[list[Any], list[Any]]:
    """The hash's field/value pairs of ``job``, flat: the text ones (numbers as text, as
    ``repr`` keeps a float exact; booleans as 1 or 0; the queues joined by spaces) and the
    binary ones. None fields are left out, and so are those at the default that every
    reader of the hash assumes when a field is missing (a smaller hash: less to write and
    to keep)."""
    text: list[Any] = []
    binary: list[Any] = []
    for name, value in zip(_FIELDS, msgspec.structs.astuple(job), strict=True):
        if value is None or (name in _OMITTED and value == _DEFAULTS[name]):
            continue
        if isinstance(value, bytes):
            binary += (name, value)
        elif isinstance(value, str):
            text += (name, value)
        elif isinstance(value, bool):
            text += (name, "1" if value else "0")
        else:
            text += (name, " ".join(value) if isinstance(value, list) else repr(value))
    return text, binary


def handed(entry: bytes, worker: str) -> JobRecord:
    """A job from ``worker``'s inbox: ``"{attempt} {lease_until} {started} {length}\\n"``,
    then its text fields (a msgpack array of that length) and its payload."""
    header, _, rest = entry.partition(b"\n")
    attempt, lease_until, started, length = header.split()
    size = int(length)
    flat = msgspec.msgpack.decode(rest[:size])
    fields: dict[str, Any] = dict(zip(flat[0::2], flat[1::2], strict=True))
    fields["queues"] = fields.get("queues", "").split()
    fields.update(
        payload=rest[size:],
        state=JobState.RUNNING.value,
        attempts=int(attempt),
        worker=worker,
        lease_until=float(lease_until),
        started=float(started),
    )
    return msgspec.convert(fields, JobRecord, strict=False)


def _prepared(job: JobRecord, now: float) -> tuple[JobRecord, str]:
    """``job`` checked, as it is stored (QUEUED, submitted ``now``), and the key name of its
    idempotency key (or "")."""
    check_job_id(job.id)
    if not job.queues:
        raise ValueError(f"job {job.id} names no queue; give it one, e.g. ['default']")
    for name in job.queues:
        check_queue_name(name)
    stored = msgspec.structs.replace(job, state=JobState.QUEUED, submitted=now)
    return stored, "" if job.idempotency_key is None else keys.idempotency(job.idempotency_key)


def enqueued(stored: JobRecord, reply: list[Any]) -> JobRecord:
    """What enqueue answers, from the script's reply for ``stored``."""
    if reply[0] == b"exists":
        raise ValueError(f"job id {stored.id!r} exists already; a new job needs a new id")
    if reply[0] == b"duplicate":
        return _decode_flat(reply[1])
    if reply[0] == b"handed":  # (started at once for an idle worker)
        return msgspec.structs.replace(stored, state=JobState.RUNNING, attempts=1)
    return stored


def _decode(pairs: Iterable[tuple[bytes, bytes]]) -> JobRecord:
    """A record from its hash's fields (the raw bytes of HGETALL)."""
    fields: dict[str, Any] = {
        name.decode(): value if name in _BYTES else value.decode() for name, value in pairs
    }
    fields["queues"] = fields.get("queues", "").split()
    return msgspec.convert(fields, JobRecord, strict=False)


def _decode_flat(flat: list[bytes]) -> JobRecord:
    """A record from a script's reply of HGETALL: names and values in turn."""
    return _decode(zip(flat[0::2], flat[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
