"""Remote functions as real Python functions, so help(), ``f?`` and completion see them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from undertow.errors import FunctionNotFound
from undertow.rpc._calls import FunctionInfo
from undertow.rpc._signature import rebuild_signature

__all__ = ["CallOptions", "as_attributes", "make_function", "not_found"]


class CallOptions:
    """Per-call settings: ``timeout`` in seconds (None: the client's default), ``output``."""

    __slots__ = ("output", "timeout")

    def __init__(self, timeout: float | None = None, output: bool | None = None) -> None:
        self.timeout = timeout
        self.output = output

    def __repr__(self) -> str:
        return f"CallOptions(timeout={self.timeout!r}, output={self.output!r})"


Invoke = Callable[[FunctionInfo, tuple[Any, ...], dict[str, Any], CallOptions], Any]


def make_function(
    info: FunctionInfo,
    server: str,
    invoke: Invoke,
    submit: Invoke,
    options: CallOptions | None = None,
) -> Callable[..., Any]:
    """A function that calls ``info`` remotely through ``invoke``.

    It carries the remote signature and docstring, and two helpers: ``f.submit(...)`` starts
    the call and returns a future, and ``f.options(timeout=..., output=...)`` returns the same
    function with other per-call settings.
    """
    opts = options or CallOptions()

    def remote(*args: Any, **kwargs: Any) -> Any:
        return invoke(info, args, kwargs, opts)

    def submit_call(*args: Any, **kwargs: Any) -> Any:
        return submit(info, args, kwargs, opts)

    def with_options(
        *, timeout: float | None = None, output: bool | None = None
    ) -> Callable[..., Any]:
        merged = CallOptions(
            opts.timeout if timeout is None else timeout, opts.output if output is None else output
        )
        return make_function(info, server, invoke, submit, merged)

    signature = rebuild_signature(info.params, info.returns)
    for fn, doc in ((remote, info.doc), (submit_call, f"Start {info.name}() and return a future.")):
        fn.__name__ = fn.__qualname__ = info.name
        fn.__doc__ = doc or None
        fn.__module__ = f"undertow.remote[{server}]"
        fn.__signature__ = signature  # type: ignore[attr-defined]
    remote.submit = submit_call  # type: ignore[attr-defined]
    remote.options = with_options  # type: ignore[attr-defined]
    remote.info = info  # type: ignore[attr-defined]
    return remote


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
