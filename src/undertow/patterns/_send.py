"""Passing messages on: to the next stage found by name, to a sink, back to a stream's client.

What a stage or a master has to send after a batch is gathered in an :class:`Outbox`
(grouped by where it goes) and sent, from the thread that ran the batch (a stage) or the
process's :class:`Sender` thread (a master, a sink): one ``_pipe`` call per next stage, one
``_pipe_end`` call per client or sink. These calls are one-way (``Client._post``): nobody
waits for an acknowledgement, and what the receiver cannot take it tells the messages'
clients itself (or logs, if it cannot read them). What is out is bounded by the streams'
windows. A call that cannot be sent fails its messages: each becomes an error for its
client, never silence. A next stage that cannot be reached is looked up again and the call
tried on another instance once.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from undertow.cluster import Registry
from undertow.config import backend_url
from undertow.errors import (
    NotConnected,
    RPCTimeout,
    SerializationError,
    ServiceNotFound,
    StreamError,
    UndertowError,
)
from undertow.patterns._wire import ERR, Hop, blobs_out, codec_named
from undertow.rpc import Client, FunctionInfo, client_token
from undertow.security import user_token
from undertow.wire import encode_error, error_info

__all__ = [
    "Directory",
    "Outbox",
    "Sender",
    "close_senders",
    "error_entry",
    "sender_for",
]

log = logging.getLogger(__name__)

#: seconds a call to the next stage may take to be accepted
SEND_TIMEOUT = 60.0
#: seconds a lookup of a service's instances is reused
LOOKUP_TTL = 2.0
#: seconds to wait for a connection to an instance before trying another
CONNECT_WAIT = 5.0
#: seconds a client that could not be reached is given up on (its answers are not sent)
GONE_FOR = 30.0


def error_entry(item: Any, weight: int, exc: BaseException) -> list[Any]:
    """The end entry that tells a client its message ``item`` failed with ``exc``."""
    return [item, ERR, weight, encode_error(error_info(exc))]


class Outbox:
    """What one batch sends on, grouped by destination; encoded with ``codec``."""

    __slots__ = ("codec", "ends", "pushes", "sinks")

    def __init__(self, codec: str) -> None:
        self.codec = codec
        #: (service, function) -> group key -> [stream, reply, function, steps, entries]
        self.pushes: dict[tuple[str, str], dict[Any, list[Any]]] = {}
        #: reply address -> stream -> end entries
        self.ends: dict[str, dict[str, list[Any]]] = {}
        #: sink name -> (reply, stream) -> entries [id, status, weight, value]
        self.sinks: dict[str, dict[tuple[str, str], list[Any]]] = {}

    def __bool__(self) -> bool:
        return bool(self.pushes or self.ends or self.sinks)

    def hop(self, hop: Hop, stream: str, reply: str, item: Any, status: int) -> None:
        """Send ``hop.value`` (of message ``item``) where ``hop`` says."""
        if hop.service is not None:
            groups = self.pushes.setdefault((hop.service, str(hop.function)), {})
            key = (stream, reply, repr(hop.steps)) if hop.steps else (stream, reply)
            group = groups.get(key)
            if group is None:
                group = groups[key] = [stream, reply, hop.function, hop.steps, []]
            group[4].append([item, hop.weight, hop.value])
        elif hop.sink is not None:
            into = self.sinks.setdefault(hop.sink, {})
            into.setdefault((reply, stream), []).append([item, status, hop.weight, hop.value])
        else:
            self.end(reply, stream, [item, status, hop.weight, hop.value])

    def end(self, reply: str, stream: str, entry: list[Any]) -> None:
        """Tell the client at ``reply`` how message ``entry[0]`` of ``stream`` ended."""
        self.ends.setdefault(reply, {}).setdefault(stream, []).append(entry)


_PUSH = {
    c: FunctionInfo("_pipe", input=c, output="msgpack", needs_auth=c == "pickle")
    for c in ("numpy", "pickle")
}
_END = {
    c: FunctionInfo("_pipe_end", input=c, output="msgpack", needs_auth=c == "pickle")
    for c in ("numpy", "pickle")
}


class Sender:
    """One process's messages on their way out, sent by a thread of its own.

    Args:
        token: what its calls are signed with (None: the user's own token, on loopback).
        registry: the registry URL services are found in (None: the default).
    """

    def __init__(self, token: str | None, registry: str | None) -> None:
        self.directory = Directory(token, registry)
        self._queue: queue.SimpleQueue[Outbox | Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: messages that could not be passed on (each was reported to its client if it could be)
        self.failed = 0
        #: clients that could not be reached, until when their answers are not tried
        self._gone: dict[str, float] = {}
        #: set by close(): the process's next use gets a new sender
        self.closed = False

    def post(self, outbox: Outbox) -> None:
        """Send what ``outbox`` holds, soon, from the sender's thread."""
        if outbox:
            self._put(outbox)

    def _put(self, work: Outbox | Callable[[], None] | None) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="undertow-pipe-sender", daemon=True
                    )
                    self._thread.start()
        self._queue.put(work)

    def close(self) -> None:
        """Stop the thread once what was posted is sent."""
        self.closed = True
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            try:
                if isinstance(work, Outbox):
                    self.send(work)
                else:
                    work()
            except Exception:  # the sender must outlive any one batch
                log.exception("passing messages on failed")

    # -- sending ------------------------------------------------------------------------------

    def send(self, box: Outbox) -> None:
        """Send ``box`` now, from the calling thread."""
        for (service, function), groups in box.pushes.items():
            self._push(service, function, list(groups.values()), box.codec, retry=True)
        for name, into in box.sinks.items():
            taken = [
                [f"sink:{name}", entries, [reply, stream]]
                for (reply, stream), entries in into.items()
            ]
            self._push_end(None, name, taken, box.codec)
        for reply, streams in box.ends.items():
            ends = [[stream, entries, None] for stream, entries in streams.items()]
            self._push_end(reply, None, ends, box.codec)

    def _push(
        self, service: str, function: str, groups: list[Any], codec: str, *, retry: bool
    ) -> None:
        address = ""

        def failed(exc: BaseException) -> None:
            if retry and isinstance(exc, NotConnected):
                self.directory.forget(service, address)
                self._push(service, function, groups, codec, retry=False)
                return
            why = StreamError(f"passing messages on to {service}.{function} failed: {exc}")
            self._fail_groups(groups, why, codec)

        try:
            address = self.directory.address_of(service)
            client = self.directory.client_for(address, codec)
        except UndertowError as exc:
            failed(exc)
            return
        self._call(client, _PUSH[codec], groups, failed)

    def _push_end(self, reply: str | None, sink: str | None, groups: list[Any], codec: str) -> None:
        def failed(exc: BaseException) -> None:
            if sink is None:  # the client is gone: there is no one left to tell
                lost = sum(len(g[1]) for g in groups)
                self.failed += lost
                if reply is not None and isinstance(exc, NotConnected | RPCTimeout):
                    self._gone[reply] = time.monotonic() + GONE_FOR  # no more waits on it
                log.warning("the client at %s did not take %d answers: %s", reply, lost, exc)
                return
            why = StreamError(f"sink {sink!r} did not take the messages: {exc}")
            box = Outbox(codec)
            for _, entries, (to, stream) in groups:
                for entry in entries:
                    box.end(to, stream, error_entry(entry[0], entry[2], why))
            self.send(box)

        if reply is not None and self._gone.get(reply, 0.0) > time.monotonic():
            self.failed += sum(len(g[1]) for g in groups)  # a client that went away
            return
        try:
            address = reply if reply is not None else self.directory.address_of(str(sink))
            client = self.directory.client_for(address, codec)
        except UndertowError as exc:
            failed(exc)
            return
        self._call(client, _END[codec], groups, failed)

    def _call(
        self, client: Client, info: FunctionInfo, groups: list[Any], failed: Callable[..., None]
    ) -> None:
        """Send one-way: the next stage or the client answers nothing (what it cannot take
        it tells the messages' clients itself); the streams' windows bound what is out."""
        ends = info.name == "_pipe_end"
        for group in groups:  # large bytes travel as frames of their own
            blobs_out(group[1] if ends else group[4], 3 if ends else 2)
        try:
            try:
                client._post(info, (groups,), {}, SEND_TIMEOUT)
            except SerializationError:  # some values cannot travel: they fail alone
                groups = self._salvage(groups, info)
                if groups:
                    client._post(info, (groups,), {}, SEND_TIMEOUT)
        except UndertowError as exc:
            failed(exc)

    def _salvage(self, groups: list[Any], info: FunctionInfo) -> list[Any]:
        """``groups`` with each value its codec cannot carry taken out: an end becomes an
        error in its place, a message on its way fails to its client."""
        encode = codec_named(info.input).encode
        box = Outbox(info.input)
        kept: list[Any] = []
        for group in groups:
            entries = group[1] if info.name == "_pipe_end" else group[4]
            good = []
            for entry in entries:
                try:
                    encode(entry[-1])
                    good.append(entry)
                except SerializationError as exc:
                    why = SerializationError(
                        f"an answer ({type(entry[-1]).__name__}) cannot travel with the "
                        f"{info.input} codec: {exc}; return numbers, strings, bytes, lists, "
                        "dicts or arrays, or stream with codec='pickle'"
                    )
                    if info.name == "_pipe_end":
                        good.append(error_entry(entry[0], entry[2], why))
                    else:
                        box.end(group[1], group[0], error_entry(entry[0], entry[1], why))
            if good:
                kept.append(
                    [*group[:1], good, group[2]] if info.name == "_pipe_end" else [*group[:4], good]
                )
        self._put(box)
        return kept

    def _fail_groups(self, groups: list[Any], why: StreamError, codec: str) -> None:
        self.failed += sum(len(g[4]) for g in groups)
        box = Outbox(codec)
        for stream, reply, _function, _steps, entries in groups:
            for item, weight, _value in entries:
                box.end(reply, stream, error_entry(item, weight, why))
        for reply, streams in box.ends.items():
            ends = [[stream, entries, None] for stream, entries in streams.items()]
            self._push_end(reply, None, ends, codec)


