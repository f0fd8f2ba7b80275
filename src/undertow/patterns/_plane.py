"""Every server's part in the patterns: the ``_pipe*`` functions, plugged into the rpc layer.

- ``_pipe``: messages for one of the server's functions, as a stage of a pipeline (the
  function runs here, see ``_stage.py``), or for a master (handed to its workers).
- ``_pipe_end``: ends of the line for the streams and sinks of this process.
- ``_pipe_take``, ``_pipe_stats``: a master's workers asking for messages and giving
  answers (``_master.py``); anyone asking for the counters.

Each call is checked before anything in it is decoded: it must use the numpy codec (safe
from anyone) or pickle, and pickle only from a signed caller. A malformed call is refused
whole; a message that cannot be handled fails alone (its client hears why).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from undertow.errors import AuthenticationError, StreamError
from undertow.patterns._send import Sender, sender_for
from undertow.patterns._stage import StageRunner
from undertow.patterns._stats import Counters
from undertow.patterns._wire import check_steps, codec_named
from undertow.rpc import Incoming, Job, plug_patterns
from undertow.wire import ErrorInfo, Flags, MsgpackCodec, error_info

__all__ = [
    "Endpoint",
    "Engine",
    "PipePlane",
    "decode_call",
    "endpoints",
    "plane_of",
]

log = logging.getLogger(__name__)

_MSGPACK = MsgpackCodec()
_NO_REPLY = int(Flags.NO_REPLY)
_ACK = _MSGPACK.encode(None)
#: the longest stream id accepted
_ID_LIMIT = 80


def refuse(incoming: Incoming, info: ErrorInfo) -> None:
    """Refuse a pattern call: answered, or logged when it is one-way (nobody waits)."""
    if incoming.header.flags & _NO_REPLY:
        log.warning("refused a one-way %s message: %s", incoming.name, info.message)
    incoming.fail(info)


def decode_call(incoming: Incoming) -> tuple[Any, str] | None:
    """The one argument of a pattern call and its codec, or None (the call was refused)."""
    codec = incoming.header.codec
    if codec not in ("numpy", "pickle"):
        refuse(
            incoming,
            ErrorInfo(
                "SerializationError",
                f"{incoming.name} takes numpy or pickle, not {codec!r}",
                code="serialization",
            ),
        )
        return None
    if codec == "pickle" and incoming.identity is None:
        exc = AuthenticationError(
            "messages in pickle are taken only from authenticated peers; sign with a token, "
            "or use the numpy codec"
        )
        refuse(incoming, error_info(exc, code="auth"))
        return None
    try:
        args, _kwargs = codec_named(codec).decode(incoming.frames)
        return args[0], codec
    except Exception as exc:  # whatever came in, the sender hears why it was refused
        refuse(
            incoming,
            error_info(
                StreamError(f"unreadable {incoming.name} call: {exc}"), code="serialization"
            ),
        )
        return None


def _check_push(groups: Any) -> None:
    """Refuse a ``_pipe`` call that is not a list of well-formed groups."""
    if not isinstance(groups, list):
        raise StreamError("a _pipe call carries a list of groups")
    for group in groups:
        if not (isinstance(group, list) and len(group) == 5):
            raise StreamError("a _pipe group is [stream, reply, function, steps, entries]")
        stream, reply, function, steps, entries = group
        if not (isinstance(stream, str) and 0 < len(stream) <= _ID_LIMIT):
            raise StreamError(f"a stream id is a short string, not {stream!r:.80}")
        if not (isinstance(reply, str) and reply.startswith("tcp://")):
            raise StreamError(f"a reply address is tcp://host:port, not {reply!r:.80}")
        if not isinstance(function, str):
            raise StreamError(f"a function name is a string, not {function!r:.80}")
        check_steps(steps)
        _check_entries(entries, 3)


def _check_entries(entries: Any, width: int) -> None:
    if not isinstance(entries, list):
        raise StreamError("a group's entries are a list")
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == width):
            raise StreamError(f"an entry is a list of {width}")
        if not isinstance(entry[1 if width == 3 else 2], int):
            raise StreamError("a message's weight is an integer")


class Engine(Protocol):
    """Where a server's ``_pipe`` messages go: its own functions, or a master's workers."""

    def accept(self, groups: list[Any], codec: str, identity: str | None) -> Job | None:
        """Take a batch (from the receiving thread): work for a pool thread, or None."""

    def close(self) -> None: ...


class Endpoint(Protocol):
    """A stream's client or a sink, in this process: where ``_pipe_end`` delivers."""

    def deliver(self, entries: list[Any], ack: Any, codec: str) -> None: ...


