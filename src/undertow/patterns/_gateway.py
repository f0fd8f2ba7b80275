"""An HTTP gateway in front of a master or a pipeline.

::

    undertow.patterns.Gateway("squares_http", "squares.square").serve_forever(http_port=8080)

    curl -H 'Content-Type: application/x-ndjson' -H 'Accept: application/x-ndjson' \\
         --data-binary $'1\\n2\\n3\\n' http://127.0.0.1:8080/call/run
    {"item": {"id":0,"value":1}}
    {"item": {"id":2,"value":9}}
    {"item": {"id":1,"value":4}}
    {"end": true}

It is a service whose one function, ``run(items)``, streams ``items`` through its target and
yields an answer as it comes: ``{"id": N, "value": ...}``, or ``{"id": N, "error": {"type":
..., "message": ...}}`` for an input that failed (the others go on); the HTTP transport sends
each as an NDJSON line ``{"item": ...}`` and ends with ``{"end": true}``. The HTTP
transport serves it: ``POST /call/run`` with a JSON body (``[[1, 2, 3]]``: the list is the
one argument) or an NDJSON body (a line per item), ``Accept: application/x-ndjson`` (or
``text/event-stream``) for the answers as they finish; without it the answers come as one
JSON list when all are in. Anything the HTTP transport checks applies (tokens as bearer
tokens, the size limit, the host check on loopback).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from undertow.errors import ConfigError
from undertow.patterns._api import stream
from undertow.patterns._hosted import Hosted
from undertow.patterns._wire import Pipeline, count_option
from undertow.service import Expose

__all__ = ["Gateway"]


@Expose()
class Gateway(Hosted):
    """Serves a master or a pipeline over HTTP (see the module's docstring).

    Args:
        name: its name in the registry.
        target: ``"name.function"`` or a :class:`Pipeline`, as for :func:`undertow.stream`.
        window: inputs of one request out at once.
        ordered: answer in input order instead of as they finish.
        timeout: seconds to wait for any answer before the request fails.
    """

    def __init__(
        self,
        name: str,
        target: str | Pipeline,
        *,
        window: int = 256,
        ordered: bool = False,
        timeout: float = 60.0,
    ) -> None:
        if not name.isidentifier():
            raise ConfigError(f"Gateway({name!r}): a gateway's name is a Python identifier")
        self.name = name
        self.target = target if isinstance(target, Pipeline) else Pipeline(target)
        self.window = count_option("window", window, "how many inputs may be out at once")
        self.ordered = ordered
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<Gateway {self.name!r} to {self.target.first}>"

    @Expose()
    def run(self, items: list[Any]) -> Iterator[dict[str, Any]]:
        """Stream ``items`` through the target; a line per answer as it comes."""
        if not isinstance(items, list):
            raise TypeError(f"run() takes a list of items, not {type(items).__name__}")
        results = stream(
            items, self.target, window=self.window, ordered=self.ordered, timeout=self.timeout
        )
        with results:
            for result in results:
                if result.error is None:
                    yield {"id": result.id, "value": result.value}
                else:
                    error = result.error
                    yield {
                        "id": result.id,
                        "error": {"type": type(error).__name__, "message": str(error)},
                    }

    def serve_forever(self, http_port: int | None = 0, **host_options: Any) -> None:
        """Serve (ZeroMQ, and HTTP on ``http_port``), registered, until SIGINT or SIGTERM."""
        super().serve_forever(http_port=http_port, **host_options)

    def start(self, timeout: float = 30.0, http_port: int | None = 0, **host_options: Any) -> str:
        """Serve from a background thread; returns its HTTP address."""
        super().start(timeout, http_port=http_port, **host_options)
        assert self._host is not None
        return self._host.instances[0].addresses[-1]
