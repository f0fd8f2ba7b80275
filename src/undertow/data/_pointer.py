"""Pointers: a value left on the server that computed it, used from anywhere.

A pointer is a small description (its JSON form is the same for every client)::

    {"type": "undertow.pointer", "key": "9f...", "host": "127.0.0.1", "protocol": "zmq",
     "port": 5555, "path": "", "secret_key": "...", "size": 800000000,
     "type_name": "numpy.ndarray"}

Given as an argument to a call, the server that runs the call uses the value in its place
(from its own memory when it holds it, else fetched straight from the owner). ``ptr[0:10]``,
``len(ptr)``, ``ptr.shape`` and ``ptr.call("sum", axis=0)`` run where the value is and bring
back only the answer; ``ptr.keep[...]`` and ``call(..., keep=True)`` leave the answer there
too, as a new pointer. ``ptr.fetch()`` brings the value itself, from the owner directly.

The secret is the capability: whoever holds the pointer may use the value (and, when the
server authenticates, only its owner and those it was shared with).
"""

from __future__ import annotations

import atexit
import html
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from undertow._util import html_table
from undertow.errors import ConfigError, SerializationError
from undertow.rpc import CallOptions, FunctionInfo, RemoteFunctions, client_token, connect
from undertow.security import find_client_token
from undertow.transport import SharedValue, shared_of
from undertow.wire import POINTER_TYPE

__all__ = [
    "POINTER_TYPE",
    "Pointer",
    "close_clients",
    "decode_index",
    "encode_index",
    "is_sync_client",
    "plain",
    "plug_replication",
    "pointer_form",
    "put",
]

#: the fields of a pointer's JSON form and their types
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "key": str,
    "host": str,
    "protocol": str,
    "port": int,
    "path": str,
    "secret_key": str,
    "size": int,
    "type_name": str,
}
#: a pointer operation's deadline when the caller gives none (seconds)
DEFAULT_TIMEOUT = 300.0
#: how long a pointer's HTML form waits for each thing it asks its server (seconds)
_REPR_TIMEOUT = 2.0
#: builtin types whose length a pointer's HTML form shows
_SIZED = frozenset({"list", "tuple", "dict", "set", "frozenset", "str", "bytes", "bytearray"})


def pointer_form(
    *,
    key: str,
    host: str,
    protocol: str,
    port: int,
    path: str,
    secret_key: str,
    size: int,
    type_name: str,
) -> dict[str, Any]:
    """A pointer's JSON form from its fields."""
    return {
        "type": POINTER_TYPE,
        "key": key,
        "host": host,
        "protocol": protocol,
        "port": port,
        "path": path,
        "secret_key": secret_key,
        "size": size,
        "type_name": type_name,
    }


