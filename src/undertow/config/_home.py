"""Where undertow keeps its state on this machine, its settings file, and the cluster backend.

Nothing here reads the environment at import: each function reads it when it is called.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from undertow.errors import ConfigError

__all__ = [
    "BACKEND_ENV",
    "CONFIG_FILE",
    "HOME_ENV",
    "backend_problem",
    "backend_url",
    "config_file",
    "embedded_backend",
    "home",
    "read_config_file",
    "redact_url",
]

HOME_ENV = "UNDERTOW_HOME"
BACKEND_ENV = "UNDERTOW_BACKEND"
#: the per-user settings file, in the undertow home
CONFIG_FILE = "config.toml"
_SCHEMES = ("sqlite", "redis", "rediss")
_SECRET_PARAMS = ("password", "pass", "passwd", "secret", "token")
_BACKEND_FIX = "use 'sqlite:///path/to/file.db' or 'redis://host:port/db'"


def _home_path() -> Path:
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser().resolve() if configured else Path.home() / ".undertow"


def home() -> Path:
    """The per-user undertow directory, made (mode 0700) if it does not exist yet."""
    path = _home_path()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot use {path} as the undertow home ({exc.strerror}); "
            f"set {HOME_ENV} to a directory you can write"
        ) from exc
    return path


def config_file() -> Path:
    """The user's settings file, ``config.toml`` in the undertow home (it may not exist; the
    home is not made)."""
    return _home_path() / CONFIG_FILE


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """The settings in ``path`` (default :func:`config_file`) as a dict; empty when the file
    does not exist."""
    file = config_file() if path is None else path
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
    try:
        return tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc


def embedded_backend() -> str:
    """The URL of the embedded SQLite registry, ``cluster.db`` in :func:`home`."""
    return f"sqlite://{home() / 'cluster.db'}"


def backend_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a backend URL (None if nothing), with the fix."""
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in _SCHEMES:
        return f"{redact_url(url)!r} is not a backend URL; {_BACKEND_FIX}"
    return None


def backend_url(explicit: str | None = None) -> str:
    """The cluster backend to use: ``explicit``, else ``$UNDERTOW_BACKEND``, else the embedded
    SQLite file in :func:`home`."""
    url = explicit or os.environ.get(BACKEND_ENV) or embedded_backend()
    problem = backend_problem(url)
    if problem is not None:
        origin = "backend" if explicit else BACKEND_ENV
        raise ConfigError(f"{origin} {problem}")
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
