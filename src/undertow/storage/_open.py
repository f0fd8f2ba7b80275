"""How a URL picks a storage backend: ``sqlite:///path`` or ``redis://host:port/db``.

The factory lives apart from the interface so that the backends can import the interface
without an import circle.
"""

from __future__ import annotations

from undertow.config import backend_url
from undertow.errors import ConfigError
from undertow.storage._backend import Backend
from undertow.storage._jobs import Submitter

__all__ = ["open_backend", "open_submitter"]


def open_backend(url: str | None = None) -> Backend:
    """The backend for ``url`` (default: ``$UNDERTOW_BACKEND``, else the embedded SQLite
    file in the undertow home)."""
    url = backend_url(url)
    scheme = url.partition("://")[0]
    if scheme == "sqlite":
        from undertow.storage._sqlite import SqliteBackend

        return SqliteBackend(url)
    if scheme in ("redis", "rediss"):
        from undertow.storage._redis import RedisBackend

        return RedisBackend(url)
    raise ConfigError(f"backend {url!r} has an unknown scheme")  # backend_url checked it


def open_submitter(url: str | None = None, *, timeout: float = 5.0) -> Submitter | None:
    """A blocking enqueue into the backend of ``url`` for sync callers, where one is worth
    having (Redis: one round trip, no hop into an event loop); None for the others."""
    url = backend_url(url)
    if url.partition("://")[0] in ("redis", "rediss"):
        from undertow.storage._redis_sync import RedisSubmitter

        return RedisSubmitter(url, timeout=timeout)
    return None
