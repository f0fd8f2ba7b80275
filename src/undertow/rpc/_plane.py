"""What the rpc layer asks of the data layer, without importing it.

Every :class:`~undertow.Server` holds a data server (values left where they were computed,
served to pointer holders), and every client turns a pointer's JSON form in an answer into a
:class:`~undertow.Pointer`. Both live in :mod:`undertow.data`, a layer above this one, so
this module owns the interface they are reached through: :class:`DataPlane`, and the two
factories the data layer plugs in when it is imported (``undertow`` imports it, so any
program that imports undertow has them). Without them a server keeps nothing and a client
hands pointers back as their JSON form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from undertow.errors import ConfigError, UndertowError
from undertow.wire import ErrorInfo, error_info

if TYPE_CHECKING:
    from undertow.rpc._calls import FunctionInfo
    from undertow.rpc._incoming import Incoming
    from undertow.rpc._receivers import Job

__all__ = [
    "DataPlane",
    "JobPlane",
    "PipePlane",
    "enqueue_job",
    "make_data_plane",
    "make_job_plane",
    "make_pipe_plane",
    "make_pointer",
    "plug_data",
    "plug_jobs",
    "plug_patterns",
]

Arguments = tuple[Sequence[Any], dict[str, Any]]


class DataPlane(Protocol):
    """A server's data server, as the server uses it."""

    def handlers(self) -> dict[str, Callable[[Incoming], Job | None]]:
        """The data functions (``_data_*``), served as raw handlers."""

    def mentions_pointers(self, frames: Sequence[Any]) -> bool:
        """True if a call's frames may hold a pointer (a cheap search, no decoding)."""

    def resolve(
        self,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        timeout: float | None,
    ) -> Arguments:
        """The arguments with each pointer replaced by its value."""

    def keep(self, value: Any, incoming: Incoming) -> dict[str, Any]:
        """Keep ``value`` here; the pointer's JSON form to send instead."""

    def failure(self, exc: UndertowError) -> ErrorInfo:
        """How a data error (a value not found, denied, not storable) reaches the caller."""

    def stopped(self) -> None:
        """The server stopped serving: peers holding its values in shared memory ask again."""

    def stats(self) -> dict[str, int]:
        """Bytes and objects kept, in memory and spilled to disk (empty: no data layer)."""


#: builds a server's data plane: (server, directory=, memory_limit=, calls=, token=)
PlaneFactory = Callable[..., DataPlane]
#: builds a pointer from its JSON form and the client it came through
PointerFactory = Callable[..., Any]

_factories: dict[str, Any] = {}


def plug_data(plane: PlaneFactory, pointer: PointerFactory) -> None:
    """Called once by :mod:`undertow.data` when it is imported."""
    _factories["plane"] = plane
    _factories["pointer"] = pointer


def make_data_plane(
    server: Any,
    *,
    directory: str | Path | None,
    memory_limit: int | None,
    calls: bool,
    token: str | None,
) -> DataPlane:
    """The data plane of a new ``server``."""
    factory = _factories.get("plane")
    if factory is None:
        return _NoData()
    return factory(  # type: ignore[no-any-return]
        server, directory=directory, memory_limit=memory_limit, calls=calls, token=token
    )


def make_pointer(form: dict[str, Any], via: Any) -> Any:
    """A pointer of ``form`` that came through the client ``via`` (the form itself when no
    data layer is plugged in)."""
    factory = _factories.get("pointer")
    return form if factory is None else factory(form, via=via)


class JobPlane(Protocol):
    """A server's worker for the functions whose calls are durable jobs (option ``queue``)."""

    def start(self) -> None:
        """Start running the jobs of those functions, on the running loop."""

    async def close(self, timeout: float) -> None:
        """Stop claiming, let the jobs held finish within ``timeout`` seconds, stop."""


def plug_jobs(plane: Callable[[Any], JobPlane | None], enqueue: Callable[..., Any]) -> None:
    """Called once by :mod:`undertow.queue` when it is imported: ``plane(server)`` makes a
    server's job worker (None when no function of it is queued), ``enqueue(client, name,
    args, kwargs, queue, asynchronous, server_backend)`` queues a call from a client
    (``server_backend``: where the server said it takes its jobs, a URL without password)."""
    _factories["jobs"] = plane
    _factories["enqueue"] = enqueue


def make_job_plane(server: Any) -> JobPlane | None:
    """The job worker of ``server``, or None (no queued function, or no queue layer)."""
    factory = _factories.get("jobs")
    return None if factory is None else factory(server)


def enqueue_job(
    client: Any,
    info: FunctionInfo,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    asynchronous: bool,
) -> Any:
    """Queue a call of ``info`` as a durable job; its Job (a coroutine of it if
    ``asynchronous``)."""
    factory = _factories.get("enqueue")
    if factory is None:
        raise ConfigError("queueing calls needs undertow's job queue: import undertow.queue")
    where = getattr(client, "_jobs_backend", None)  # what the server said (RemoteFunctions)
    return factory(client, info.name, args, kwargs, info.queue, asynchronous, where)


class PipePlane(Protocol):
    """A server's part in the messaging patterns (masters, pipelines, sinks): the raw
    handlers through which messages of streams reach it (``_pipe*``)."""

    def handlers(self) -> dict[str, Callable[[Incoming], Job | None]]:
        """The pattern functions (``_pipe*``), served as raw handlers."""

    def close(self) -> None:
        """The server stopped: stop passing messages on."""

    def stats(self) -> dict[str, Any] | None:
        """What it passed on (messages received, answered, failed, dropped, in flight,
        latency; a master's queue and workers); None if it took no part in a pattern."""


def plug_patterns(plane: Callable[..., PipePlane]) -> None:
    """Called once by :mod:`undertow.patterns` when it is imported: ``plane(server,
    token=...)`` makes a server's pattern plane."""
    _factories["pipes"] = plane


def make_pipe_plane(server: Any, *, token: str | None) -> PipePlane:
    """The pattern plane of a new ``server`` (one that serves nothing when the patterns
    layer was never imported)."""
    factory = _factories.get("pipes")
    return _NoPipes() if factory is None else factory(server, token=token)


class _NoPipes:
    def handlers(self) -> dict[str, Callable[[Incoming], Job | None]]:
        return {}

    def close(self) -> None:
        return None

    def stats(self) -> dict[str, Any] | None:
        return None


class _NoData:
    """The data plane of a server when the data layer was never imported."""

    def handlers(self) -> dict[str, Callable[[Incoming], Job | None]]:
        return {}

    def mentions_pointers(self, frames: Sequence[Any]) -> bool:
        return False

    def resolve(
        self,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        timeout: float | None,
    ) -> Arguments:
        return args, kwargs

    def keep(self, value: Any, incoming: Incoming) -> dict[str, Any]:
        raise ConfigError("return_pointer needs undertow's data layer: import undertow.data")

    def failure(self, exc: UndertowError) -> ErrorInfo:
        return error_info(exc)

    def stopped(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {}