class Directory:
    """Services found by name (looked up again every :data:`LOOKUP_TTL` seconds, or at
    once after a failure) and one client per address, for one token."""

    def __init__(self, token: str | None, registry: str | None) -> None:
        self._token = token
        self.registry = Registry(registry)
        self._clients: dict[str, Client] = {}
        self._unsigned: dict[str, Client] = {}
        self._found: dict[str, tuple[float, list[str]]] = {}
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def address_of(self, service: str) -> str:
        """An address of a live instance of ``service`` (instances in turn)."""
        now = time.monotonic()
        found = self._found.get(service)
        if found is None or found[0] < now:
            instances = [i for i in self.registry.instances(service) if i.alive()]
            if not instances:
                raise ServiceNotFound(
                    f"no live instance of {service!r} in the registry {self.registry.url}: "
                    "start it (undertow serve FILE), or check the name"
                )
            found = (now + LOOKUP_TTL, [i.address for i in instances])
            self._found[service] = found
        addresses = found[1]
        return addresses[next(self._turn) % len(addresses)]

    def forget(self, service: str, address: str) -> None:
        """``address`` did not answer: look ``service`` up again next time."""
        self._found.pop(service, None)
        with self._lock:
            client = self._clients.pop(address, None)
            plain = self._unsigned.pop(address, None)
        for each in {id(c): c for c in (client, plain) if c is not None}.values():
            each.close()

    def close(self) -> None:
        """Close every client."""
        with self._lock:
            clients = {id(c): c for c in [*self._clients.values(), *self._unsigned.values()]}
            self._clients, self._unsigned = {}, {}
        for client in clients.values():
            client.close()
        self.registry.close()

    def client_for(self, address: str, codec: str) -> Client:
        """The client to send ``codec`` messages to ``address`` with: for numpy (safe from
        anyone) one that signs nothing when the only reason to sign is that a server on this
        machine takes the user's own token (hashing every frame costs ~1 ms a megabyte)."""
        signed = self.client(address)
        if codec != "numpy":
            return signed
        plain = self._unsigned.get(address)
        if plain is None or plain.closed:
            with self._lock:  # two slots at once must not make two (one would never close)
                plain = self._unsigned.get(address)
                if plain is None or plain.closed:
                    plain = self._unsigned[address] = self._unsigned_client(address, signed)
        return plain

    def _unsigned_client(self, address: str, signed: Client) -> Client:
        token = client_token(signed)
        if token is not None and self._token is None and token == user_token(create=False):
            return self._make(address, token=False)
        return signed

    def client(self, address: str) -> Client:
        """The client of ``address`` (made on first use)."""
        client = self._clients.get(address)
        if client is None or client.closed:
            with self._lock:
                client = self._clients.get(address)
                if client is None or client.closed:
                    client = self._clients[address] = self._make(address, token=self._token)
        return client

    def _make(self, address: str, token: str | bool | None) -> Client:
        return Client(
            address,
            token=token,
            timeout=SEND_TIMEOUT,
            connect_timeout=CONNECT_WAIT,
            output=False,
            connect_wait=CONNECT_WAIT,
        )


_senders: dict[tuple[str | None, str | None], Sender] = {}
_senders_lock = threading.Lock()


def close_senders() -> None:
    """Close the process's senders and their clients (the next use makes new ones)."""
    with _senders_lock:
        senders = list(_senders.values())
        _senders.clear()
    for sender in senders:
        sender.close()
        sender.directory.close()


def sender_for(token: str | None, registry: str | None) -> Sender:
    """The process's sender for calls signed with ``token`` and names found in ``registry``."""
    key = (token, backend_url(registry))  # the default follows $UNDERTOW_BACKEND and home
    with _senders_lock:
        sender = _senders.get(key)
        if sender is None:
            sender = _senders[key] = Sender(token, registry)
        return sender