#: the streams and sinks of this process, by stream id (sinks: ``sink:NAME``); a stream
#: its user dropped is forgotten with it
endpoints: weakref.WeakValueDictionary[str, Endpoint] = weakref.WeakValueDictionary()


class PipePlane:
    """A server's pattern functions (see the module's docstring)."""

    def __init__(self, server: Any, *, token: str | None) -> None:
        self.server = server
        self.token = token
        self.counters = Counters()
        #: set by a master bound to the server: its messages go to workers
        self.master: Any = None
        self._stage: Engine | None = None
        self._sender: Sender | None = None
        self._lock = threading.Lock()

    @property
    def sender(self) -> Sender:
        """The process's sender for this server's token and registry (kept: finding it
        resolves the default registry, ~20 µs, once a batch otherwise)."""
        sender = self._sender
        if sender is None or sender.closed:
            sender = self._sender = sender_for(self.token, self.server.registry_url)
        return sender

    def handlers(self) -> dict[str, Callable[[Incoming], Job | None]]:
        return {
            "_pipe": self._pipe,
            "_pipe_end": self._end,
            "_pipe_take": self._take,
            "_pipe_stats": self._stats,
        }

    def close(self) -> None:
        if self._stage is not None:
            self._stage.close()
        if self.master is not None:
            self.master.close()

    def _engine(self) -> Engine:
        if self.master is not None:
            return self.master  # type: ignore[no-any-return]
        if self._stage is None:
            with self._lock:
                if self._stage is None:
                    self._stage = StageRunner(self)
        return self._stage

    def _pipe(self, incoming: Incoming) -> Job | None:
        decoded = decode_call(incoming)
        if decoded is None:
            return None
        groups, codec = decoded
        try:
            _check_push(groups)
        except StreamError as exc:
            refuse(incoming, error_info(exc, code="serialization"))
            return None
        incoming.reply(_ACK, "msgpack")
        self.counters.arrived(sum(len(g[4]) for g in groups))
        return self._engine().accept(groups, codec, incoming.identity)

    def _end(self, incoming: Incoming) -> Job | None:
        decoded = decode_call(incoming)
        if decoded is None:
            return None
        groups, codec = decoded
        try:
            if not isinstance(groups, list):
                raise StreamError("a _pipe_end call carries a list of groups")
            for group in groups:
                if not (isinstance(group, list) and len(group) == 3 and isinstance(group[0], str)):
                    raise StreamError("a _pipe_end group is [stream, entries, ack]")
                _check_entries(group[1], 4)
        except StreamError as exc:
            refuse(incoming, error_info(exc, code="serialization"))
            return None
        incoming.reply(_ACK, "msgpack")
        for key, entries, ack in groups:
            endpoint = endpoints.get(key)
            if endpoint is None:  # a stream closed before all its answers came
                log.debug("%d answers for stream %s, which is closed", len(entries), key)
                continue
            endpoint.deliver(entries, ack, codec)
        return None

    def _take(self, incoming: Incoming) -> Job | None:
        master = self.master
        if master is None:
            refuse(
                incoming,
                error_info(
                    StreamError(
                        f"server {self.server.name!r} is not a master: its workers must take "
                        "messages from an undertow.Master"
                    )
                ),
            )
            return None
        decoded = decode_call(incoming)
        if decoded is not None:
            master.take(incoming, *decoded)
        return None

    def _stats(self, incoming: Incoming) -> Job | None:
        extra = self.master.stats() if self.master is not None else {}
        incoming.reply(_MSGPACK.encode(self.counters.snapshot(**extra)), "msgpack")
        return None

    def stats(self) -> dict[str, Any] | None:
        """Its counters (a master's figures added), for ``server.stats()`` and ``/metrics``;
        None while the server has taken no part in a pattern (no master, no message)."""
        if self.master is None and not self.counters.received:
            return None
        extra = self.master.stats() if self.master is not None else {}
        return self.counters.snapshot(**extra)


def plane_of(server: Any) -> PipePlane:
    """The pattern plane of ``server``."""
    plane = server.pipes
    if not isinstance(plane, PipePlane):
        raise StreamError(f"server {server.name!r} has no pattern plane: import undertow.patterns")
    return plane


plug_patterns(PipePlane)
