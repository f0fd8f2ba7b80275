"""``undertow jobs`` and ``undertow queues``: the durable job queue from the shell (the
workers section of ``undertow status`` is in cli/_cluster.py).

Each command opens the backend (``--backend``, else ``$UNDERTOW_BACKEND``, else the embedded
file), runs its store operations on a loop of its own and closes it. Nothing here decodes a
payload or a result: an error is shown from its :class:`~undertow.wire.ErrorInfo`, which is
msgpack, never a pickle.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import click

from undertow.cli._cluster import render_rows
from undertow.errors import UndertowError, WireError
from undertow.storage import (
    Backend,
    JobRecord,
    JobState,
    QueueInfo,
    check_queue_name,
    open_backend,
)
from undertow.wire import decode_error

__all__ = ["jobs", "queues"]

T = TypeVar("T")

#: seconds a command waits for the backend
TIMEOUT = 30.0
#: the states, in the order of a job's life (the columns of ``undertow queues``)
STATES = [state.value for state in JobState]

_backend_option = click.option(
    "--backend",
    default=None,
    help="Backend URL (default: $UNDERTOW_BACKEND, else ~/.undertow/cluster.db).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")


def _run(backend: str | None, op: Callable[[Backend], Coroutine[Any, Any, T]]) -> tuple[T, str]:
    """``op`` on the backend, and the backend's URL (no password); an error of undertow's or
    a backend that does not answer becomes a click error naming it."""

    async def run() -> tuple[T, str]:
        try:
            store = open_backend(backend)
        except ImportError as exc:  # redis:// without the redis client installed
            raise click.ClickException(str(exc)) from None
        try:
            async with asyncio.timeout(TIMEOUT):
                return await op(store), store.url
        except TimeoutError:
            raise click.ClickException(
                f"backend {store.url} did not answer within {TIMEOUT:g} s"
            ) from None
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except UndertowError as exc:
        raise click.ClickException(str(exc)) from None


def _job_id(value: str) -> str:
    """A job id as the store spells it (32 lowercase hex digits); a UUID in another common
    spelling (dashes, capitals, braces) is accepted."""
    try:
        return uuid.UUID(value.strip()).hex
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a job id; give the 32 hex digits that submit printed or "
            "`undertow jobs ls` lists (e.g. 1f3a9c2e...)",
            param_hint="ID",
        ) from None


def _when(at: float) -> str | None:
    if not at:
        return None
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="seconds")


def _age(seconds: float) -> str:
    """A duration as people read it: 42s, 3m05s, 2h07m, 3d04h."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


# -- undertow jobs ls -------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """The durable job queue's jobs: list, show, cancel and retry them."""


@jobs.command("ls")
@click.option(
    "--state",
    type=click.Choice(STATES, case_sensitive=False),
    default=None,
    help="Only jobs in this state.",
)
@click.option("--queue", default=None, help="Only jobs pushed onto this queue.")
@click.option("--submitter", default=None, help="Only jobs of this submitter (an identity).")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most this many jobs, oldest first.",
)
@_backend_option
@_json_option
def jobs_ls(
    state: str | None,
    queue: str | None,
    submitter: str | None,
    limit: int,
    backend: str | None,
    as_json: bool,
) -> None:
    """List the jobs the backend keeps, oldest submitted first: id, state, function,
    queues, attempts, age and worker.

    \b
        undertow jobs ls --state failed
        undertow jobs ls --queue gpu --limit 20 --json
    """
    if queue is not None:
        try:
            check_queue_name(queue)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--queue") from None
    chosen = None if state is None else JobState(state.lower())
    found, url = _run(
        backend, lambda s: s.jobs(state=chosen, queue=queue, submitter=submitter, limit=limit)
    )
    now = time.time()
    rows = [_job_row(r, now) for r in found]
    if as_json:
        click.echo(json.dumps({"backend": url, "jobs": rows}, indent=2))
        return
    if not rows:
        click.echo(f"backend {url}: no jobs" + (" match" if state or queue or submitter else ""))
        return
    click.echo(f"backend {url}")
    columns = ["ID", "STATE", "FUNCTION", "QUEUES", "ATTEMPTS", "SUBMITTED", "WORKER"]
    lines = [
        [
            row["id"],
            row["state"],
            row["function"],
            ",".join(row["queues"]),
            f"{row['attempts']}/{row['max_attempts']}",
            f"{_age(row['age_s'])} ago",
            row["worker"] or "-",
        ]
        for row in rows
    ]
    click.echo(render_rows(columns, lines))
    if len(rows) == limit:
        click.echo(f"(the oldest {limit}; --limit for more, --state or --queue for fewer)")


