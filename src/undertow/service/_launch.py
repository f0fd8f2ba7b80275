"""Launching services from a file or module: ``python -m undertow.service memkv.py``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from undertow._util import LOG_FORMATS, setup_logging
from undertow.errors import UndertowError
from undertow.service._expose import service_spec

__all__ = ["LaunchError", "load", "main", "services_in"]


class LaunchError(UndertowError):
    """A service file or module cannot be imported or gives nothing to serve."""


def load(target: str) -> ModuleType:
    """Import ``target``, a ``.py`` file or a module name, as a module (never as
    ``__main__``, so its ``if __name__ == "__main__":`` block does not run).

    A file is imported under its stem (``memkv.py`` as ``memkv``), with its directory first
    on ``sys.path`` so that it can import its neighbours. Errors raised while importing are
    reported with the user's traceback.
    """
    path = Path(target)
    is_file = target.endswith(".py") or path.is_file()
    try:
        if is_file:
            if not path.is_file():
                raise LaunchError(f"no such file: {target}")
            return _load_file(path.resolve())
        return importlib.import_module(target)
    except LaunchError:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        what = "import" if not is_file else "run"
        text = "".join(traceback.format_exception(exc))
        raise LaunchError(f"cannot {what} {target}:\n{text.rstrip()}") from None


def _load_file(path: Path) -> ModuleType:
    name = path.stem
    if not name.isidentifier():
        raise LaunchError(f"{path.name}: a service file's name must be a Python identifier")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LaunchError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[name] = module  # so pickle and the module's own imports find it by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def services_in(module: ModuleType) -> list[type]:
    """The classes ``module`` defines and marks with ``@Expose()``, in definition order."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and service_spec(value) is not None
    ]


def instantiate(classes: list[type]) -> list[Any]:
    """One instance of each class, made with no arguments."""
    objects = []
    for cls in classes:
        try:
            objects.append(cls())
        except Exception as exc:
            text = "".join(traceback.format_exception(exc)).rstrip()
            where = getattr(sys.modules.get(cls.__module__), "__file__", None) or cls.__module__
            raise LaunchError(
                f"cannot create the service {cls.__name__} ({where}): its class must be "
                f"callable with no arguments (give every field a default)\n{text}"
            ) from None
    return objects


def collect(targets: list[str]) -> list[Any]:
    """Import every target and make one instance of each service found."""
    classes: list[type] = []
    for target in targets:
        found = services_in(load(target))
        if not found:
            raise LaunchError(
                f"{target} defines no service: mark a class with @Expose() (from "
                "undertow.service import Expose)"
            )
        classes += found
    return instantiate(classes)


#: the options of ``python -m undertow.service``, by the ``HostSettings`` field each sets
_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--host", {"help": "interface to bind (127.0.0.1)"}),
    ("--port", {"type": int, "help": "port (0: a free one)"}),
    ("--backend", {"help": "registry URL ($UNDERTOW_BACKEND)"}),
    ("--name", {"help": "register the one service under this name"}),
    ("--advertise", {"help": "host name clients should use"}),
    (
        "--token",
        {
            "help": "a token callers must sign with (default: $UNDERTOW_TOKEN, which, unlike "
            "the command line, other users cannot see)"
        },
    ),
    (
        "--tokens",
        {"help": "a file of tokens callers may sign with, one per line ($UNDERTOW_TOKENS)"},
    ),
    (
        "--allow-anonymous",
        {
            "action": "store_true",
            "help": "with tokens, also serve callers without one (never pickle)",
        },
    ),
    (
        "--insecure",
        {
            "action": "store_true",
            "help": "serve beyond loopback without tokens, or plain HTTP beyond loopback "
            "(tokens travel in clear); prints a warning",
        },
    ),
    (
        "--http",
        {
            "type": int,
            "dest": "http_port",
            "metavar": "PORT",
            "help": "also serve over HTTP on this port (0: a free one)",
        },
    ),
    (
        "--metrics",
        {
            "type": int,
            "dest": "metrics_port",
            "metavar": "PORT",
            "help": "serve the figures for Prometheus at /metrics on this port (0: a free one)",
        },
    ),
    (
        "--curve-secret",
        {"help": "CURVE secret key file (undertow keygen): encrypt every connection"},
    ),
    ("--ttl", {"type": float, "help": "seconds the registry keeps it without heartbeats"}),
    (
        "--data-dir",
        {"help": "where data servers spill values, a directory per service"},
    ),
    (
        "--memory-limit",
        {"type": int, "help": "bytes each data server keeps in memory before it spills"},
    ),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m undertow.service",
        description="Serve every class marked with @Expose() in the given files or modules, "
        "and register them in the cluster registry until stopped (Ctrl-C or SIGTERM). An "
        "option not given comes from $UNDERTOW_<OPTION> (UNDERTOW_PORT...), else from the "
        "[host] table of config.toml in the undertow home.",
    )
    parser.add_argument("targets", nargs="+", metavar="FILE_OR_MODULE")
    for flag, options in _FLAGS:
        parser.add_argument(flag, **options)
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("UNDERTOW_LOG_FORMAT", "text"),
        help="log records as text or one JSON object a line, with the id of the call each "
        "was made in ($UNDERTOW_LOG_FORMAT)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m undertow.service FILE_OR_MODULE ...``: serve every exposed class."""
    options = vars(_parser().parse_args(argv))
    setup_logging(logging.WARNING - 10 * min(options.pop("verbose"), 2), options.pop("log_format"))
    return launch(options.pop("targets"), **options)


def launch(targets: list[str], **options: Any) -> int:
    """Serve the services of ``targets`` until stopped; the process's exit status.

    ``options`` are :class:`~undertow.config.HostSettings` fields, as command-line options
    give them: None, or a flag that is False, was not given (the environment, the settings
    file or the default decides)."""
    from undertow.service._host import ServiceHost

    given = {k: v for k, v in options.items() if v is not None and v is not False}
    try:
        host = ServiceHost(collect(targets), **given)
    except UndertowError as exc:
        print(f"undertow: {exc}", file=sys.stderr, flush=True)  # noqa: T201
        return 2
    try:
        host.serve_forever()
    except UndertowError as exc:
        print(f"undertow: {exc}", file=sys.stderr, flush=True)  # noqa: T201
        return 1
    return 0
