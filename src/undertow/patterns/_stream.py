"""Streaming a generator of messages through a master or a pipeline, from the client.

::

    for r in undertow.stream(range(10_000), "squares.square"):      # completion order
        print(r.id, r.value)

    undertow.map("squares.square", range(100), ordered=True)      # values, in input order

The client sends its inputs in batches to the first stage (or master), found by name in the
registry, and at most ``window`` inputs are out at once: the generator is read only as
answers come back, so a slow consumer slows the generator, never fills anyone's memory. The
answers come to a small server of the client's own process (started on first use, on
loopback unless told otherwise), which the last stage sends them to directly, tagged with
the stream's id and each input's id (its position in the input). An input is finished when
its answers' weights add up (see ``_wire.py``): with tees, generators and gathers one input
may have several answers, with filters none.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from undertow.config import home
from undertow.errors import (
    ConfigError,
    NotConnected,
    SerializationError,
    StreamError,
    StreamTimeout,
)
from undertow.patterns._plane import endpoints
from undertow.patterns._result import Result, rebuild_error
from undertow.patterns._send import CONNECT_WAIT, sender_for
from undertow.patterns._wire import (
    ERR,
    FULL_WEIGHT,
    OK,
    Pipeline,
    blobs_out,
    codec_named,
    count_option,
    plain,
    size_of,
)
from undertow.rpc import CallOptions, FunctionInfo, Server

__all__ = ["Stream", "close_receiver", "receiver_address"]

_PUSH = {
    c: FunctionInfo("_pipe", input=c, output="msgpack", needs_auth=c == "pickle")
    for c in ("numpy", "pickle")
}
#: a batch of inputs closes once its values hold this many bytes
BATCH_BYTES = 4 << 20
_receiver: dict[str, Any] = {}
_receiver_lock = threading.Lock()


def receiver_address(host: str = "127.0.0.1") -> str:
    """The address this process's answers come to (its receiving server starts on first use)."""
    with _receiver_lock:
        server = _receiver.get("server")
        mine = (os.getpid(), home(), host)  # a new home: a new user token to accept
        if server is None or _receiver.get("mine") != mine:
            if server is not None and _receiver.get("mine", (0,))[0] == os.getpid():
                server.stop()
            server = Server(name=f"undertow-streams-{os.getpid()}")
            server.accept_user_token()  # answers in pickle, from the user's own processes
            address = server.start(f"tcp://{host}:0")
            _receiver.update(server=server, mine=mine, address=address)
        return str(_receiver["address"])


def close_receiver() -> None:
    """Stop this process's receiving server (the next stream starts another)."""
    with _receiver_lock:
        server = _receiver.pop("server", None)
        mine = _receiver.pop("mine", (0,))
        _receiver.clear()
    if server is not None and mine[0] == os.getpid():
        server.stop()