def _job_row(r: JobRecord, now: float) -> dict[str, Any]:
    return {
        "id": r.id,
        "state": r.state.value,
        "function": r.function,
        "queues": list(r.queues),
        "attempts": r.attempts,
        "max_attempts": r.max_attempts,
        "submitter": r.submitter,
        "submitted": _when(r.submitted),
        "age_s": round(now - r.submitted, 1),
        "worker": r.worker,
        "reason": r.reason,
    }


# -- undertow jobs show -----------------------------------------------------------------------


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@_backend_option
@_json_option
def jobs_show(job_id: str, backend: str | None, as_json: bool) -> None:
    """Show everything the backend keeps of job ID: its record, its error (type, message and
    the remote traceback) and what it printed so far. Payload and result are shown by size:
    read a result with JobQueue().job(ID).result()."""
    wanted = _job_id(job_id)

    async def read(store: Backend) -> tuple[JobRecord | None, list[str]]:
        return await store.job(wanted), await store.output(wanted)

    (found, output), url = _run(backend, read)
    if found is None:
        raise click.ClickException(
            f"no job {wanted} in {url}: never submitted there, or purged after its "
            "result_ttl (list the jobs kept with `undertow jobs ls`)"
        )
    details = _details(found, output)
    if as_json:
        click.echo(json.dumps({"backend": url, "job": details}, indent=2))
        return
    click.echo(_render_details(details, found))


def _details(r: JobRecord, output: list[str]) -> dict[str, Any]:
    """The record for people and for ``--json``: times as ISO text, bytes by size, the error
    decoded."""
    return {
        **_job_row(r, time.time()),
        "codec": r.codec,
        "idempotency_key": r.idempotency_key,
        "not_before": _when(r.not_before),
        "started": _when(r.started),
        "finished": _when(r.finished),
        "lease_until": _when(r.lease_until),
        "cancel_requested": r.cancel_requested,
        "result_ttl_s": r.result_ttl,
        "payload_bytes": len(r.payload),
        "result_bytes": None if r.result is None else len(r.result),
        "error": None if r.error is None else _error(r.error),
        "output": output,
    }


def _error(data: bytes) -> dict[str, Any]:
    """The error report, as its fields (never unpickled: it is msgpack)."""
    try:
        info = decode_error(data)
    except WireError:
        return {"type": "", "message": f"({len(data)} bytes that are not an error report)"}
    return {
        "type": info.type,
        "message": info.message,
        "code": info.code,
        "traceback": info.traceback,
    }


def _render_details(d: dict[str, Any], r: JobRecord) -> str:
    state = d["state"] + (f" ({d['reason']})" if d["reason"] not in ("", d["state"]) else "")
    if d["cancel_requested"] and r.state == JobState.RUNNING:
        state += ", cancellation requested"
    fields = [
        ("state", state),
        ("function", f"{d['function']} ({d['codec']})"),
        ("queues", ", ".join(d["queues"])),
        ("attempts", f"{d['attempts']} of {d['max_attempts']}"),
        ("submitter", d["submitter"] or "(anonymous)"),
        ("submitted", f"{d['submitted']} ({_age(d['age_s'])} ago)"),
        ("not before", d["not_before"] if r.not_before > r.submitted else None),
        ("started", d["started"]),
        ("finished", d["finished"]),
        ("worker", d["worker"] or None),
        ("lease until", d["lease_until"] if r.state == JobState.RUNNING else None),
        ("idempotency", d["idempotency_key"]),
        ("payload", f"{d['payload_bytes']} bytes"),
        ("result", None if r.result is None else f"{d['result_bytes']} bytes"),
        ("kept", f"{_age(r.result_ttl)} after it finishes"),
    ]
    lines = [f"job {d['id']}"]
    lines += [f"  {name:<12} {value}" for name, value in fields if value is not None]
    if d["error"] is not None:
        error = d["error"]
        lines.append(f"error: {': '.join(filter(None, [error['type'], error['message']]))}")
        lines += ["  " + line for line in error.get("traceback", "").rstrip().splitlines()]
    text = "".join(d["output"])
    lines.append("output:" if text else "output: (none)")
    lines += ["  " + line for line in text.rstrip("\n").splitlines()]
    return "\n".join(lines)


