"""Where undertow keeps its state on this machine, and which cluster backend it uses.

Two environment variables, both optional:

``UNDERTOW_HOME``
    A directory of the user's own (default ``~/.undertow``), made on first use and readable
    by its owner only. The embedded registry lives here.
``UNDERTOW_BACKEND``
    The cluster backend's URL: ``sqlite:///absolute/path.db`` (the default, ``cluster.db``
    in the home) or ``redis://host:port/db`` for several machines. An explicit ``backend=``
    argument or ``--backend`` option wins over it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from undertow.errors import ConfigError

__all__ = ["BACKEND_ENV", "HOME_ENV", "backend_url", "home", "redact_url"]

HOME_ENV = "UNDERTOW_HOME"
BACKEND_ENV = "UNDERTOW_BACKEND"
_SCHEMES = ("sqlite", "redis", "rediss")
_SECRET_PARAMS = ("password", "pass", "passwd", "secret", "token")


def home() -> Path:
    """The per-user undertow directory, made (mode 0700) if it does not exist yet."""
    configured = os.environ.get(HOME_ENV)
    path = Path(configured).expanduser().resolve() if configured else Path.home() / ".undertow"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot use {path} as the undertow home ({exc.strerror}); "
            f"set {HOME_ENV} to a directory you can write"
        ) from exc
    return path


def backend_url(explicit: str | None = None) -> str:
    """The cluster backend to use: ``explicit``, else ``$UNDERTOW_BACKEND``, else the embedded
    SQLite file in :func:`home`."""
    url = explicit or os.environ.get(BACKEND_ENV) or f"sqlite://{home() / 'cluster.db'}"
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in _SCHEMES:
        origin = "backend" if explicit else BACKEND_ENV
        raise ConfigError(
            f"{origin} {redact_url(url)!r} is not a backend URL; use "
            "'sqlite:///path/to/file.db' or 'redis://host:port/db'"
        )
    return url


def redact_url(url: str) -> str:
    """``url`` with any password masked (in the user part or a ``password=`` query
    parameter), for messages and logs. Never raises."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            name = user.partition(":")[0]
            netloc = f"{name}:***@{host}" if ":" in user or not name else f"{name}@{host}"
        query = "&".join(
            f"{key}=***" if key.lower() in _SECRET_PARAMS else f"{key}={value}" if eq else key
            for key, eq, value in (item.partition("=") for item in parts.query.split("&") if item)
        )
        if netloc == parts.netloc and query == parts.query:
            return url  # nothing to hide (and sqlite:///path keeps its empty host)
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<a URL that cannot be parsed>"
