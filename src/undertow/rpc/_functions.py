"""Remote functions as real Python functions, so help(), ``f?`` and completion see them."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from undertow._util import cell_output, html_table, in_kernel
from undertow.errors import ConfigError, FunctionNotFound, RemoteTraceback
from undertow.rpc._calls import Description, FunctionInfo, OutputCallback, write_output
from undertow.rpc._connection import Settings
from undertow.rpc._plane import enqueue_job
from undertow.rpc._signature import rebuild_signature

__all__ = [
    "CallOptions",
    "RemoteFunctions",
    "as_attributes",
    "client_token",
    "make_function",
    "not_found",
]


class CallOptions:
    """Per-call settings: ``timeout`` in seconds (None: the client's default), ``output``,
    and ``return_pointer`` (leave the result on the server and get a pointer to it)."""

    __slots__ = ("output", "return_pointer", "timeout")

    def __init__(
        self,
        timeout: float | None = None,
        output: bool | None = None,
        return_pointer: bool = False,
    ) -> None:
        self.timeout = timeout
        self.output = output
        self.return_pointer = return_pointer

    def __repr__(self) -> str:
        return (
            f"CallOptions(timeout={self.timeout!r}, output={self.output!r}, "
            f"return_pointer={self.return_pointer!r})"
        )


Invoke = Callable[[FunctionInfo, tuple[Any, ...], dict[str, Any], CallOptions], Any]


def make_function(
    info: FunctionInfo,
    server: str,
    invoke: Invoke,
    submit: Invoke,
    options: CallOptions | None = None,
    enqueue: Invoke | None = None,
) -> Callable[..., Any]:
    """A function that calls ``info`` remotely, with its signature and docstring, and
    ``f.submit(...)`` (a future), ``f.enqueue(...)`` (a durable job, as calling ``f`` makes
    when its option ``queue`` is set) and ``f.options(timeout=, output=, return_pointer=)``."""
    opts = options or CallOptions()
    enqueue = enqueue or _cannot_queue
    invoke = enqueue if info.queue is not None and enqueue is not _cannot_queue else invoke

    remote = _caller(info, invoke, opts)

    def enqueue_call(*args: Any, **kwargs: Any) -> Any:
        return enqueue(info, args, kwargs, opts)

    def submit_call(*args: Any, **kwargs: Any) -> Any:
        return submit(info, args, kwargs, opts)

    def with_options(
        *,
        timeout: float | None = None,
        output: bool | None = None,
        return_pointer: bool | None = None,
    ) -> Callable[..., Any]:
        merged = CallOptions(
            opts.timeout if timeout is None else timeout,
            opts.output if output is None else output,
            opts.return_pointer if return_pointer is None else return_pointer,
        )
        return make_function(info, server, invoke, submit, merged, enqueue)

    _dress(
        info,
        server,
        (remote, info.doc),
        (submit_call, f"Start {info.name}() and return a future."),
        (enqueue_call, f"Queue {info.name}() as a durable job and return the job."),
    )
    remote.submit = submit_call  # type: ignore[attr-defined]
    remote.enqueue = enqueue_call  # type: ignore[attr-defined]
    remote.options = with_options  # type: ignore[attr-defined]
    remote.info = info  # type: ignore[attr-defined]
    return remote


def _caller(info: FunctionInfo, invoke: Invoke, opts: CallOptions) -> Callable[..., Any]:
    """The function that calls ``info`` through ``invoke``. An error the remote function
    raised is raised without the client's frames (see :func:`_without_our_frames`)."""

    def remote(*args: Any, **kwargs: Any) -> Any:
        try:
            return invoke(info, args, kwargs, opts)
        except Exception as exc:
            if isinstance(exc.__cause__, RemoteTraceback):
                raise _without_our_frames(exc) from exc.__cause__  # raised remotely: see above
            raise

    return remote


def _without_our_frames(exc: Exception) -> Exception:
    """``exc``, raised by the remote function, without the client's own frames: its cause
    shows the remote traceback, where the error happened; the frames of the client that
    carried it back are noise to the caller (and fill a notebook cell)."""
    return exc.with_traceback(None)


def _cannot_queue(info: FunctionInfo, *_: Any) -> Any:
    raise ConfigError(f"this client cannot queue {info.name}() as a job")


def _dress(info: FunctionInfo, server: str, *functions: tuple[Any, str]) -> None:
    """Give each function the remote one's name, signature and the docstring paired with it."""
    signature = rebuild_signature(info.params, info.returns)
    for fn, doc in functions:
        fn.__name__ = fn.__qualname__ = info.name
        fn.__doc__ = doc or None
        fn.__module__ = f"undertow.remote[{server}]"
        fn.__signature__ = signature


def as_attributes(
    owner: Any, functions: Mapping[str, Any], previous: Iterable[str] = ()
) -> set[str]:
    """Set each of ``functions`` as an attribute of ``owner``, so that ``owner.f`` is found
    without ``__getattr__`` (two Python calls on every call); returns the names set.

    The names set before (``previous``) are removed first. A name the owner itself uses (a
    method, or an attribute such as ``address``) is left alone: that function stays
    reachable as ``owner["name"]``.
    """
    for name in previous:
        owner.__dict__.pop(name, None)
    taken = {*dir(type(owner)), *owner.__dict__}
    names = set()
    for name, fn in functions.items():
        if name.isidentifier() and not name.startswith("_") and name not in taken:
            owner.__dict__[name] = fn
            names.add(name)
    return names


def not_found(name: str, where: str, functions: Iterable[str]) -> FunctionNotFound:
    """The error for a function ``where`` (``"server 'lab' at tcp://..."``) does not have."""
    available = tuple(sorted(functions))
    return FunctionNotFound(
        f"{where} has no function {name!r}; available: {list(available)}",
        name=name,
        available=available,
    )


class RemoteFunctions:
    """What every client shares (sync or async, whatever its transport): its default
    deadline and output, and the server's functions, as attributes and by name."""

    def __init__(
        self, address: str, *, timeout: float | None, output: bool | OutputCallback
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(
                f"timeout must be a positive number of seconds or None, not {timeout!r}"
            )
        self.address = address
        self.timeout = timeout
        #: where remote output goes by default (None: nowhere, and the server is told so)
        self._sink = write_output if output is True else None if output is False else output
        #: in a Jupyter kernel (looked up once): output goes to the cell that made the call
        self._cells = in_kernel()
        #: the token this client signs its calls with (None: none); pointers ask
        self._token: str | None = None
        self._server = ""
        self._bound: dict[str, Callable[..., Any]] = {}
        self._as_attributes: set[str] = set()  # functions also set as instance attributes
        #: the backend the server's queued functions' jobs go through (None: it has none)
        self._jobs_backend: str | None = None

    def _install_functions(self, desc: Description, invoke: Invoke, submit: Invoke) -> None:
        self._server = desc.server
        self._bound = {
            f.name: make_function(f, desc.server, invoke, submit, enqueue=self._enqueue)
            for f in desc.functions
        }
        self._as_attributes = as_attributes(self, self._bound, self._as_attributes)
        self._jobs_backend = desc.jobs

    def _enqueue(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], _: CallOptions
    ) -> Any:
        """Queue a call of ``info`` as a durable job, signed with this client's token (on
        its queue, else ``"default"``); the job."""
        return enqueue_job(self, info, args, kwargs, False)

    def _settings(self, opts: CallOptions) -> Settings:
        """A call's deadline in seconds, whether it wants output, where output goes, and
        whether its result stays on the server.

        Called when the call is made, in the caller's thread. In a Jupyter kernel the
        default sink is the cell running then, so that a future's output arriving while a
        later cell runs still shows under the cell that made the call; a sink the client
        was given is used as it is. Outside a kernel this costs one cached look-up.
        """
        timeout = self.timeout if opts.timeout is None else opts.timeout
        output = (self._sink is not None) if opts.output is None else opts.output
        sink = (self._sink or write_output) if output else None
        if sink is write_output and self._cells:
            sink = cell_output() or write_output
        return timeout, output, sink, opts.return_pointer

    def _lookup(self, name: str) -> Callable[..., Any]:
        fn = self._bound.get(name)
        if fn is None:
            raise not_found(name, f"server {self._server!r} at {self.address}", self._bound)
        return fn

    def __getitem__(self, name: str) -> Any:
        return self._lookup(name)

    def __dir__(self) -> Iterable[str]:
        return sorted({*super().__dir__(), *self._bound})

    def _repr_html_(self) -> str:
        """The client in a notebook: where it is connected and each function with its
        signature and the first line of its docstring."""
        rows = [("address", html.escape(self.address)), ("server", html.escape(self._server))]
        for name in sorted(self._bound):
            fn = self._bound[name]
            signature = getattr(fn, "__signature__", "(...)")
            doc = (fn.__doc__ or "").strip().splitlines()
            first = f"<br><span>{html.escape(doc[0])}</span>" if doc else ""
            rows.append((name, f"<code>{html.escape(f'{name}{signature}')}</code>{first}"))
        if not self._bound:
            rows.append(("functions", "none"))
        return html_table(type(self).__name__, rows)

    def __repr__(self) -> str:
        count = len(self._bound)
        return (
            f"<{type(self).__name__} {self.address} server={self._server!r} "
            f"[{count} function{'' if count == 1 else 's'}]>"
        )


def client_token(client: Any) -> str | None:
    """The token ``client`` (any undertow client) signs with: one it was given, found in the
    environment or settings file, or the user's own token a local server asked for; None if
    it signs nothing. For the pointers that came through it, which use the same identity."""
    token = getattr(client, "_token", None)
    return token if isinstance(token, str) else None
