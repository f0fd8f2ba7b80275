"""``undertow worker``: a job queue worker from the shell, with its functions named by module.

The worker runs on an event loop of this process. The first SIGTERM or SIGINT drains it
(the jobs it holds finish, nothing more is claimed) and the command exits 0; a second one
stops at once: the jobs it held go back to the queue when their leases run out.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import click

from undertow.config import HostSettings
from undertow.errors import UndertowError
from undertow.queue import Worker
from undertow.rpc import serve_metrics
from undertow.security import TokenAuth
from undertow.storage import Backend, check_queue_name, open_backend

__all__ = ["collect_functions", "load_auth", "run_worker"]

_WHERE = (
    "the module must be importable from the current directory ({cwd}) or from a directory "
    "on PYTHONPATH"
)


def run_worker(
    *,
    queues: Sequence[str],
    concurrency: int,
    burst: bool,
    backend: str | None,
    lease: float,
    token: str | None,
    tokens: str | None,
    functions: Sequence[str],
    modules: Sequence[str],
    mode: str = "thread",
    data: str | None = None,
    metrics_port: int | None = None,
) -> int:
    """Run a worker until it is drained (or, with ``burst``, until its queues are empty);
    the exit status. ``mode``: where its jobs run (``Worker(mode=...)``); ``metrics_port``:
    its figures for Prometheus at /metrics on that port of 127.0.0.1."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does: the user's modules are found here
    for queue in queues:
        try:
            check_queue_name(queue)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--queue") from None
    registry = collect_functions(functions, modules)
    try:
        settings = HostSettings.load(backend=backend, token=token, tokens=tokens)
        auth = load_auth(settings.token, settings.tokens)
    except (UndertowError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if not registry and auth is None:
        raise click.UsageError(
            "the worker has nothing to run: name functions with --function NAME=module:attr "
            "or --module MODULE, and/or give --tokens FILE (or --token) to run the pickled "
            "callables of those users"
        )
    _say_what_runs(registry, auth)
    runner = _Runner(settings.backend, queues, registry, auth, concurrency, lease, mode, data)
    runner.metrics_port = metrics_port
    code = asyncio.run(runner.run(burst))
    if code:  # stopped at once: the job threads still running would hold the exit up
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def load_auth(token: str | None, tokens: str | None) -> TokenAuth | None:
    """The authenticator of the tokens given (a file of them, and one more), or None."""
    return TokenAuth.from_sources(token=token, file=tokens)


def _say_what_runs(registry: dict[str, Callable[..., Any]], auth: TokenAuth | None) -> None:
    names = ", ".join(sorted(registry)) or "none"
    click.echo(f"undertow: jobs by name: {names}", err=True)
    if auth is None:
        click.echo(
            "undertow: no tokens, so only jobs by name run; pickled callables fail unread "
            "(give --tokens FILE or --token, or set UNDERTOW_TOKENS / UNDERTOW_TOKEN)",
            err=True,
        )
    else:
        users = ", ".join(auth.identities)
        click.echo(f"undertow: pickled callables run for: {users}", err=True)


class _Runner:
    """The worker on this process's loop, with the signal handlers that drain or stop it."""

    def __init__(
        self,
        backend: str | None,
        queues: Sequence[str],
        registry: dict[str, Callable[..., Any]],
        auth: TokenAuth | None,
        concurrency: int,
        lease: float,
        mode: str,
        data: str | None = None,
    ) -> None:
        self.args = (backend, list(queues), registry, auth, concurrency, lease, mode, data)
        self.signals = 0
        self.worker: Worker | None = None
        self.task: asyncio.Task[None] | None = None
        self.metrics_port: int | None = None

    async def run(self, burst: bool) -> int:
        backend, queues, registry, auth, concurrency, lease, mode, data = self.args
        try:
            store = open_backend(backend)
        except (UndertowError, ValueError, ImportError) as exc:
            raise click.ClickException(str(exc)) from None
        try:
            self.worker = _make_worker(
                store, queues, registry, auth, concurrency, lease, mode, data
            )
            return await self._serve(store, burst)
        finally:
            await store.close()

    async def _serve(self, store: Backend, burst: bool) -> int:
        assert self.worker is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.task = asyncio.create_task(self.worker.run(burst=burst))
        where = ", ".join(self.worker.queues)
        metrics = None
        if self.metrics_port is not None:
            metrics = serve_metrics(self.worker, port=self.metrics_port)
            where += f", metrics {metrics.url}"
        click.echo(f"undertow: worker {self.worker.name} on queues {where} ({store.url})")
        sys.stdout.flush()
        try:
            await self.task
        except asyncio.CancelledError:  # the second signal
            return 128 + self.signals
        finally:
            if metrics is not None:
                metrics.close()
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        assert self.worker is not None
        assert self.task is not None
        if self.signals:
            self.signals = sig.value
            click.echo(f"undertow: {sig.name} again, stopping now", err=True)
            self.task.cancel()
            return
        self.signals = sig.value
        held = len(self.worker.state.held)
        click.echo(
            f"undertow: {sig.name}, draining: finishing {held} job(s), claiming no more "
            "(signal again to stop now)"
        )
        sys.stdout.flush()
        self.worker.drain()


def _make_worker(
    store: Backend,
    queues: list[str],
    registry: dict[str, Callable[..., Any]],
    auth: TokenAuth | None,
    concurrency: int,
    lease: float,
    mode: str,
    data: str | None = None,
) -> Worker:
    try:
        return Worker(
            store,
            queues or ["default"],
            functions=registry,
            concurrency=concurrency,
            auth=auth,
            lease=lease,
            mode=mode,
            data=data,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


# -- functions by name ------------------------------------------------------------------------


def collect_functions(
    functions: Sequence[str], modules: Sequence[str]
) -> dict[str, Callable[..., Any]]:
    """The functions jobs may name: every public function of each module in ``modules``, then
    each ``NAME=module:attr`` of ``functions`` (which wins over a module's of the same name)."""
    found: dict[str, Callable[..., Any]] = {}
    origin: dict[str, str] = {}
    for module_name in modules:
        module = _import(module_name, "--module")
        public = _public_functions(module)
        if not public:
            raise click.BadParameter(
                f"module {module_name!r} ({module.__file__}) defines no public function "
                "(one whose name does not start with '_')",
                param_hint="--module",
            )
        for name, fn in public.items():
            if name in found and found[name] is not fn:
                raise click.BadParameter(
                    f"two functions are named {name!r}: in {origin[name]} and in "
                    f"{module_name}; name one of them with --function NEW_NAME=module:attr",
                    param_hint="--module",
                )
            found[name], origin[name] = fn, module_name
    for spec in functions:
        name, fn = _function(spec)
        found[name] = fn
    return found


def _public_functions(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """The functions ``module`` defines itself (not those it imports), by name."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and inspect.isfunction(obj)
        and obj.__module__ == module.__name__
    }


def _function(spec: str) -> tuple[str, Callable[..., Any]]:
    """``NAME=module:attr`` as the name and the callable."""
    name, eq, target = spec.partition("=")
    module_name, colon, attr = target.rpartition(":")
    if not (eq and colon and name.strip() and module_name and attr):
        raise click.BadParameter(
            f"{spec!r} is not NAME=module:attr; e.g. --function resize=imaging:resize",
            param_hint="--function",
        )
    module = _import(module_name, "--function")
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} ({module.__file__}) has no attribute {attr!r}; "
                "check the name after the ':'",
                param_hint="--function",
            ) from None
    if not callable(obj):
        raise click.BadParameter(
            f"{target!r} is a {type(obj).__name__}, not a function", param_hint="--function"
        )
    return name.strip(), obj


def _import(module_name: str, option: str) -> ModuleType:
    """The module, or a usage error naming it and the fix (never a traceback)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise click.BadParameter(
                f"no module named {module_name!r}: {_WHERE.format(cwd=os.getcwd())}",
                param_hint=option,
            ) from None
        raise click.BadParameter(
            f"importing {module_name!r} failed: {exc} ({_frame(exc)}); install it in this "
            "environment",
            param_hint=option,
        ) from None
    except Exception as exc:  # the module's own code failed: say where
        raise click.BadParameter(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc} ({_frame(exc)})",
            param_hint=option,
        ) from None


def _frame(exc: BaseException) -> str:
    """Where ``exc`` was raised, as ``file:line``."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "no traceback"
    last = frames[-1]
    return f"at {last.filename}:{last.lineno}"
