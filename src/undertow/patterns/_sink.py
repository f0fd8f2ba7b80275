"""A sink: one consumer for the answers of several streams, pipelines and masters.

::

    sink = undertow.Sink("results")
    sink.start()                                   # registered as "results"
    undertow.stream(items, undertow.Pipeline("step1.foo", sink="results")).wait()
    for item in sink:                              # or, elsewhere: connect("results").take(100)
        print(item.source, item.id, item.value)

The last stage sends the answers to the sink instead of the stream's client. The sink tells
each client that an input arrived only when its consumer *takes* it, so the client's window
bounds what the sink holds: a slow consumer slows the streams feeding it, and nothing is
dropped.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from undertow.errors import ConfigError, StreamError
from undertow.patterns._hosted import Hosted
from undertow.patterns._plane import endpoints, plane_of
from undertow.patterns._send import Outbox, Sender
from undertow.patterns._wire import TAKEN, plain
from undertow.service import Expose

__all__ = ["Sink", "SinkItem"]


@dataclass(frozen=True)
class SinkItem:
    """One answer a sink collected: the stream it came from, the input's id, the value."""

    source: str
    id: Any
    value: Any


@Expose(config={"take": {"output_serialization": "pickle"}})
class Sink(Hosted):
    """Collects the answers of the streams that end in it (``Pipeline(..., sink=NAME)``).

    Args:
        name: its name in the registry, which pipelines end in.
    """

    def __init__(self, name: str = "sink") -> None:
        if not name.isidentifier():
            raise ConfigError(f"Sink({name!r}): a sink's name is a Python identifier")
        self.name = name
        self._items: collections.deque[tuple[SinkItem, str, str, int, str]] = collections.deque()
        self._ready = threading.Condition()
        self._sender: Sender | None = None
        #: answers collected so far, by the stream they came from
        self.counts: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"<Sink {self.name!r} holding {len(self._items)}>"

    def bind_server(self, server: Any) -> None:
        """Told by the service host which server serves it."""
        self._sender = plane_of(server).sender
        endpoints[f"sink:{self.name}"] = self

    def deliver(self, entries: list[Any], ack: Any, codec: str) -> None:
        """From the receiving thread: answers of the stream ``ack[1]``."""
        if not (isinstance(ack, list) and len(ack) == 2 and all(isinstance(a, str) for a in ack)):
            return  # not sent by a stage: nobody to tell
        reply, stream = ack
        with self._ready:
            for item, _status, weight, value in entries:
                entry = (SinkItem(stream, item, plain(value, stream)), reply, stream, weight, codec)
                self._items.append(entry)
                self.counts[stream] += 1
            self._ready.notify_all()

    # -- consuming ----------------------------------------------------------------------------

    @Expose()
    def take(self, n: int = 100, timeout: float = 1.0) -> list[SinkItem]:
        """Up to ``n`` answers, waiting up to ``timeout`` seconds for the first."""
        deadline = time.monotonic() + timeout
        taken: list[tuple[SinkItem, str, str, int, str]] = []
        with self._ready:
            while not self._items:
                left = deadline - time.monotonic()
                if left <= 0 or not self._ready.wait(left):
                    break
            while self._items and len(taken) < n:
                taken.append(self._items.popleft())
        if taken:
            self._acknowledge(taken)
        return [t[0] for t in taken]

    def _acknowledge(self, taken: list[tuple[SinkItem, str, str, int, str]]) -> None:
        if self._sender is None:
            raise StreamError(f"sink {self.name!r} is not served: start() it")
        boxes: dict[str, Outbox] = {}
        for item, reply, stream, weight, codec in taken:
            box = boxes.setdefault(codec, Outbox(codec))
            box.end(reply, stream, [item.id, TAKEN, weight, None])
        for box in boxes.values():
            self._sender.post(box)

    @Expose()
    def held(self) -> int:
        """How many answers wait to be taken."""
        return len(self._items)

    @Expose()
    def sources(self) -> dict[str, int]:
        """Answers collected so far, by the stream they came from."""
        return dict(self.counts)

    def __iter__(self) -> Iterator[SinkItem]:
        """The answers, as they come (forever: stop when you have what you wanted)."""
        while True:
            yield from self.take(256, timeout=1.0)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (after :meth:`start`)."""
        super().stop(timeout)
        endpoints.pop(f"sink:{self.name}", None)