class Stream:
    """``undertow.stream(items, target, ...)``: send each of ``items`` through ``target``
    and yield the answers as they come.

    ``target`` is ``"name.function"`` (a master's workers' function, or any service's
    function) or a :class:`Pipeline`. Answers are :class:`Result` objects: ``r.id`` is the
    input's position, ``r.value`` its answer (raising its error, for that input only). At
    most ``window`` inputs are out at once, sent ``batch`` at a time; ``ordered=True``
    yields them in input order; ``timeout``: seconds to wait for any answer before
    :class:`~undertow.errors.StreamTimeout`; ``codec``: ``"numpy"`` (safe from anyone) or
    ``"pickle"`` (any Python object, between authenticated peers); ``progress=True`` shows a
    progress bar (a widget in Jupyter). ``zero_copy=True``: bytes of 64 KiB or more reach
    each stage's or worker's function, and come back to you, as read-only ``memoryview`` s
    of the frames that carried them, never copied (``bytes(v)`` where bytes are needed).

    Also a context manager; :meth:`close` stops it early, :meth:`wait` runs it to its end.
    """

    def __init__(
        self,
        items: Iterable[Any],
        target: str | Pipeline,
        *,
        window: int = 256,
        batch: int = 64,
        ordered: bool = False,
        timeout: float | None = 60.0,
        codec: str = "numpy",
        progress: bool = False,
        token: str | None = None,
        registry: str | None = None,
        zero_copy: bool = False,
    ) -> None:
        pipeline = target if isinstance(target, Pipeline) else Pipeline(target)
        count_option("window", window, "how many inputs may be out at once")
        count_option("batch", batch, "how many inputs to send per call")
        if codec not in ("numpy", "pickle"):
            raise ConfigError(f"codec={codec!r}: streams travel in 'numpy' (safe) or 'pickle'")
        self.target = pipeline
        #: the stream's id (its answers are addressed to it); zero-copy ones start with "z"
        self.id = ("z" if zero_copy else "") + os.urandom(12).hex()
        self._service, _, self._function = pipeline.first.partition(".")
        self._steps = pipeline.steps[1:]
        # at least four batches fit in the window, so that every stage has work
        self._window, self._batch = window, max(1, min(batch, window // 4))
        self._ordered = ordered
        self._timeout, self._codec = timeout, codec
        self._items: Iterator[Any] | None = iter(items)
        self._total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        self._next_id = 0
        self._item_size = 0  # bytes of the inputs of the last batch, on average
        self._owed: dict[int, int] = {}
        self._ready: collections.deque[Result] = collections.deque()
        self._held: dict[int, list[Result]] = {}  # ordered: answers of inputs not yet due
        self._due = 0  # ordered: the next input whose answers may be yielded
        self._finished_ids: set[int] = set()
        self._had: set[int] = set()  # inputs with an answer so far
        self._erred: set[int] = set()  # inputs with an error so far
        self._acks: collections.deque[tuple[Any, list[int]]] = collections.deque()
        self._inbox: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        self._directory = sender_for(token, registry).directory  # clients shared in the process
        self._reply = receiver_address()
        self._bar = _progress_bar(progress, self._total, str(pipeline.first))
        #: inputs sent, answers received, inputs that failed, inputs dropped by a filter,
        #: answers that came twice (a message given again after a worker died)
        self.sent = self.answered = self.failed = self.dropped = self.duplicates = 0
        self._closed = False
        endpoints[self.id] = self  # weakly: a stream dropped unfinished is forgotten

    def __repr__(self) -> str:
        return (
            f"<Stream {self.target.first} sent={self.sent} answered={self.answered} "
            f"failed={self.failed} in_flight={len(self._owed)}>"
        )

    @property
    def in_flight(self) -> int:
        """Inputs sent and not finished yet."""
        return len(self._owed)

    def deliver(self, entries: list[Any], ack: Any, codec: str) -> None:
        """From the receiving server's thread: answers for this stream."""
        self._inbox.put(entries)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Result:
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._closed:
                raise StopIteration
            self._fill()
            if self._ready:
                continue
            if not self._owed and self._items is None:
                self.close()
                raise StopIteration
            self._wait()

    def wait(self) -> list[Result]:
        """Run the stream to its end; its answers (none for a stream into a sink)."""
        return list(self)

    def close(self) -> None:
        """Stop: no more inputs are sent; answers still out are ignored."""
        self._items = None
        self._closed = True
        endpoints.pop(self.id, None)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ------------------------------------------------------------------------------

    def _fill(self) -> None:
        while self._items is not None:
            room = self._window - len(self._owed)
            # a full batch's room (by count, or by bytes at the recent size), or half empty
            full = room >= self._batch or room * self._item_size >= BATCH_BYTES
            if room <= 0 or (not full and len(self._owed) > self._window // 2):
                return
            batch: list[list[Any]] = []
            size = 0
            for value in self._items:
                batch.append([self._next_id, FULL_WEIGHT, value])
                self._owed[self._next_id] = FULL_WEIGHT
                self._next_id += 1
                size += size_of(value)
                if len(batch) >= min(room, self._batch) or size >= BATCH_BYTES:
                    break
            else:
                self._items = None
            self._item_size = size // max(1, len(batch))
            if batch:
                self._send(batch)

    def _send(self, batch: list[list[Any]]) -> None:
        self.sent += len(batch)
        blobs_out(batch, 2)  # large bytes travel as frames of their own
        group = [self.id, self._reply, self._function, self._steps, batch]
        options = CallOptions(timeout=CONNECT_WAIT + 60.0, output=False)
        for attempt in range(3):  # an instance that went away: look again, try another
            address = ""
            try:
                address = self._directory.address_of(self._service)
                client = self._directory.client_for(address, self._codec)
                try:
                    future = client._submit(_PUSH[self._codec], ([group],), {}, options)
                except SerializationError:  # some inputs cannot travel: they fail alone
                    group[4] = batch = self._encodable(batch)
                    if not batch:
                        return
                    future = client._submit(_PUSH[self._codec], ([group],), {}, options)
            except NotConnected as exc:
                self._directory.forget(self._service, address)
                if attempt == 2:
                    self._fail([entry[0] for entry in batch], exc)
                continue
            except Exception as exc:
                self._fail([entry[0] for entry in batch], exc)
                return
            self._acks.append((future, [entry[0] for entry in batch]))
            return

    def _encodable(self, batch: list[list[Any]]) -> list[list[Any]]:
        """``batch`` without the inputs its codec cannot carry (each of those fails)."""
        encode = codec_named(self._codec).encode
        good = []
        for entry in batch:
            try:
                encode(entry[2])
                good.append(entry)
            except SerializationError as exc:
                why = SerializationError(
                    f"input {entry[0]} ({type(entry[2]).__name__}) cannot travel with the "
                    f"{self._codec} codec: {exc}; send numbers, strings, bytes, lists, dicts "
                    "or arrays, or stream with codec='pickle'"
                )
                self._fail([entry[0]], why)
        return good

    def _fail(self, ids: list[int], exc: BaseException) -> None:
        for item in ids:
            weight = self._owed.get(item)
            if weight is not None:
                self._take([item, ERR, weight, exc])

    # -- receiving ----------------------------------------------------------------------------

    def _wait(self) -> None:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            self._check_acks()
            if self._ready or not self._owed:
                return
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                raise StreamTimeout(
                    f"no answer from {self.target.first} for {self._timeout:g} s; "
                    f"{len(self._owed)} inputs are still out (the first: {min(self._owed)})"
                )
            try:
                entries = self._inbox.get(timeout=left)
            except queue.Empty:
                continue
            for entry in entries:
                self._take(entry)
            while not self._inbox.empty():
                for entry in self._inbox.get_nowait():
                    self._take(entry)
            return

    def _check_acks(self) -> None:
        while self._acks and self._acks[0][0].done():
            future, ids = self._acks.popleft()
            exc = future.exception()
            if exc is not None:
                self._fail(ids, StreamError(f"{self.target.first} did not take the inputs: {exc}"))

    def _take(self, entry: list[Any]) -> None:
        item, status, weight, value = entry
        owed = self._owed.get(item)
        if owed is None:
            self.duplicates += 1
            return
        if status == OK:
            self._answer(Result(item, plain(value, self.id)))
            self.answered += 1
            self._had.add(item)
        elif status == ERR:
            error = value if isinstance(value, BaseException) else rebuild_error(value, self.target)
            self._answer(Result(item, error=error))
            self._erred.add(item)
        owed -= weight
        if owed > 0:
            self._owed[item] = owed
            return
        del self._owed[item]
        if item in self._erred:
            self.failed += 1
        elif item not in self._had:
            self.dropped += 1
        self._erred.discard(item)
        self._had.discard(item)
        if self._bar is not None:
            self._bar.update(1)
        if self._ordered:
            self._finished_ids.add(item)
            self._release()

    def _answer(self, result: Result) -> None:
        if self._ordered:
            self._held.setdefault(result.id, []).append(result)
        else:
            self._ready.append(result)

    def _release(self) -> None:
        """Ordered: yield the answers of every finished input due, in input order."""
        while self._due in self._finished_ids:
            self._finished_ids.discard(self._due)
            self._ready.extend(self._held.pop(self._due, ()))
            self._due += 1


def _progress_bar(progress: bool, total: int | None, what: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm  # a widget in Jupyter, text elsewhere

    return tqdm(total=total, desc=what, unit="msg")
