"""Serving service instances: one function server each, registered and kept alive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from undertow._util import is_loopback
from undertow.config import HostSettings, embedded_backend, redact_url
from undertow.data import catalog_listener, data_service, location_of
from undertow.errors import BackendError, ConfigError
from undertow.rpc import MetricsServer, Server, check_exposure, serve_metrics
from undertow.security import Authenticator, TokenAuth
from undertow.service._expose import ServiceSpec, exposed_methods, service_spec
from undertow.storage import Backend, Instance, open_backend

__all__ = ["DEFAULT_TTL", "ServiceHost", "build_server"]

log = logging.getLogger(__name__)

#: seconds the registry keeps an instance without a heartbeat, unless the service says
DEFAULT_TTL = 10.0
#: heartbeats per TTL: one lost or late heartbeat does not make an instance disappear
_BEATS_PER_TTL = 3


def _check_count(objects: Sequence[Any], settings: HostSettings) -> None:
    """Refuse settings that cannot apply to this many services."""
    if not objects:
        raise ConfigError("nothing to serve: no exposed classes were found")
    if settings.name is not None and len(objects) > 1:
        raise ConfigError(f"name={settings.name!r} can rename one service, not {len(objects)}")
    if settings.port and len(objects) > 1:
        raise ConfigError(f"port {settings.port} can serve one service, not {len(objects)}; use 0")


def _ttl_of(obj: Any, ttl: float | None) -> float:
    if ttl is not None:
        return float(ttl)
    spec = service_spec(type(obj))
    return spec.ttl if spec is not None and spec.ttl is not None else DEFAULT_TTL


def _spec_of(obj: Any) -> ServiceSpec:
    spec = service_spec(type(obj))
    if spec is None:
        raise ConfigError(
            f"{type(obj).__name__} is not a service: decorate the class with @Expose()"
        )
    return spec


def build_server(obj: Any, *, name: str | None = None, **server_options: Any) -> Server:
    """A function server for the exposed methods of ``obj`` (an instance of a service);
    ``server_options`` are those of :class:`~undertow.Server` (auth, curve_secret...,
    or ``settings``, which name the server themselves)."""
    cls = type(obj)
    spec = _spec_of(obj)
    methods = exposed_methods(cls)
    if not methods:
        raise ConfigError(
            f"service {spec.name!r} exposes no methods: mark the ones clients may call with "
            "@Expose()"
        )
    if server_options.get("settings") is None:
        server_options["name"] = name or spec.name
    server = Server(**server_options)
    table: dict[str, dict[str, Any]] = {}
    for remote, (attr, method) in methods.items():
        server.register(remote, getattr(obj, attr))
        if method.options:
            table[remote] = method.options  # a method's own options come before any glob
    for pattern, options in spec.config.items():
        table.setdefault(pattern, options)
    server.config(table)
    return server


class ServiceHost:
    """Serves instances of service classes on one event loop, each on its own port, and keeps
    their records in the cluster registry until it stops.

    ::

        ServiceHost([MemKeyValue()], port=5555).serve_forever()
        ServiceHost([MemKeyValue()], settings=HostSettings(port=5555)).serve_forever()

    Args:
        objects: service instances (of classes marked with ``@Expose()``).
        settings: what to serve them with (see :class:`~undertow.config.HostSettings`: the
            interface and ports, the registry, tokens, CURVE, TTL, HTTP, data servers). Taken
            as it is: neither the environment nor the settings file is read.
        options: instead of ``settings``, its fields by keyword (``host="0.0.0.0"``,
            ``token=...``); those not given, or None, come from the ``UNDERTOW_<FIELD>``
            environment variables, then the ``[host]`` table of ``config.toml`` in the
            undertow home, then the defaults.

    What the servers keep is recorded in the registry's data catalog. An object with a
    ``bind_server(server)`` method is told the server that serves it.
    """

    def __init__(
        self, objects: Sequence[Any], *, settings: HostSettings | None = None, **options: Any
    ) -> None:
        if settings is None:
            settings = HostSettings.load(**options)
        elif options:
            raise ConfigError(
                f"give ServiceHost settings=... or options ({', '.join(options)}), not both; "
                "use dataclasses.replace(settings, ...) to change some"
            )
        _check_count(objects, settings)
        self.settings = settings
        self.backend_url = settings.backend or embedded_backend()
        auth = TokenAuth.from_sources(token=settings.token, file=settings.tokens)
        if not settings.insecure:  # refused now rather than once the registry is open
            where = f"tcp://{settings.host}:{settings.port}"
            check_exposure(where, authenticated=auth is not None, insecure=False)
        #: one server for each object, in order (``server.stats()``: its figures)
        self.servers = [self._server_of(obj, auth) for obj in objects]
        self._ttls = [_ttl_of(obj, settings.ttl) for obj in objects]
        self.host, self.port, self.advertise = settings.host, settings.port, settings.advertise
        self.quiet, self.http_port = settings.quiet, settings.http_port
        self.metrics_port = settings.metrics_port
        #: each service's /metrics on a port of its own (with metrics_port)
        self.metrics: list[MetricsServer] = []
        self.instances: list[Instance] = []
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = threading.Event()  # stop() may come before serve() starts
        if self.backend_url.startswith("redis") and is_loopback(self.host) and not self.advertise:
            log.warning(
                "serving on %s and registering in %s: clients on other machines cannot reach "
                "a loopback address; serve on another interface (--host) or --advertise a "
                "host name",
                self.host,
                redact_url(self.backend_url),
            )

    def _server_of(self, obj: Any, auth: Authenticator | None) -> Server:
        """The function server of ``obj``, with the settings of its service."""
        service = self.settings.name or _spec_of(obj).name
        server = build_server(obj, auth=auth, settings=self.settings.server_for(service))
        server.advertise = self.settings.advertise
        server.registry_url = self.backend_url  # where its pipelines find the next stage
        if callable(getattr(obj, "bind_server", None)):
            obj.bind_server(server)
        return server

    # -- running ------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until SIGINT or SIGTERM, then deregister and stop cleanly."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.stop)
            await self.serve()

        asyncio.run(main())

    def stop(self) -> None:
        """Stop serving (from any thread); the instances are deregistered first."""
        self._stop_requested.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)

    async def serve(self, ready: Callable[[list[Instance]], None] | None = None) -> None:
        """Serve on the running loop until :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested.is_set():
            return
        backend = open_backend(self.backend_url)
        tasks: list[asyncio.Task[None]] = []
        catalog: asyncio.Task[None] | None = None
        try:
            addresses = await self._listen(tasks)
            self.instances = [
                self._record(server, address, ttl)
                for server, address, ttl in zip(self.servers, addresses, self._ttls, strict=True)
            ]
            for instance in self.instances:
                await backend.register(instance)
            catalog = asyncio.create_task(self._catalog(backend))
            self._announce(backend)
            if ready is not None:
                ready(self.instances)
            beats = asyncio.create_task(self._heartbeats(backend))
            await self._stop.wait()
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)
        finally:
            if catalog is not None:
                catalog.cancel()
            await self._forget_memory(backend)
            await self._deregister(backend)
            for server in self.servers:
                server.stop()
            for metrics in self.metrics:
                metrics.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            await backend.close()

    async def _listen(self, tasks: list[asyncio.Task[None]]) -> list[str]:
        addresses: list[str] = []
        for i, server in enumerate(self.servers):
            bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            port = self.port if i == 0 else 0
            http = None if self.http_port is None else self.http_port if i == 0 else 0
            task = asyncio.create_task(
                server.serve(f"tcp://{self.host}:{port}", ready=bound.set_result, http_port=http)
            )
            tasks.append(task)
            waiting: list[asyncio.Future[Any]] = [bound, task]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not bound.done():  # the server ended before it listened: raise its error
                bound.cancel()
                await task
            addresses.append(bound.result())
            if self.metrics_port is not None:
                where = self.metrics_port if i == 0 else 0
                self.metrics.append(serve_metrics(server, port=where, host=self.host))
        return addresses

    def _record(self, server: Server, address: str, ttl: float) -> Instance:
        now = time.time()
        return Instance(
            service=server.name,
            id=uuid.uuid4().hex,
            addresses=[self._public(a) for a in (address, server.http_address) if a],
            methods=server.info(),
            host=socket.gethostname(),
            pid=os.getpid(),
            started=now,
            heartbeat=now,
            ttl=ttl,
            authenticates=server.authenticates,
            curve_key=server.curve_public_key or "",
        )

    def _public(self, address: str) -> str:
        """The bound address as clients elsewhere can use it."""
        scheme, _, rest = address.partition("://")
        host, _, port = rest.rpartition(":")
        if host in ("0.0.0.0", "*", "[::]", "::"):  # noqa: S104 - recognising, not binding
            host = self.advertise or socket.getfqdn()
        elif self.advertise:
            host = self.advertise
        return f"{scheme}://{host}:{port}"

    def _announce(self, backend: Backend) -> None:
        if self.quiet:
            return
        metrics = [f", metrics {m.url}" for m in self.metrics] or [""] * len(self.instances)
        for instance, scraped in zip(self.instances, metrics, strict=True):
            http = "".join(f", HTTP {a}" for a in instance.addresses[1:]) + scraped
            print(  # noqa: T201 - the launcher's report; the last word is the address
                f"undertow: service {instance.service!r} ({len(instance.methods)} methods, "
                f"registry {backend.url}{http}) serving on {instance.address}",
                flush=True,
            )

    async def _heartbeats(self, backend: Backend) -> None:
        interval = min(self._ttls) / _BEATS_PER_TTL
        while True:
            await asyncio.sleep(interval)
            # all at once, each within one interval: a slow registry delays no other beat
            await asyncio.gather(
                *(self._beat(backend, i, interval) for i in range(len(self.instances)))
            )

    async def _beat(self, backend: Backend, i: int, limit: float) -> None:
        instance = self.instances[i]
        fresh = instance.beat()
        try:
            async with asyncio.timeout(limit):
                if not await backend.heartbeat(fresh):
                    # expired (a long pause, the registry was wiped): register again
                    log.warning(
                        "service %r was missing from %s; registering it again",
                        instance.service,
                        backend.url,
                    )
                    await backend.register(fresh)
        except TimeoutError:
            log.warning("heartbeat of service %r took over %.1f s", instance.service, limit)
            return
        except BackendError as exc:  # keep serving; the registry may come back
            log.warning("heartbeat of service %r failed: %s", instance.service, exc)
            return
        except Exception:  # never let the heartbeats die quietly
            log.exception("heartbeat of service %r failed", instance.service)
            return
        self.instances[i] = fresh

    async def _catalog(self, backend: Backend) -> None:
        """Record in the catalog what each server keeps and deletes, one change at a time
        (in order: a value deleted right after it was kept must not stay listed)."""
        loop = asyncio.get_running_loop()
        changes: asyncio.Queue[Callable[[], Any]] = asyncio.Queue()

        def later(op: Callable[[], Any]) -> None:  # from whichever thread kept or deleted
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(changes.put_nowait, op)

        for server in self.servers:
            data = data_service(server)
            data.listeners.append(
                catalog_listener(
                    lambda record: later(lambda: backend.record_data(record)),
                    lambda key, where: later(lambda: backend.forget_data(key, where)),
                    data.forms,
                )
            )
        while True:
            op = await changes.get()
            try:
                await op()
            except Exception as exc:  # the catalog may come back; serving goes on
                log.warning("could not update the data catalog in %s: %s", backend.url, exc)

    async def _forget_memory(self, backend: Backend) -> None:
        """Take out of the catalog what is lost with this process (values only in memory)."""
        for server in self.servers:
            data = data_service(server)
            store = data.kept
            for entry in store.entries() if store is not None else ():
                if entry.where != "memory":
                    continue  # spilled: it survives a restart
                for form in data.forms(entry):
                    try:
                        await backend.forget_data(entry.key, location_of(form))
                    except BackendError as exc:
                        log.warning("could not update the data catalog: %s", exc)
                        return

    async def _deregister(self, backend: Backend) -> None:
        for instance in self.instances:
            try:
                await backend.deregister(instance.service, instance.id)
            except BackendError as exc:
                log.warning("could not deregister service %r: %s", instance.service, exc)
