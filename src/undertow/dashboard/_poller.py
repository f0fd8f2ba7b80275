"""The one loop that reads the cluster for every open page: while a page is open (or asked
within ``idle_after`` seconds), it reads the backend once per ``interval`` (a bounded
read: the live processes, the queues, the first page of jobs and of the catalog) and the
figures of the services' servers, hands the reads to the :class:`Board`, and wakes the
pages' event streams. N pages cost one read a second, never one each (and a read that
takes long is spaced out: at most a fifth of the time goes to reading)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from undertow.dashboard._board import Board, Reads
from undertow.errors import UndertowError
from undertow.rpc import Client, stats
from undertow.storage import Backend, Instance, JobState

__all__ = ["Poller"]

log = logging.getLogger(__name__)

#: the newest jobs and catalog records each snapshot holds (older ones: by page)
FIRST_PAGE = 50
#: running jobs read each turn at most (what the workers run)
MAX_RUNNING = 1000
#: servers whose figures are read each turn at most (the latency plot)
MAX_SERVERS = 32


class Poller:
    """Reads ``backend`` for the board; ``run()`` is its loop, on the server's event loop."""

    def __init__(
        self, backend: Backend, *, interval: float = 1.0, idle_after: float = 30.0
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval={interval!r}: poll every positive number of seconds")
        self.backend = backend
        self.board = Board()
        self.interval, self.idle_after = interval, idle_after
        self.errors = ""
        self._wanted_until = 0.0
        self._wake = asyncio.Event()
        #: set (and replaced by a new one) each time the board changes: what pages wait on
        self._tick = asyncio.Event()
        self._clients: dict[str, Client] = {}
        self._figures_task: asyncio.Future[dict[str, dict[str, Any]]] | None = None
        self._figures_read: dict[str, dict[str, Any]] = {}
        self.closing = asyncio.Event()

    def want(self) -> None:
        """A page is looking: keep reading for ``idle_after`` seconds more."""
        self._wanted_until = time.monotonic() + self.idle_after
        self._wake.set()

    async def run(self) -> None:
        """Poll while wanted, until :attr:`closing` is set."""
        while not self.closing.is_set():
            if time.monotonic() > self._wanted_until:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.idle_after)
                continue
            started = time.monotonic()
            await self.poll()
            took = time.monotonic() - started
            # a slow read (SQLite counting a few hundred thousand jobs) is spaced out, so
            # that reading never takes more than a fifth of the backend's time
            left = max(self.interval, 5 * took) - took
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), timeout=max(left, 0.05))

    async def poll(self) -> None:
        """One read of the cluster into the board; the pages waiting are woken."""
        try:
            reads = await self._read()
        except Exception as exc:  # the loop outlives a bad read: the next one may do
            self.errors = f"the backend {self.backend.url} did not answer: {exc}"
            log.warning("dashboard: %s", self.errors, exc_info=not isinstance(exc, UndertowError))
            return
        self.errors = ""
        self.board.update(reads)
        self._wake_pages()

    def _wake_pages(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def _read(self) -> Reads:
        backend = self.backend
        instances = await backend.all_instances()
        return Reads(
            now=time.time(),
            instances=instances,
            workers=await backend.workers(),
            queues=await backend.queues(),
            jobs=await backend.jobs(limit=FIRST_PAGE, newest_first=True),
            running=await backend.jobs(state=JobState.RUNNING, limit=MAX_RUNNING),
            data=await backend.find_data(limit=FIRST_PAGE, newest_first=True),
            figures=self._latest_figures(instances[:MAX_SERVERS]),
        )

    def _latest_figures(self, instances: list[Instance]) -> dict[str, dict[str, Any]]:
        """The servers' figures read last, and a new read started in a thread if none runs:
        servers slow to answer never hold the loop back (their figures come a turn late)."""
        task = self._figures_task
        if task is not None and task.done():
            self._figures_task = None
            if not task.cancelled() and task.exception() is None:
                self._figures_read = task.result()
        if self._figures_task is None and not self.closing.is_set():
            self._figures_task = asyncio.ensure_future(asyncio.to_thread(self._figures, instances))
        return self._figures_read

    def _figures(self, instances: list[Instance]) -> dict[str, dict[str, Any]]:
        """Each reachable instance's server figures (in a thread: blocking calls); an
        instance that does not answer within a second is left out this turn."""
        found: dict[str, dict[str, Any]] = {}
        live = {i.address for i in instances if i.addresses}
        for address in [a for a in self._clients if a not in live]:  # gone: let go
            self._clients.pop(address).close()
        for instance in instances:
            if not instance.addresses or not instance.alive():
                continue
            client = self._clients.get(instance.address)
            try:
                if client is None:
                    client = Client(instance.address, timeout=1.0, connect_timeout=1.0)
                    self._clients[instance.address] = client
                found[instance.id] = stats(client, timeout=1.0)
            except (UndertowError, OSError, TimeoutError) as exc:
                log.debug("dashboard: no figures from %s: %s", instance.address, exc)
        return found

    async def next_snapshot(self, seen: int, timeout: float) -> dict[str, Any] | None:
        """The board's snapshot once its version is past ``seen``; None after ``timeout``
        seconds without one, or when closing."""
        self.want()
        deadline = time.monotonic() + timeout
        while self.board.version <= seen and not self.closing.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick.wait(), timeout=left)
        return None if self.closing.is_set() else self.board.snapshot

    async def close(self) -> None:
        """Stop the loop and the streams; close the servers' clients."""
        self.closing.set()
        self._wake_pages()
        if self._figures_task is not None:  # the thread uses the clients: let it end
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._figures_task, timeout=5.0)
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.close)
