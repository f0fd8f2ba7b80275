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
from pathlib import Path
from typing import Any

from undertow._util import is_loopback
from undertow.config import backend_url, redact_url
from undertow.data import catalog_listener, data_service, location_of
from undertow.errors import BackendError, ConfigError
from undertow.rpc import Server, check_exposure
from undertow.security import TokenAuth
from undertow.service._expose import check_ttl, exposed_methods, service_spec
from undertow.storage import Backend, Instance, open_backend

__all__ = ["DEFAULT_TTL", "ServiceHost", "build_server"]

log = logging.getLogger(__name__)

#: seconds the registry keeps an instance without a heartbeat, unless the service says
DEFAULT_TTL = 10.0
#: heartbeats per TTL: one lost or late heartbeat does not make an instance disappear
_BEATS_PER_TTL = 3


def _ttl_of(obj: Any, ttl: float | None) -> float:
    if ttl is not None:
        return float(ttl)
    spec = service_spec(type(obj))
    return spec.ttl if spec is not None and spec.ttl is not None else DEFAULT_TTL


def build_server(obj: Any, *, name: str | None = None, **server_options: Any) -> Server:
    """A function server for the exposed methods of ``obj`` (an instance of a service);
    ``server_options`` are those of :class:`~undertow.Server` (auth, curve_secret...)."""
    cls = type(obj)
    spec = service_spec(cls)
    if spec is None:
        raise ConfigError(f"{cls.__name__} is not a service: decorate the class with @Expose()")
    methods = exposed_methods(cls)
    if not methods:
        raise ConfigError(
            f"service {spec.name!r} exposes no methods: mark the ones clients may call with "
            "@Expose()"
        )
    server = Server(name=name or spec.name, **server_options)
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

    Args:
        objects: service instances (of classes marked with ``@Expose()``).
        host: interface to bind (127.0.0.1 unless told otherwise).
        port: port of the first service (0: a free one; the next services take free ones).
        backend: cluster backend URL (default: ``$UNDERTOW_BACKEND``, else the embedded file).
        name: registered name of the service (only when serving one).
        advertise: host name clients should use, when ``host`` is a wildcard address.
        token: a token the services accept (``NAME.SECRET``); with ``tokens``, one more.
        tokens: a file of tokens the services accept, one per line. With either, every
            caller must sign its messages (see ``undertow.Server``'s ``auth``).
        allow_anonymous: with tokens, still serve callers without one (never pickle).
        insecure: serve on an interface other than loopback without tokens.
        curve_secret: a CURVE secret key file (``undertow keygen``): connections are
            encrypted, and the public key is registered for clients to use.
        ttl: registry TTL in seconds, for services that do not set their own.
        quiet: do not print where each service listens.
        http_port: also serve over HTTP, the first service on this port (0: a free one),
            the others on free ports; the HTTP address is registered after the ZeroMQ one.
        data_dir: where each service's data server spills values, in a directory per
            service (default: ``~/.undertow/data/<service>``).
        memory_limit: bytes each data server keeps in memory before it spills.

    What the servers keep is recorded in the registry's data catalog. An object with a
    ``bind_server(server)`` method is told the server that serves it.
    """

    def __init__(
        self,
        objects: Sequence[Any],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backend: str | None = None,
        name: str | None = None,
        advertise: str | None = None,
        token: str | None = None,
        tokens: str | None = None,
        allow_anonymous: bool = False,
        insecure: bool = False,
        curve_secret: Any = None,
        ttl: float | None = None,
        quiet: bool = False,
        http_port: int | None = None,
        data_dir: str | None = None,
        memory_limit: int | None = None,
    ) -> None:
        if not objects:
            raise ConfigError("nothing to serve: no exposed classes were found")
        if name is not None and len(objects) > 1:
            raise ConfigError(f"name={name!r} can rename one service, not {len(objects)}")
        if port and len(objects) > 1:
            raise ConfigError(f"port {port} can serve one service, not {len(objects)}; use 0")
        self.backend_url = backend_url(backend)
        auth = TokenAuth.from_sources(token=token, file=tokens)
        if not insecure:  # refused now rather than once the registry is open
            check_exposure(f"tcp://{host}:{port}", authenticated=auth is not None, insecure=False)
        security = {
            "auth": auth,
            "allow_anonymous": allow_anonymous,
            "insecure": insecure,
            "curve_secret": curve_secret,
        }
        self._servers = []
        for obj in objects:
            data: dict[str, Any] = {} if memory_limit is None else {"memory_limit": memory_limit}
            if data_dir is not None:
                service = name or service_spec(type(obj)).name  # type: ignore[union-attr]
                data["data_dir"] = Path(data_dir).expanduser() / service
            server = build_server(obj, name=name, **security, **data)
            server.advertise = advertise
            if callable(getattr(obj, "bind_server", None)):
                obj.bind_server(server)
            self._servers.append(server)
        self._ttls = [_ttl_of(obj, check_ttl(ttl)) for obj in objects]
        self.host, self.port, self.advertise, self.quiet = host, port, advertise, quiet
        self.http_port = http_port
        self.instances: list[Instance] = []
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = threading.Event()  # stop() may come before serve() starts
        if self.backend_url.startswith("redis") and is_loopback(host) and not advertise:
            log.warning(
                "serving on %s and registering in %s: clients on other machines cannot reach "
                "a loopback address; serve on another interface (--host) or --advertise a "
                "host name",
                host,
                redact_url(self.backend_url),
            )

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
                for server, address, ttl in zip(self._servers, addresses, self._ttls, strict=True)
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
            for server in self._servers:
                server.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await backend.close()

    async def _listen(self, tasks: list[asyncio.Task[None]]) -> list[str]:
        addresses: list[str] = []
        for i, server in enumerate(self._servers):
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
        for instance in self.instances:
            http = "".join(f", HTTP {a}" for a in instance.addresses[1:])
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

        for server in self._servers:
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
        for server in self._servers:
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