class Pointer:
    """A value that stays on the server that holds it; see the module's docstring.

    Its own attributes are few: :attr:`key`, :attr:`nbytes`, :attr:`type_name`,
    :attr:`address`, :meth:`fetch`, :meth:`call`, :meth:`attr`, :attr:`keep`,
    :meth:`share`, :meth:`delete`, :meth:`replicate` and :meth:`to_json`; any other public
    attribute is read from the remote value (``ptr.shape``, ``ptr.dtype``, ``ptr.columns``).
    """

    __slots__ = ("_form", "_held", "_via")

    def __init__(self, form: Mapping[str, Any], *, via: Any = None) -> None:
        if not isinstance(form, Mapping) or form.get("type") != POINTER_TYPE:  # type: ignore[redundant-expr]
            raise ConfigError(
                f'not a pointer: {form!r:.120}; a pointer\'s JSON form has "type": "{POINTER_TYPE}"'
            )
        for name, kind in _FIELDS.items():
            value = form.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(
                    f"pointer field {name!r} must be a {getattr(kind, '__name__', kind)}, not "
                    f"{type(value).__name__}"
                )
        if form["protocol"] not in ("zmq", "http"):
            raise ConfigError(f"pointer protocol {form['protocol']!r} is not 'zmq' or 'http'")
        self._form = {"type": POINTER_TYPE, **{name: form[name] for name in _FIELDS}}
        #: the client it came from, used again when it talks to the same server
        self._via = via
        #: the last value fetched, if it is in shared memory its keeper still keeps
        self._held: tuple[Any, SharedValue] | None = None

    # -- what it is -----------------------------------------------------------------------

    @property
    def key(self) -> str:
        """The value's key on its data server (a UUID)."""
        return str(self._form["key"])

    @property
    def nbytes(self) -> int:
        """The value's size in bytes, as its server measured it."""
        return int(self._form["size"])

    @property
    def type_name(self) -> str:
        """The value's type, such as ``numpy.ndarray``."""
        return str(self._form["type_name"])

    @property
    def address(self) -> str:
        """Where the value's server listens: ``tcp://host:port`` or ``http://host:port``."""
        form = self._form
        path, host, port = form["path"], form["host"], form["port"]
        if form["protocol"] == "zmq" and path:
            return str(path)  # ipc:// or inproc://
        host = f"[{host}]" if ":" in host else host
        scheme = "tcp" if form["protocol"] == "zmq" else "http"
        return f"{scheme}://{host}:{port}"

    def to_json(self) -> dict[str, Any]:
        """The JSON form, secret included: whoever has it can use the value."""
        return dict(self._form)

    def __undertow_wire__(self) -> dict[str, Any]:
        return dict(self._form)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pointer, (dict(self._form),))

    def __repr__(self) -> str:  # never the secret
        return f"<Pointer {self.key} {self.type_name} {self.nbytes:,} bytes at {self.address}>"

    def _repr_html_(self) -> str:
        """The pointer in a notebook: the value's type, shape, dtype (or length), size,
        owner, where it is kept and which server holds it; never the secret. What the
        pointer itself does not carry is asked of the value's server, each answer within
        :data:`_REPR_TIMEOUT` seconds, and left out if it does not come (a server that
        does not answer the first question is asked no more)."""
        about = self._ask_quietly("_data_describe", self.key, self._form["secret_key"])
        described = about if isinstance(about, dict) else {}
        rows = [("type", f"<code>{html.escape(self.type_name)}</code>")]
        for name in _shape_fields(self.type_name) if about is not None else ():
            value = self._ask_quietly(
                "_data_look", self.key, self._form["secret_key"], *_look_args(name)
            )
            if isinstance(value, list | tuple) and len(value) == 2:  # (answer, was_tuple)
                answer = tuple(value[0]) if value[1] else value[0]
                rows.append((name, html.escape(str(answer))))
        rows.append(("size", f"{self.nbytes:,} bytes"))
        rows += [
            (field, html.escape(str(described[field])))
            for field in ("owner", "where", "tags")
            if described.get(field) not in (None, "", [], ())
        ]
        rows += [("server", html.escape(self.address)), ("key", html.escape(self.key))]
        return html_table("undertow.Pointer", rows)

    def _ask_quietly(self, function: str, *args: Any) -> Any:
        """``function(*args)`` on the value's server, or None if it fails or is late."""
        try:
            return self._ask(function, _REPR_TIMEOUT, *args)
        except Exception:  # a display shows what it can
            return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pointer):
            return NotImplemented
        return self.key == other.key and self.address == other.address

    def __hash__(self) -> int:
        return hash((self.key, self.address))

    def __bool__(self) -> bool:  # not len(): a pointer is never "empty" without asking
        return True

    def __iter__(self) -> Any:
        raise TypeError(
            f"a pointer to {self.type_name} cannot be iterated over remotely item by item; "
            "fetch() it, or slice it first: ptr[0:10]"
        )

    # -- the value, where it is -------------------------------------------------------------

    def fetch(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """The value itself, straight from its data server: over ZeroMQ, arrays travel as
        frames of their own, never copied; over HTTP, as ``.npy`` read into place. An array
        its server keeps in shared memory on this host arrives as a read-only view of that
        memory, and fetching it again through this pointer asks nobody while the server is
        alive and keeps it (the pointer holds the mapping until then)."""
        form = self._form
        if form["protocol"] == "http":
            from undertow.transport import fetch_data  # the http extra

            # the identity of the client it came through, if that client is of the same
            # server (the user's own token goes nowhere else), else this process's token
            via = self._via
            same = via is not None and getattr(via, "address", None) == self.address
            found = (client_token(via) if same else None) or find_client_token(None)
            url = self.address + str(form["path"])
            return fetch_data(url, str(form["secret_key"]), found or None, timeout)
        held = self._held
        if held is not None:  # fetched already, in shared memory: still the same memory?
            if held[1].live():
                return held[0].view()  # no round trip: a new view of what its keeper keeps
            self._held = None
        value = self._ask("_data_fetch", timeout, self.key, form["secret_key"])
        shared = shared_of(value) if type(value).__name__ == "ndarray" else None
        if shared is not None and shared.status_at >= 0:
            self._held = (value, shared)
        return value

    def call(self, method: str, /, *args: Any, keep: bool = False, **kwargs: Any) -> Any:
        """Call ``method`` of the remote value with these arguments where it is; its answer
        (with ``keep=True``: a pointer to the answer, which stays there)."""
        return self._look("call", method, None, args, kwargs, keep)

    def attr(self, name: str, *, keep: bool = False) -> Any:
        """The remote value's attribute ``name`` (also for names a pointer uses itself)."""
        return self._look("getattr", name, None, (), {}, keep)

    @property
    def keep(self) -> _Kept:
        """The same operations, whose answers stay remote: ``ptr.keep[0:10]`` is a pointer."""
        return _Kept(self)

    def __getitem__(self, item: Any) -> Any:
        return self._look("getitem", "", encode_index(item), (), {}, False)

    def __len__(self) -> int:
        return int(self._look("len", "", None, (), {}, False))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._look("getattr", name, None, (), {}, False)

    def share(self, *identities: str) -> None:
        """Let these identities use the value too (the server must authenticate callers)."""
        if not identities or not all(isinstance(i, str) and i for i in identities):  # type: ignore[redundant-expr]
            raise ConfigError(f"share() takes identity names, not {identities!r}")
        self._ask("_data_share", DEFAULT_TIMEOUT, self.key, self._form["secret_key"], identities)

    def delete(self) -> bool:
        """Delete the value on its server; False if it was gone already."""
        self._held = None
        return bool(self._ask("_data_delete", DEFAULT_TIMEOUT, self.key, self._form["secret_key"]))

    def replicate(
        self, group: str, *, timeout: float | None = None, backend: str | None = None
    ) -> list[Pointer]:
        """A copy of the value on a data server of every host of host group ``group``, each
        fetched straight from this pointer's server, under the same key and secret; the
        pointers of the copies, one per host in the group's order (this one for its own
        host). Hosts that hold a copy already are skipped; the catalog lists every copy.
        ``backend``: the registry (default ``$UNDERTOW_BACKEND``, else the embedded file)."""
        replicate = _plugged.get("replicate")
        if replicate is None:  # pragma: no cover - undertow.service plugs it in
            raise ConfigError("replicate() finds host groups through undertow.service: import it")
        copies: list[Pointer] = replicate(self, group, timeout=timeout, backend=backend)
        return copies

    # -- plumbing -----------------------------------------------------------------------------

    def _look(
        self,
        op: str,
        name: str,
        index: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        keep: bool,
    ) -> Any:
        answer = self._ask(
            "_data_look",
            DEFAULT_TIMEOUT,
            self.key,
            self._form["secret_key"],
            op,
            name,
            index,
            list(args),
            kwargs,
            keep,
        )
        if keep:
            return answer
        value, was_tuple = answer
        return tuple(value) if was_tuple else value

    def _ask(self, function: str, timeout: float | None, *args: Any) -> Any:
        client = self._client()
        return ask(client, function, args, timeout)

    def _client(self) -> Any:
        via = self._via
        if (
            via is not None
            and is_sync_client(via)
            and via.address == self.address
            and not _closed(via)
        ):
            return via
        return client_for(self.address)


def _shape_fields(type_name: str) -> tuple[str, ...]:
    """What a pointer's HTML form asks of a value of this type: a builtin container's
    length, another type's ``shape`` and ``dtype`` (arrays, frames, tensors)."""
    if "." not in type_name:
        return ("length",) if type_name in _SIZED else ()
    return ("shape", "dtype")


def _look_args(name: str) -> tuple[Any, ...]:
    """The ``_data_look`` arguments that read ``name`` (``length``: ``len()``)."""
    if name == "length":
        return ("len", "", None, [], {}, False)
    return ("getattr", name, None, [], {}, False)


class _Kept:
    """``ptr.keep``: pointer operations whose answers stay where the value is."""

    __slots__ = ("_pointer",)

    def __init__(self, pointer: Pointer) -> None:
        self._pointer = pointer

    def __getitem__(self, item: Any) -> Pointer:
        result: Pointer = self._pointer._look("getitem", "", encode_index(item), (), {}, True)
        return result

    def __getattr__(self, name: str) -> Pointer:
        if name.startswith("_"):
            raise AttributeError(name)
        result: Pointer = self._pointer._look("getattr", name, None, (), {}, True)
        return result

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Pointer:
        """``ptr.call(method, ..., keep=True)``."""
        result: Pointer = self._pointer._look("call", method, None, args, kwargs, True)
        return result


def is_sync_client(client: Any) -> bool:
    """True for a client whose calls block (a pointer's operations do). Asked of the type:
    a client's own attributes are its server's functions."""
    return isinstance(client, RemoteFunctions) and not hasattr(type(client), "aclose")


def _closed(client: Any) -> bool:
    return bool(client.closed) if hasattr(type(client), "closed") else False


def ask(client: Any, function: str, args: tuple[Any, ...], timeout: float | None) -> Any:
    """Call one of a data server's functions through ``client``; arguments travel with the
    numpy codec (arrays out of band), or pickle when they need it and the client has a token."""
    codec = "numpy" if plain(args) else "pickle"
    if codec == "pickle" and not _signs(client):
        raise SerializationError(
            f"the arguments of {function.removeprefix('_data_')} include a "
            f"{_first_unplain(args)}, which only pickle carries, and pickle travels only "
            "between authenticated peers: connect with token=..., or send numbers, strings, "
            "bytes, lists, dicts and numpy arrays"
        )
    info = FunctionInfo(function, input=codec, output="numpy", needs_auth=codec == "pickle")
    return client._invoke(info, args, {}, CallOptions(timeout=timeout, output=False))


_PLAIN = (type(None), bool, int, float, str, bytes, bytearray, memoryview, Pointer)


def plain(value: Any) -> bool:
    """True when the numpy codec carries ``value`` (checked without encoding anything)."""
    return _first_unplain(value) is None


def _first_unplain(value: Any) -> str | None:
    """The type name of the first part of ``value`` the numpy codec cannot carry, or None."""
    if isinstance(value, _PLAIN):
        return None
    if isinstance(value, list | tuple):
        return next((found for v in value if (found := _first_unplain(v)) is not None), None)
    if isinstance(value, dict):
        for key, item in value.items():
            found = _first_unplain(key) or _first_unplain(item)
            if found is not None:
                return found
        return None
    kind = type(value)
    numpy = kind.__module__.partition(".")[0] == "numpy"
    if numpy and not getattr(getattr(value, "dtype", value), "hasobject", True):
        return None  # an array or a numpy scalar of plain values
    return kind.__name__


def _signs(client: Any) -> bool:
    """True when ``client`` signs its calls with a token (one it was given or found)."""
    return client_token(client) is not None


#: what a layer above plugs in: "replicate", the lookup of a host group's data servers
_plugged: dict[str, Callable[..., Any]] = {}


def plug_replication(replicate: Callable[..., list[Pointer]]) -> None:
    """Called once by :mod:`undertow.service` (which reads the registry, a layer above this
    one): ``replicate(pointer, group, timeout=, backend=)`` does :meth:`Pointer.replicate`."""
    _plugged["replicate"] = replicate


# -- clients to data servers, shared by every pointer of this process -------------------------

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def client_for(address: str, token: str | bool | None = None) -> Any:
    """A client to the data server at ``address``, made once per process and address."""
    with _clients_lock:
        client = _clients.get(address)
        if client is None or _closed(client):
            client = _clients[address] = connect(address, token=token, output=False)
        return client


@atexit.register
def close_clients() -> None:
    """Close the clients pointers made (they are made again when needed)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def put(value: Any, *, to: Any, tags: Iterable[str] = (), timeout: float | None = None) -> Pointer:
    """Leave ``value`` on the server ``to`` (a client, or an address) and return a pointer."""
    client = to if is_sync_client(to) else client_for(str(to))
    tags = list(tags)
    if not all(isinstance(t, str) and t for t in tags):  # type: ignore[redundant-expr]
        raise ConfigError(f"tags must be non-empty strings, not {tags!r}")
    result: Pointer = ask(client, "_data_put", (value, tags), timeout or DEFAULT_TIMEOUT)
    return result


# -- indexes travel as plain data -------------------------------------------------------------


def encode_index(item: Any) -> Any:
    """``ptr[item]``'s item as data: slices, Ellipsis and tuples become tagged dicts."""
    if isinstance(item, slice):
        return {"slice": [item.start, item.stop, item.step]}
    if item is Ellipsis:
        return {"ellipsis": True}
    if isinstance(item, tuple):
        return {"tuple": [encode_index(i) for i in item]}
    return item


def decode_index(item: Any) -> Any:
    """The item :func:`encode_index` described."""
    if type(item) is dict and len(item) == 1:
        if "slice" in item and isinstance(item["slice"], list) and len(item["slice"]) == 3:
            return slice(*item["slice"])
        if item.get("ellipsis") is True:
            return Ellipsis
        if "tuple" in item and isinstance(item["tuple"], list):
            return tuple(decode_index(i) for i in item["tuple"])
    return item