# -- undertow jobs cancel / retry -------------------------------------------------------------

#: what the state after a cancel or a retry means, per command ("" for any other state)
_CANCELLED = {
    JobState.CANCELLED: "cancelled",
    JobState.RUNNING: "running: cancellation requested (its worker stops it at its next heartbeat)",
    None: "left as it is (it had finished)",
}
_RETRIED = {
    JobState.QUEUED: "queued: a worker will take it",  # (retried, or already waiting)
    None: "left as it is (only failed, dead and cancelled jobs are retried)",
}


@jobs.command("cancel")
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@_backend_option
@_json_option
def jobs_cancel(job_ids: tuple[str, ...], backend: str | None, as_json: bool) -> None:
    """Cancel jobs: a queued job is cancelled at once, a running one is stopped by its
    worker at its next heartbeat, a finished one is left as it is. Prints the state after,
    per id; exits 1 if an id is unknown."""
    _change(job_ids, backend, as_json, "cancel", _CANCELLED)


@jobs.command("retry")
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@_backend_option
@_json_option
def jobs_retry(job_ids: tuple[str, ...], backend: str | None, as_json: bool) -> None:
    """Run failed, dead or cancelled jobs again: each is queued again at once with its
    attempts so far kept (one more allowed if it had none left), its error cleared. Queued,
    running and done jobs are left as they are. Prints the state after, per id; exits 1 if
    an id is unknown."""
    _change(job_ids, backend, as_json, "retry", _RETRIED)


def _change(
    job_ids: Sequence[str],
    backend: str | None,
    as_json: bool,
    verb: str,
    meaning: dict[JobState | None, str],
) -> None:
    """``verb`` (the store's cancel or retry) of each id in turn; the state after, per id."""
    wanted = list(dict.fromkeys(_job_id(j) for j in job_ids))  # all checked before any change

    async def change(store: Backend) -> list[JobState | None]:
        op = store.cancel if verb == "cancel" else store.retry
        return [await op(job_id) for job_id in wanted]

    states, url = _run(backend, change)
    unknown = [j for j, state in zip(wanted, states, strict=True) if state is None]
    if as_json:
        rows = [
            {"id": j, "state": None if s is None else s.value}
            for j, s in zip(wanted, states, strict=True)
        ]
        click.echo(json.dumps({"backend": url, verb: rows}, indent=2))
    else:
        for job_id, state in zip(wanted, states, strict=True):
            if state is not None:
                click.echo(f"{job_id} {meaning.get(state) or f'{state.value}: {meaning[None]}'}")
    for job_id in unknown:
        click.echo(f"undertow: no job {job_id} in {url} (never submitted, or purged)", err=True)
    if unknown:
        raise SystemExit(1)


# -- undertow queues --------------------------------------------------------------------------


@click.command("queues")
@_backend_option
@_json_option
def queues(backend: str | None, as_json: bool) -> None:
    """List the queues that stored jobs name: each queue's length (entries waiting to be
    claimed) and its jobs by state. A job on several queues counts on each."""
    found, url = _run(backend, lambda s: s.queues())
    if as_json:
        rows = [{"name": q.name, "length": q.length, "states": q.states} for q in found]
        click.echo(json.dumps({"backend": url, "queues": rows}, indent=2))
        return
    if not found:
        click.echo(f"backend {url}: no queues (no stored job names one)")
        return
    click.echo(f"backend {url}")
    click.echo(render_rows(["QUEUE", "LENGTH", *map(str.upper, STATES)], _queue_lines(found)))


def _queue_lines(found: list[QueueInfo]) -> list[list[str]]:
    return [[q.name, str(q.length), *(str(q.states.get(s, 0)) for s in STATES)] for q in found]
