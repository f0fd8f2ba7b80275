"""``@Expose()``: mark a class as a service and the methods clients may call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from undertow.errors import ConfigError
from undertow.rpc import FunctionOptions, GlobTable

__all__ = [
    "Expose",
    "MethodSpec",
    "ServiceSpec",
    "check_ttl",
    "exposed_methods",
    "service_name",
    "service_spec",
]

T = TypeVar("T")

_SERVICE = "__undertow_service__"
_METHOD = "__undertow_expose__"
#: options a service class takes besides its name and config table
_CLASS_OPTIONS = ("ttl",)


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    """What ``@Expose()`` on a class recorded."""

    name: str
    #: glob -> options for the service's methods, as ``Server.config`` takes them
    config: dict[str, dict[str, Any]]
    #: seconds without a heartbeat after which the registry drops an instance
    ttl: float | None = None


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What ``@Expose()`` on a method recorded."""

    #: the name clients call it by (default: the method's own)
    name: str | None
    options: dict[str, Any]


def Expose(  # the seed's spelling: a decorator factory named like a class
    name: str | None = None,
    *,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> Callable[[T], T]:
    """Make a class a service, or a method of one callable by clients.

    ::

        @Expose(config={"*_np": {"output_serialization": "pickle"}})
        class MemKeyValue:
            @Expose()
            def put(self, key, value): ...

            @Expose(timeout=5, output=False)
            def size(self): ...

            def helper(self): ...        # not exposed: clients cannot reach it

    On a class: ``name`` is the service's name (default: the class's), ``config`` sets
    options by glob for its methods (see ``undertow.Server.config``) and ``ttl`` is how long
    the registry keeps an instance without a heartbeat (default 10 s). On a method: ``name``
    is the name clients call it by, and the options (``input_serialization``,
    ``output_serialization``, ``timeout``, ``output``) apply to that method before any glob.
    Works with plain classes, dataclasses and attrs classes, in either decorator order;
    sync, async and generator methods all work.
    """
    if name is not None and not str(name).isidentifier():
        raise ConfigError(f"Expose(name={name!r}): a name must be a Python identifier")

    def mark(obj: T) -> T:
        if isinstance(obj, type):
            _mark_class(obj, name, config, options)
        else:
            _mark_method(obj, name, config, options)
        return obj

    return mark


def _mark_class(
    cls: type, name: str | None, config: Mapping[str, Mapping[str, Any]] | None, options: Any
) -> None:
    unknown = sorted(set(options) - set(_CLASS_OPTIONS))
    if unknown:
        raise ConfigError(
            f"@Expose on class {cls.__name__} got option(s) {unknown}; a class takes "
            "name=, config={glob: options} and ttl=; give method options to "
            "@Expose on the method or through config"
        )
    raw = config if config is not None else {}
    GlobTable().replace(raw)  # validated now, where the mistake is
    table = {pattern: dict(opts) for pattern, opts in raw.items()}
    ttl = check_ttl(options.get("ttl"), "@Expose(ttl=...)")
    setattr(cls, _SERVICE, ServiceSpec(name or cls.__name__, table, ttl))


def _mark_method(
    obj: Any, name: str | None, config: Mapping[str, Mapping[str, Any]] | None, options: Any
) -> None:
    if config is not None:
        raise ConfigError("@Expose on a method takes options directly, not config=")
    target = obj.__func__ if isinstance(obj, staticmethod | classmethod) else obj
    if not callable(target):
        raise ConfigError(f"@Expose() can mark a class or a method, not {obj!r}")
    where = f"method {getattr(target, '__qualname__', target)!r}"
    FunctionOptions.parse(options, where=where)  # validated now, where the mistake is
    setattr(target, _METHOD, MethodSpec(name, dict(options)))


def check_ttl(ttl: Any, where: str = "ttl") -> float | None:
    """``ttl`` as seconds, or None; a :class:`ConfigError` unless it is a positive number."""
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise ConfigError(f"{where} must be a positive number of seconds, not {ttl!r}")
    return None if ttl is None else float(ttl)


def service_spec(cls: Any) -> ServiceSpec | None:
    """The service a class was exposed as, or None. Only the class's own mark counts: a
    subclass of a service is not that service (expose it too, under a name of its own)."""
    spec = vars(cls).get(_SERVICE) if isinstance(cls, type) else None
    return spec if isinstance(spec, ServiceSpec) else None


def service_name(service: type | str) -> str:
    """The name a service is registered under, from its class or its name."""
    if isinstance(service, str):
        if not service:
            raise ConfigError("a service name must not be empty")
        return service
    spec = service_spec(service)
    if spec is None:
        raise ConfigError(
            f"{service!r} is not a service: decorate the class with @Expose() or pass its name"
        )
    return spec.name


def exposed_methods(cls: type) -> dict[str, tuple[str, MethodSpec]]:
    """Remote name -> (attribute name, spec) of every method ``cls`` exposes, in definition
    order (base classes first)."""
    found: dict[str, tuple[str, MethodSpec]] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            target = value.__func__ if isinstance(value, staticmethod | classmethod) else value
            spec = getattr(target, _METHOD, None)
            if isinstance(spec, MethodSpec):
                remote = spec.name or attr
                if remote.startswith("_"):
                    raise ConfigError(
                        f"{cls.__name__}.{attr} is exposed as {remote!r}; remote names must "
                        "not start with '_' (give it name=...)"
                    )
                found[remote] = (attr, spec)
    return found
