"""Starting and stopping a dashboard: :func:`serve` runs one in a thread of its own (uvicorn
on an event loop of that thread) and returns once it listens; :class:`Dashboard` is its
handle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import threading
from collections.abc import Iterable
from typing import Any

import uvicorn

from undertow.dashboard._app import build_app
from undertow.dashboard._guard import Guard, is_loopback, is_wildcard
from undertow.dashboard._poller import Poller
from undertow.errors import ConfigError
from undertow.storage import open_backend

__all__ = ["Dashboard", "serve"]

log = logging.getLogger(__name__)

#: seconds :func:`serve` waits for the server to listen
START_TIMEOUT = 30.0


class Dashboard:
    """A running dashboard: :attr:`url` (with the token, to open once), :attr:`address`
    (without it), :meth:`close`; a context manager."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: Any = None
        self.error: BaseException | None = None

    @property
    def address(self) -> str:
        """``http://host:port`` (IPv6 bracketed; this machine's name when it listens on
        every interface), without the token."""
        host = socket.gethostname() if is_wildcard(self.host) else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The address with ``/?token=...``: opened once, it sets the session cookie."""
        return f"{self.address}/?token={self.token}"

    def __repr__(self) -> str:  # never the token
        return f"Dashboard({self.address})"

    def close(self) -> None:
        """Stop serving (open event streams end) and wait for the thread."""
        server, loop = self._server, self._loop
        if server is not None and loop is not None and not loop.is_closed():
            try:  # the streams end first, then the server
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(10)
            except (RuntimeError, TimeoutError) as exc:  # the loop ended, or stuck: stop anyway
                log.warning("dashboard %s: closing its streams: %r", self.address, exc)
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    backend: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    expose: bool = False,
    allowed_hosts: Iterable[str] = (),
    interval: float = 1.0,
) -> Dashboard:
    """Serve the dashboard of the cluster whose backend is ``backend`` (default:
    ``$UNDERTOW_BACKEND``, else the embedded file) on ``host:port`` (0: a free port) in a
    thread of this process; the handle, once it listens. Open ``handle.url`` once in a
    browser: the token in it becomes a session cookie.

    ``token``: what the page must be given (default: a new random one). A ``host`` beyond
    loopback needs ``expose=True``: the page is plain HTTP, so the token and what the page
    shows cross the network unencrypted (prefer an SSH tunnel to 127.0.0.1). ``allowed_hosts``:
    more names the page may be reached by (the Host header is checked, against DNS
    rebinding). ``interval``: seconds between two reads of the cluster while a page is open.
    """
    if not expose and not is_loopback(host):
        raise ConfigError(
            f"host={host!r} is beyond loopback: the dashboard speaks plain HTTP, so its token "
            "would cross the network unencrypted. Give expose=True (--expose) to do it anyway, "
            "or keep 127.0.0.1 and reach it through `ssh -L 8787:127.0.0.1:8787 HOST`"
        )
    if not 0 <= port <= 65535:
        raise ValueError(f"port={port!r} is not a TCP port; give 0 (a free one) to 65535")
    token = token if token is not None else secrets.token_urlsafe(32)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    try:
        guard = Guard(token, host=host, port=bound, allowed_hosts=allowed_hosts)
    except BaseException:
        sock.close()
        raise
    handle = Dashboard(host, bound, token)
    ready = threading.Event()
    thread = threading.Thread(
        target=_run, args=(handle, sock, guard, backend, interval, ready), daemon=True,
        name=f"undertow-dashboard-{bound}",
    )  # fmt: skip
    handle._thread = thread
    thread.start()
    if not ready.wait(START_TIMEOUT) or handle.error is not None:
        handle.close()
        raise ConfigError(f"the dashboard did not start: {handle.error or 'no answer in time'}")
    return handle


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (0: a free port): bound before the server
    starts, so that its port is known, and what connects early waits in the backlog."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _run(
    handle: Dashboard,
    sock: socket.socket,
    guard: Guard,
    backend_url: str | None,
    interval: float,
    ready: threading.Event,
) -> None:
    """The server thread: a loop, the backend, the poll loop and uvicorn on ``sock``."""

    async def main() -> None:
        backend, pages = open_backend(backend_url), open_backend(backend_url)
        poller = Poller(backend, interval=interval)
        app, close_routes = build_app(guard, poller, pages, backend_url)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            ws="none",
        )  # fmt: skip  (no access log: a first visit's URL holds the token)
        server = uvicorn.Server(config)
        handle._server, handle._loop = server, asyncio.get_running_loop()
        handle._stop = poller.close
        polling = asyncio.create_task(poller.run())
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        ready.set()  # the socket listens already: what connects now is answered in turn
        try:
            await serving
        finally:
            await poller.close()
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            await asyncio.to_thread(close_routes)
            await backend.close()
            await pages.close()

    try:
        asyncio.run(main())
    except BaseException as exc:
        handle.error = exc
    finally:
        sock.close()
        ready.set()
