"""Messaging patterns: masters and workers, pipelines, tees, routes, sinks, streams.

::

    undertow.Master("squares").start()                       # found by name, like services
    undertow.MasterWorker("squares", [square]).start()       # as many as you like, anywhere

    for r in undertow.stream(range(10_000), "squares.square"):   # answers as they come
        print(r.id, r.value)

    pipeline = undertow.Pipeline("step1.foo", "step2.bar", "last.baz")
    for r in undertow.stream(messages(), pipeline):           # each stage sends to the next
        ...

Every server takes part: any function of any service can be a stage (``_stage.py``), and a
:class:`Master` hands its messages to :class:`MasterWorker` s instead (``_master.py``). The
messages carry their route and weight (``_wire.py``); a stream's client sends and gathers
(``_stream.py``); servers pass messages on through one sender per process (``_send.py``).
"""

from undertow.patterns._api import Client, Master, map, shutdown, stats, stream
from undertow.patterns._gateway import Gateway
from undertow.patterns._plane import PipePlane
from undertow.patterns._pworker import MasterWorker
from undertow.patterns._result import Result
from undertow.patterns._sink import Sink, SinkItem
from undertow.patterns._stream import Stream
from undertow.patterns._wire import DROP, Pipeline, To, route, tee

__all__ = [
    "DROP",
    "Client",
    "Gateway",
    "Master",
    "MasterWorker",
    "PipePlane",
    "Pipeline",
    "Result",
    "Sink",
    "SinkItem",
    "Stream",
    "To",
    "map",
    "route",
    "shutdown",
    "stats",
    "stream",
    "tee",
]
