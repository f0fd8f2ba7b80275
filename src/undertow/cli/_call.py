"""``undertow call``: call a function of a server by its address, or a method of a registered
service by its name, from the shell; or list what there is to call."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import click
import msgspec

import undertow
from undertow.errors import ConfigError, RemoteError, RemoteTraceback
from undertow.service import ServiceModule, ServiceProxy

__all__ = [
    "call_target",
    "is_address",
    "list_target",
    "parse_arguments",
    "parse_value",
    "print_result",
    "report_error",
]

#: a URL (tcp://, ipc://, http://, https://, ...), host:port, or a bracketed IPv6 address
_ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://|^[^:/\s]+:\d+$|^\[")
_EXAMPLE = (
    "e.g. undertow call tcp://127.0.0.1:5555 add 1 2, undertow call MemKeyValue.size, or "
    "undertow call tcp://127.0.0.1:5555 --list"
)


def is_address(target: str) -> bool:
    """Whether ``target`` is a server's address rather than a registered service's name."""
    return bool(_ADDRESS.match(target.lower()))


def parse_value(text: str) -> Any:
    """A command-line value: JSON if it parses (``3``, ``"a"``, ``[1,2]``, ``null``), else the
    text itself as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_arguments(words: tuple[str, ...]) -> tuple[list[Any], dict[str, Any]]:
    """Positional values and ``key=value`` pairs (a key must be an identifier)."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key.isidentifier():
            kwargs[key] = parse_value(value)
        elif kwargs:
            raise ConfigError(f"positional argument {word!r} after keyword arguments")
        else:
            args.append(parse_value(word))
    return args, kwargs


def call_target(
    target: str, words: tuple[str, ...], *, backend: str | None, timeout: float, wait: float
) -> None:
    """Call ``ADDRESS FUNCTION [ARGS]`` or ``SERVICE.method [ARGS]`` with arguments from the
    command line and print the result (a generator's items one a line, as they come); remote
    output streams to the terminal while it runs."""
    if is_address(target):
        if not words:
            raise ConfigError(
                f"name the function to call at {target}: undertow call {target} FUNCTION "
                f"[ARGS]; undertow call {target} --list shows them"
            )
        name, words = words[0], words[1:]
    else:
        service, dot, name = target.rpartition(".")
        if not dot or not service or not name:
            raise ConfigError(
                f"{target!r} is neither an address (tcp://HOST:PORT, ipc://PATH, "
                f"http://HOST:PORT) nor SERVICE.method; {_EXAMPLE}"
            )
        target = service
    args, kwargs = parse_arguments(words)
    with _connect(target, backend=backend, timeout=timeout, wait=wait) as client:
        result = client[name](*args, **kwargs)
        if isinstance(result, Iterator):  # a remote generator: its items as they arrive
            for item in result:
                print_result(item)
        else:
            print_result(result)


def list_target(target: str, *, backend: str | None, timeout: float, wait: float) -> None:
    """Print the functions of the server at an address, or the methods of a registered
    service: name, signature and the first line of the docstring."""
    if not is_address(target) and not target.isidentifier():
        raise ConfigError(
            f"{target!r} is neither an address (tcp://HOST:PORT, ipc://PATH, "
            f"http://HOST:PORT) nor a service name; {_EXAMPLE}"
        )
    with _connect(target, backend=backend, timeout=timeout, wait=wait) as client:
        click.echo(repr(client))
        for name, fn in _functions(client):
            summary = " ".join((fn.__doc__ or "").strip().splitlines()[:1])
            click.echo(f"  {name}{inspect.signature(fn)}" + (f"  -- {summary}" if summary else ""))


def _connect(target: str, *, backend: str | None, timeout: float, wait: float) -> Any:
    """A client of the server at address ``target``, or a proxy of the service it names."""
    if is_address(target):
        return undertow.connect(target, timeout=timeout, connect_timeout=wait)
    return ServiceModule.discover(target, timeout=wait, backend=backend, call_timeout=timeout)


def _functions(client: Any) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The remote functions of a client or a service proxy, by name."""
    if isinstance(client, ServiceProxy):
        methods = client.instances[0].methods if client.instances else []
        names = sorted(m.name for m in methods)
        yield from ((name, client[name]) for name in names)
    else:
        yield from sorted(undertow.functions(client).items())


def print_result(value: Any) -> None:
    """The result as JSON when it has a JSON form, else its repr."""
    try:
        click.echo(msgspec.json.encode(value).decode())
    except (TypeError, msgspec.EncodeError):
        click.echo(repr(value))


def report_error(exc: BaseException) -> int:
    """Print a failed call's error (with the remote traceback, when there is one) to stderr;
    the exit status."""
    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback):
        click.echo(str(cause).strip(), err=True)
    elif isinstance(exc, RemoteError):
        click.echo(f"Remote traceback:\n\n{exc.remote_traceback.rstrip()}", err=True)
    click.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
    return 1
