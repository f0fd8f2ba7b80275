"""The data server inside every function server: results left where they were computed.

A :class:`DataService` keeps values in a :class:`~undertow.data.DataStore` and serves them
through functions every server answers (their names start with ``_``, so they are never
listed): ``_data_fetch``, ``_data_look`` (an item, an attribute, the length, or a method
call, answered or kept), ``_data_put``, ``_data_share``, ``_data_delete``, and for copies
(see :mod:`undertow.data._replicate`) ``_data_describe`` and ``_data_copy``. Each takes the
value's key and secret (``_data_copy``: a pointer); the secret is checked first, then (when
the server authenticates) the caller's identity: the owner, or one it was shared with.

It also turns a result into a pointer (``return_pointer``) and, before a function runs,
replaces the pointers among its arguments by their values: from this store when the value
is here, else fetched straight from the data server that holds it.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from undertow._util import address_host, current_call
from undertow.config import home
from undertow.data._failures import failure
from undertow.data._peers import fetch_from_owner
from undertow.data._pointer import Pointer, client_for, decode_index, plain, pointer_form
from undertow.data._replicate import copy_here, described
from undertow.data._store import DEFAULT_MEMORY_LIMIT, DataStore, Entry
from undertow.errors import (
    AuthenticationError,
    ConfigError,
    DataNotFound,
    PermissionDenied,
    SerializationError,
    UndertowError,
)
from undertow.rpc import Incoming, Job
from undertow.transport import shm_sending
from undertow.wire import POINTER_TYPE, ErrorInfo, error_info, resolve_codec

if TYPE_CHECKING:
    from undertow.rpc import Server

__all__ = ["DataService", "Listener", "failure"]

log = logging.getLogger(__name__)

#: ``listener(event, entry, pointer)``: told of each value kept ("put") or deleted
#: ("delete"), with the pointer's JSON form for "put"; runs in the thread that did it
Listener = Callable[[str, Entry, dict[str, Any] | None], None]

_NUMPY = resolve_codec("numpy")
_PICKLE_NAME = "pickle"
_NEEDLE = POINTER_TYPE.encode()
_SEARCH = re.compile(re.escape(_NEEDLE)).search  # searches a memoryview without a copy
_WILDCARDS = ("0.0.0.0", "::", "*", "")  # noqa: S104 - recognised, not bound
_NOTHING_KEPT = dict.fromkeys(("bytes_memory", "bytes_disk", "objects_memory", "objects_disk"), 0)
#: the deadline of a fetch from another node, when the call that needs it has none
_FETCH_TIMEOUT = 300.0


class DataService:
    """The data server of one function :class:`~undertow.Server`.

    Args:
        server: the function server it belongs to.
        directory: where spilled values go (default: ``<undertow home>/data/<server name>``).
        memory_limit: bytes kept in memory before the least recently used values spill.
        calls: allow ``ptr.call(...)`` (public methods of the values; names starting with
            ``_`` are always refused).
    """

    def __init__(
        self,
        server: Server,
        *,
        directory: str | Path | None = None,
        memory_limit: int | None = None,
        calls: bool = True,
        token: str | None = None,
    ) -> None:
        self._server = server
        self._server_token = token
        self._directory = directory
        self._memory_limit = DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit
        self._calls = calls
        self._store: DataStore | None = None
        self._lock = threading.Lock()
        #: told of each value kept or deleted (the catalog listens)
        self.listeners: list[Listener] = []
        #: the token this server shows other data servers it fetches from (None: its
        #: own token, if it has one, else the default a client would find)
        self.token: str | bool | None = None

    def __repr__(self) -> str:
        return f"<DataService of {self._server.name!r}: {self._store or 'nothing kept yet'}>"

    @property
    def store(self) -> DataStore:
        """The store (made, with its directory, on first use)."""
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    directory = self._directory or home() / "data" / self._server.name
                    self._store = DataStore(
                        directory, memory_limit=self._memory_limit, shared_memory=shm_sending()
                    )
                store = self._store
        return store

    @property
    def kept(self) -> DataStore | None:
        """The store, if anything was ever kept (None: it was never needed)."""
        return self._store

    def stats(self) -> dict[str, int]:
        """Bytes and objects kept, in memory and spilled to disk (zero before any is kept)."""
        return self.store.stats() if self._store is not None else dict(_NOTHING_KEPT)

    def stopped(self) -> None:
        """The server stopped serving: values it keeps in shared memory are marked so that
        peers that mapped them ask again (and find nobody) instead of viewing them."""
        if self._store is not None:
            self._store.retire_all()

    def handlers(self) -> dict[str, Callable[[Incoming], Job | None]]:
        """The data functions, as the server's raw handlers."""
        ops: dict[str, Callable[..., Any]] = {
            "_data_fetch": self._fetch,
            "_data_look": self._look,
            "_data_put": self._put,
            "_data_share": self._share,
            "_data_delete": self._delete,
            "_data_describe": self._describe,
            "_data_copy": self._copy,
        }
        return {name: functools.partial(self._start, name, op) for name, op in ops.items()}

    # -- pointers out ---------------------------------------------------------------------------

    @staticmethod
    def failure(exc: UndertowError) -> ErrorInfo:
        """How a data error is reported to the caller."""
        return failure(exc)

    def keep(self, value: Any, incoming: Incoming, tags: Sequence[str] = ()) -> dict[str, Any]:
        """Keep ``value`` for the caller of ``incoming``; its pointer's JSON form."""
        entry = self.store.put(value, tags=tags, owner=self._owner(incoming.identity))
        form = self._pointer(entry, getattr(incoming, "protocol", "zmq"))
        self._tell("put", entry, form)
        return form

    def forms(self, entry: Entry) -> list[dict[str, Any]]:
        """Pointers to ``entry`` over each transport the server offers."""
        offered = ["zmq", "http"] if self._server.http_address else ["zmq"]
        return [self._pointer(entry, protocol) for protocol in offered]

    def _pointer(self, entry: Entry, protocol: str) -> dict[str, Any]:
        server = self._server
        address = server.http_address if protocol == "http" else server.address
        path = f"/data/{entry.key}" if protocol == "http" else ""
        if address.startswith(("tcp://", "http://")):
            host = address_host(address)
            port = int(address.rpartition(":")[2])
            if server.advertise:
                host = server.advertise
            elif host in _WILDCARDS:
                host = socket.gethostname()
        else:  # ipc:// or inproc://: the address is the whole story
            host, port, path = "", 0, address
        return pointer_form(
            key=entry.key,
            host=host,
            protocol=protocol,
            port=port,
            path=path,
            secret_key=entry.secret,
            size=entry.size,
            type_name=entry.type_name,
        )

    def _tell(self, event: str, entry: Entry, form: dict[str, Any] | None) -> None:
        for listener in self.listeners:
            try:
                listener(event, entry, form)
            except Exception:  # a listener (the catalog, say) must not fail the call
                log.exception("data server %r: a listener failed on %s", self._server.name, event)

    # -- pointers in ------------------------------------------------------------------------

    @staticmethod
    def mentions_pointers(frames: Sequence[Any]) -> bool:
        """True when a call's body may hold pointers (it names their type); read in place."""
        if not frames:
            return False
        body = frames[0]
        if isinstance(body, bytes):
            return _NEEDLE in body
        return _SEARCH(body) is not None

    def resolve(
        self,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        timeout: float | None,
    ) -> tuple[list[Any], dict[str, Any]]:
        """The arguments with each pointer replaced by its value."""

        def value(form: dict[str, Any]) -> Any:
            return self._value_of(form, identity, timeout)

        return [swap_pointers(a, value) for a in args], {
            k: swap_pointers(v, value) for k, v in kwargs.items()
        }

    def _value_of(self, form: dict[str, Any], identity: str | None, timeout: float | None) -> Any:
        pointer = Pointer(form)
        key = pointer.key
        if self._store is not None and key in self._store:
            return self._open(key, str(form["secret_key"]), identity)[1]
        # held elsewhere: fetched from its owner, never through the caller (fails fast)
        secret, wait = str(form["secret_key"]), timeout or _FETCH_TIMEOUT
        return fetch_from_owner(pointer.address, key, secret, self._peer_token(), wait)

    def _peer(self, address: str) -> Any:
        return client_for(address, token=self._peer_token())

    def _peer_token(self) -> str | bool | None:
        return self.token if self.token is not None else self._server_token

    # -- the data functions ----------------------------------------------------------------

    def _start(self, name: str, op: Callable[..., Any], incoming: Incoming) -> Job | None:
        codec = incoming.header.codec
        if codec == _PICKLE_NAME and incoming.identity is None:  # checked before decoding
            incoming.fail(
                error_info(
                    AuthenticationError(
                        f"pickle reaches server {self._server.name!r}'s data only from an "
                        "authenticated caller; connect with token=..."
                    ),
                    code="auth",
                )
            )
            return None
        return name, functools.partial(self._run, op, incoming)

    def _run(self, op: Callable[..., Any], incoming: Incoming) -> None:
        if incoming.finished:
            return
        running = current_call.set(incoming)  # log records made meanwhile carry its id
        try:
            args, kwargs = _arguments(incoming)
            answer = op(incoming, *args, **kwargs)
        except UndertowError as exc:
            incoming.fail(failure(exc))
            return
        except Exception as exc:  # the value's own failure (a bad index, say) is the caller's
            incoming.fail(error_info(exc, skip_frames=2))
            return
        finally:
            current_call.reset(running)
        self._answer(incoming, answer)

    def _answer(self, incoming: Incoming, value: Any) -> None:
        if incoming.values:  # a call from HTTP: its app encodes the value, once
            self._answer_value(incoming, value)
            return
        try:
            if incoming.identity is not None and not plain(value):
                raise SerializationError("as itself, only pickle carries it")
            payload, codec = _NUMPY.encode(value), _NUMPY.name
        except SerializationError:
            if incoming.identity is None:
                incoming.fail(_pickle_only(value))
                return
            codec = _PICKLE_NAME
            payload = resolve_codec(codec).encode(value)
        incoming.reply(payload, codec)

    @staticmethod
    def _answer_value(incoming: Incoming, value: Any) -> None:
        """Answer with ``value`` itself. What only pickle carries still goes only to an
        authenticated caller; for an anonymous one, a value :func:`plain` doubts is tried
        with the numpy codec, as the encoded answer would be."""
        if incoming.identity is None and not plain(value):
            try:
                value = _NUMPY.decode(_NUMPY.encode(value))
            except SerializationError:
                incoming.fail(_pickle_only(value))
                return
        incoming.reply_value(value)

    def _fetch(self, incoming: Incoming, key: str, secret: str) -> Any:
        return self._open(key, secret, incoming.identity)[1]

    def _look(
        self,
        incoming: Incoming,
        key: str,
        secret: str,
        op: str,
        name: str,
        index: Any,
        args: list[Any],
        kwargs: dict[str, Any],
        keep: bool,
    ) -> Any:
        value = self._open(key, secret, incoming.identity)[1]
        if op == "getitem":
            answer = value[decode_index(index)]
        elif op == "len":
            answer = len(value)
        elif op in ("getattr", "call"):
            if not isinstance(name, str) or not name or name.startswith("_"):  # type: ignore[redundant-expr]
                raise PermissionDenied(
                    f"{name!r}: only public attributes of a remote value can be used"
                )
            if op == "call" and not self._calls:
                raise PermissionDenied(
                    f"server {self._server.name!r} does not call methods of its data "
                    "(Server(data_calls=False))"
                )
            answer = getattr(value, name)
            if op == "call":
                if self.mentions_pointers(incoming.frames):
                    args, kwargs = self.resolve(args, kwargs, incoming.identity, None)
                answer = answer(*args, **kwargs)
        else:
            raise ConfigError(f"unknown pointer operation {op!r}")
        if keep:
            return self.keep(answer, incoming)
        # msgpack has no tuples: the caller is told, so that ptr.shape is a tuple
        return [answer, type(answer) is tuple]

    def _put(self, incoming: Incoming, value: Any, tags: list[str]) -> dict[str, Any]:
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):  # type: ignore[redundant-expr]
            raise ConfigError(f"tags must be non-empty strings, not {tags!r}")
        return self.keep(value, incoming, tags)

    def _share(self, incoming: Incoming, key: str, secret: str, identities: list[str]) -> None:
        if not self._server.authenticates:
            raise ConfigError(
                f"server {self._server.name!r} does not authenticate callers, so there is "
                "nobody to share with: whoever holds the pointer can use it"
            )
        entry = self._open(key, secret, incoming.identity, owner_only=True)[0]
        self.store.share(entry.key, identities)

    def _delete(self, incoming: Incoming, key: str, secret: str) -> bool:
        try:
            entry = self._open(key, secret, incoming.identity, owner_only=True)[0]
        except DataNotFound:
            return False
        deleted = self.store.delete(entry.key)
        if deleted:
            self._tell("delete", entry, None)
        return deleted

    def _describe(self, incoming: Incoming, key: str, secret: str) -> dict[str, Any]:
        return described(self._entry(key, secret, incoming.identity))

    def _copy(
        self, incoming: Incoming, source: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Keep a copy of the value ``source`` (a pointer's form) names, fetched from its
        server, under its key and secret; a no-op if this server holds the key already."""
        pointer, protocol = Pointer(source), getattr(incoming, "protocol", "zmq")
        if timeout is not None and not isinstance(timeout, int | float):
            raise ConfigError(f"a copy's timeout is a number of seconds, not {timeout!r:.40}")
        if pointer.key not in self.store:
            entry, new = copy_here(
                self.store,
                pointer,
                peer=self._peer(pointer.address),
                allow=lambda wanted: self._allow(wanted, incoming.identity),
                fetch=lambda: self._value_of(source, incoming.identity, timeout),
                timeout=timeout or _FETCH_TIMEOUT,
            )
            if new:
                self._tell("put", entry, self._pointer(entry, protocol))
        entry = self._entry(pointer.key, str(source["secret_key"]), incoming.identity)
        return self._pointer(entry, protocol)

    # -- access -----------------------------------------------------------------------------

    def _owner(self, identity: str | None) -> str | None:
        """Who owns what a caller keeps: its identity, or the server's account."""
        if identity is not None:
            return identity
        return _ANONYMOUS if self._server.authenticates else None

    def _open(
        self, key: str, secret: str, identity: str | None, *, owner_only: bool = False
    ) -> tuple[Entry, Any]:
        """The entry and value of ``key``, if ``secret`` and the caller may have them."""
        entry = self._entry(key, secret, identity, owner_only=owner_only)
        return entry, self.store.get(key)

    def _entry(
        self, key: str, secret: str, identity: str | None, *, owner_only: bool = False
    ) -> Entry:
        """The entry of ``key``, if ``secret`` and the caller may have it."""
        if not isinstance(key, str) or not isinstance(secret, str):  # type: ignore[redundant-expr]
            raise ConfigError("a pointer's key and secret are strings")
        try:
            entry = self.store.entry(key)
        except DataNotFound:
            raise DataNotFound(
                f"no object {key!r} on {self._where}: deleted, never put there, or lost when "
                "the server restarted while it was only in memory",
                key=key,
            ) from None
        if not hmac.compare_digest(entry.secret.encode(), secret.encode()):
            raise PermissionDenied(
                f"the secret given for object {key!r} on {self._where} is wrong; use the "
                "pointer as it was given (its JSON form carries secret_key)"
            )
        self._allow(entry, identity, owner_only=owner_only)
        return entry

    def _allow(self, entry: Entry, identity: str | None, *, owner_only: bool = False) -> None:
        """Raise PermissionDenied unless the caller may use (or change) ``entry``: anyone
        with the secret, or, when the server authenticates, its owner (or one it was shared
        with)."""
        if not self._server.authenticates:
            return
        who = identity or _ANONYMOUS
        if who == entry.owner or (not owner_only and who in entry.shared):
            return
        log.warning("data server %r: denied object %s to %r", self._server.name, entry.key, who)
        hint = "" if owner_only else f"; its owner can share it: ptr.share({who!r})"
        raise PermissionDenied(
            f"{who!r} may not {'change' if owner_only else 'use'} object {entry.key!r} of "
            f"{entry.owner!r} on {self._where}{hint}"
        )

    @property
    def _where(self) -> str:
        return f"server {self._server.name!r} at {self._server.address}"


#: the owner of what anonymous callers keep on a server that authenticates others
_ANONYMOUS = "anonymous"


def _arguments(incoming: Incoming) -> tuple[Sequence[Any], dict[str, Any]]:
    """A data function's arguments: as the transport decoded them (HTTP), or from the body
    frame in the call's codec."""
    if incoming.arguments is not None:
        return incoming.arguments
    args, kwargs = resolve_codec(incoming.header.codec or "msgpack").decode(incoming.frames)
    return args, kwargs


def _pickle_only(value: Any) -> ErrorInfo:
    """Why an answer is not sent to an anonymous caller."""
    return error_info(
        SerializationError(
            f"an answer of type {type(value).__name__} can travel only as pickle, which goes "
            "only to authenticated callers; keep it remote (keep=True) or ask for a part that "
            "is numbers, text or arrays"
        ),
        code="serialization",
    )


def swap_pointers(value: Any, resolve: Callable[[dict[str, Any]], Any]) -> Any:
    """``value`` with the pointers in it (their JSON forms, or Pointers from a pickle, at any
    depth of lists, tuples and dicts) replaced by ``resolve(form)``."""
    kind = type(value)
    if kind is dict:
        if value.get("type") == POINTER_TYPE:
            return resolve(value)
        return {k: swap_pointers(v, resolve) for k, v in value.items()}
    if kind is list:
        return [swap_pointers(v, resolve) for v in value]
    if kind is tuple:
        return tuple(swap_pointers(v, resolve) for v in value)
    if isinstance(value, Pointer):  # from a pickle
        return resolve(value.to_json())
    return value
