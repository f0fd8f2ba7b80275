"""Calls that are durable jobs: a server's functions given the option ``queue``.

``server.config({"train_*": {"queue": "gpu"}})`` makes every call of those functions a job
on queue ``gpu``: a client's ``client.train_small(...)`` (or ``.enqueue(...)``) stores the
job in the cluster backend and returns its :class:`~undertow.Job` at once, and the server
runs those jobs with a worker of its own (as would any ``undertow worker`` that has the
functions), under its authenticator. The rpc layer reaches this module through the two
factories plugged in below (``rpc/_plane.py``), so that it never imports the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from undertow.config import backend_url, redact_url
from undertow.errors import ConfigError
from undertow.queue._queue import JobQueue
from undertow.queue._worker import Worker
from undertow.rpc import client_token

__all__ = ["ServerJobs", "enqueue"]

log = logging.getLogger(__name__)

#: the queues clients opened to enqueue calls, by backend URL and token
_queues: dict[tuple[str, str | None], JobQueue] = {}


class ServerJobs:
    """The worker of a server's queued functions, on the server's loop."""

    def __init__(self, server: Any, queues: list[str], functions: dict[str, Any]) -> None:
        self._server = server
        self.worker = Worker(
            server.job_backend,
            queues,
            functions=functions,
            auth=server.authenticator,
            concurrency=server.max_workers,
            admit=self._admit,
            hosts=[],  # jobs sent to this host by locality are for `undertow worker`s
        )
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, server: Any) -> ServerJobs | None:
        """The job worker ``server`` needs: None if no function of it is queued."""
        queued = {info.name: info.queue for info in server.info() if info.queue}
        if not queued:
            return None
        functions = {name: server.function(name).fn for name in queued}
        return cls(server, sorted(set(queued.values())), functions)

    def _admit(
        self, name: str, identity: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bool:
        """A job runs here as a call would: only its queued functions, by name (never a
        pickled callable: asked before unpickling), no job of an unknown submitter on a
        server that takes no anonymous callers, and the function's rule (option ``auth``)."""
        server = self._server
        if name not in self.worker.functions:  # a pickled callable, or another function
            return False
        if identity is None and server.authenticator is not None and not server.allows_anonymous:
            return False
        entry = server.function(name)
        rule = None if entry is None else entry.auth
        return rule is None or bool(rule(identity, name, args, kwargs))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.worker.run()
        except Exception:  # the server goes on serving its calls
            log.exception("server %r: its job worker stopped", self._server.name)

    async def close(self, timeout: float) -> None:
        """Drain the worker: the jobs it holds finish within ``timeout``, or run again
        elsewhere after their leases."""
        task = self._task
        if task is None:
            return
        self.worker.drain()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def enqueue(
    client: Any,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    queue: str | None,
    asynchronous: bool,
    server_backend: str | None = None,
) -> Any:
    """Queue a call of the server function ``name`` (from ``client``) on ``queue``; its Job,
    or a coroutine of it. ``server_backend``: where the server takes its jobs (a client on
    another backend is told, rather than queueing a job nobody would run)."""
    if queue is None:
        raise ConfigError(
            f"{name}() is not queued on its server: give it a queue there, e.g. "
            f"server.config({{{name!r}: {{'queue': 'jobs'}}}}), and the server runs its jobs"
        )
    token, url = client_token(client), backend_url(None)
    if server_backend is not None and redact_url(url) != server_backend:
        raise ConfigError(
            f"{name}() is queued on {server_backend}, and this client's jobs go to "
            f"{redact_url(url)}: set UNDERTOW_BACKEND to the server's backend (with its "
            "password, if it has one), or the job would never run"
        )
    jobs = _queues.get((url, token))
    if jobs is None or jobs._handle.closed:
        jobs = _queues[(url, token)] = JobQueue(url, token=token or False)
    if asynchronous:
        return jobs.submit_call_async(name, args, kwargs, queue=queue)
    return jobs.submit_call(name, args, kwargs, queue=queue)
