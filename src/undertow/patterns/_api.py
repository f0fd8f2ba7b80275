"""The patterns as users meet them: ``Master``, ``stream``, ``map``, ``Client.job``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from undertow.errors import ConfigError, StreamError
from undertow.patterns._hosted import Hosted
from undertow.patterns._master import MasterEngine
from undertow.patterns._plane import plane_of
from undertow.patterns._result import Result
from undertow.patterns._send import close_senders, sender_for
from undertow.patterns._stream import Stream
from undertow.patterns._wire import Pipeline, count_option
from undertow.rpc import CallOptions, FunctionInfo
from undertow.rpc import Client as RpcClient
from undertow.service import Expose

__all__ = ["Client", "Master", "map", "shutdown", "stats", "stream"]

_builtin_map = map


@Expose(
    config={
        "set": {"input_serialization": "numpy"},
        "get": {"output_serialization": "numpy"},
    }
)
class Master(Hosted):
    """A master: spreads the messages streamed to it over the workers that join it, and
    passes their answers on (to the stream's client, or the next stage of a pipeline).

    ::

        # master.py                               # any number of workers, anywhere
        undertow.Master("squares").serve_forever() undertow.MasterWorker("squares", [square]).run()

        for r in undertow.stream(range(10_000), "squares.square"):
            print(r.id, r.value)

    Workers find the master by name in the registry and take messages of the functions they
    serve (see :class:`MasterWorker`); they may join and leave while it runs. A worker that
    dies holding messages has them given to another.

    Args:
        name: the master's name in the registry; streams send to ``"NAME.function"``.
        scatter: ``scatter(value)`` -> the values to send to workers instead of ``value``
            (each answered on its own, all under the input's id); default: the value alone.
        gather: ``gather(answer)`` -> what to send on instead of a worker's answer (a
            generator function may yield several, or none); default: the answer.
        max_pending: messages that may wait for workers; more fail at once, saying so.
        worker_timeout: seconds a worker may stay silent before it counts as dead.
        cache_bytes: how much the key-value cache (:meth:`set`) may hold.

    A subclass may define ``scatter`` and ``gather`` as methods instead.
    """

    def __init__(
        self,
        name: str = "master",
        *,
        scatter: Callable[[Any], Iterable[Any]] | None = None,
        gather: Callable[[Any], Any] | None = None,
        max_pending: int = 100_000,
        worker_timeout: float = 10.0,
        cache_bytes: int = 256 << 20,
    ) -> None:
        if not name.isidentifier():
            raise ConfigError(f"Master({name!r}): a master's name is a Python identifier")
        self.name = name
        self._scatter = scatter or _own_hook(self, "scatter")
        self._gather = gather or _own_hook(self, "gather")
        self.max_pending = count_option("max_pending", max_pending, "how many messages may wait")
        self.worker_timeout = worker_timeout
        self.cache_bytes = cache_bytes
        self._cache: dict[str, tuple[Any, int]] = {}
        self._cached = 0
        self._engine: MasterEngine | None = None

    def __repr__(self) -> str:
        return f"<Master {self.name!r}>"

    def bind_server(self, server: Any) -> None:
        """Told by the service host which server serves it: its messages go to workers."""
        plane = plane_of(server)
        # streams in pickle, and workers that take them, need no set-up on this machine
        server.accept_user_token()
        self._engine = MasterEngine(
            plane,
            scatter=self._scatter,
            gather=self._gather,
            max_pending=self.max_pending,
            worker_timeout=self.worker_timeout,
        )
        plane.master = self._engine

    # -- the cache ----------------------------------------------------------------------------

    @Expose()
    def set(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key`` in the master's cache (numbers, strings, bytes, lists,
        dicts, arrays), for workers and clients to share without passing it around."""
        from undertow.wire import NumpyCodec

        size = sum(len(memoryview(f)) for f in NumpyCodec().encode(value))
        old = self._cache.get(key, (None, 0))[1]
        if self._cached - old + size > self.cache_bytes:
            raise StreamError(
                f"master {self.name!r}: keeping {size} bytes under {key!r} would pass its cache "
                f"limit of {self.cache_bytes} bytes (cache_bytes); delete some keys first"
            )
        self._cache[key] = (value, size)
        self._cached += size - old

    @Expose()
    def get(self, key: str) -> Any:
        """The value kept under ``key``; raises ``KeyError`` if there is none."""
        try:
            return self._cache[key][0]
        except KeyError:
            raise KeyError(f"master {self.name!r} keeps nothing under {key!r}") from None

    @Expose()
    def delete(self, key: str) -> bool:
        """Forget ``key``; False if it was not kept."""
        found = self._cache.pop(key, None)
        if found is not None:
            self._cached -= found[1]
        return found is not None

    @Expose()
    def keys(self) -> list[str]:
        """The keys of the cache."""
        return sorted(self._cache)


def _own_hook(master: Master, name: str) -> Callable[..., Any] | None:
    """A subclass's own ``scatter``/``gather`` method, if it has one."""
    method = getattr(type(master), name, None)
    return getattr(master, name) if method is not None else None


#: ``undertow.stream(items, target, ...)``: the :class:`Stream` of their answers
stream = Stream


def map(
    target: str | Pipeline,
    items: Iterable[Any],
    *,
    ordered: bool = False,
    **options: Any,
) -> Iterator[Any]:
    """The answers' values of :func:`stream` (completion order; ``ordered=True``: input
    order). An input that failed raises its error when its turn comes; iterating again
    goes on with the next one."""
    results = stream(items, target, ordered=ordered, **options)
    return _values(results)


class _values:
    def __init__(self, results: Stream) -> None:
        self._results = results

    def __iter__(self) -> _values:
        return self

    def __next__(self) -> Any:
        result: Result = next(self._results)
        return result.value


class Client:
    """pylm's shape: ``Client().job(generator, "master.function")``.

    Options given here (``window``, ``token``, ``registry``...) apply to each job.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options

    def job(self, items: Iterable[Any], target: str | Pipeline, **options: Any) -> Stream:
        """Stream ``items`` through ``target`` (see :func:`stream`)."""
        return stream(items, target, **{**self._options, **options})

    def stats(self, name: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """The counters of the pattern server registered as ``name`` (:func:`stats`)."""
        return stats(name, timeout=timeout, **self._options)


def shutdown() -> None:
    """Close this process's connections to pattern servers and stop its receiving server
    (streams still open get no more answers). The next stream starts afresh."""
    from undertow.patterns._stream import close_receiver

    close_receiver()
    close_senders()


def stats(
    name: str,
    *,
    timeout: float = 10.0,
    token: str | None = None,
    registry: str | None = None,
    **_ignored: Any,
) -> dict[str, Any]:
    """The counters of a master, stage or sink registered as ``name`` (or at an address):
    messages received, answered, failed, dropped, in flight, latency percentiles per
    function; a master adds what waits and what each worker holds."""
    directory = sender_for(token, registry).directory
    address = name if "://" in name else directory.address_of(name)
    client: RpcClient = directory.client(address)
    info = FunctionInfo("_pipe_stats", input="msgpack", output="msgpack")
    options = CallOptions(timeout=timeout, output=False)
    result: dict[str, Any] = client._invoke(info, (), {}, options)
    return result
