"""The settings of each component, with their defaults (the only place they are written)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from undertow.config._home import backend_problem, redact_url
from undertow.config._loader import Settings, setting

__all__ = ["HostSettings", "ServerSettings"]

#: bytes of values a data server keeps in memory before it spills: 1 GiB
_MEMORY_LIMIT = 2**30
#: the largest message a server accepts: 1 GiB
_MAX_MESSAGE = 2**30


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "a port number from 0 to 65535 (0: a free one)"


def _seconds(value: float) -> str | None:
    return None if value > 0 else "a positive number of seconds"


def _bytes(value: int) -> str | None:
    return None if value >= 0 else "a number of bytes, 0 or more"


def _text(value: str) -> str | None:
    return "a non-empty string without spaces" if not value or value != value.split()[0] else None


def _filled(value: str) -> str | None:
    return None if value.strip() else "a non-empty string"


def _workers(value: int) -> str | None:
    return None if value >= 1 else "at least 1 (or unset: min(32, CPUs + 4))"


def _message_size(value: int) -> str | None:
    return None if value >= 65536 else "a number of bytes of at least 65536 (or unset: no limit)"


def _plain(value: str) -> str | None:
    if value in ("auto", "none") or value.startswith(("tcp+plain://", "unix:///")):
        return None
    return "auto, none, tcp+plain://host:port, unix:///absolute/path"


def _backend(value: str) -> str | None:
    if backend_problem(value) is None:
        return None
    return "a backend URL: 'sqlite:///path/to/file.db' or 'redis://host:port/db'"


def _key_file(value: str) -> str:
    """A CURVE key file's path as it is; the key itself (40 characters of Z85) hidden."""
    shown = value.endswith(".key_secret") or Path(value).expanduser().is_file()
    return value if shown else "***"


@dataclass(frozen=True)
class ServerSettings(Settings, section="server"):
    """What a function server (``undertow.Server``) is made with, besides objects such as its
    authenticator. Table ``[server]`` of the settings file."""

    name: str = setting(
        "undertow", doc="the server's name, shown to clients", check=_filled, env=False, file=False
    )
    max_workers: int | None = setting(
        None,
        doc="plain functions that may run at once (unset: min(32, CPUs + 4))",
        check=_workers,
    )
    allow_anonymous: bool = setting(
        False, doc="with tokens, still serve callers without one (never pickle)"
    )
    insecure: bool = setting(
        False, doc="serve beyond loopback without tokens, or plain HTTP beyond loopback"
    )
    max_message_size: int | None = setting(
        _MAX_MESSAGE,
        doc="the largest message accepted, in bytes (unset: no limit)",
        check=_message_size,
    )
    curve_secret: str | None = setting(
        None,
        doc="a CURVE secret key file (undertow keygen): encrypt every connection",
        show=_key_file,
    )
    replay_window: float = setting(
        60.0, doc="seconds a signed message's clock may differ from this one", check=_seconds
    )
    plain: str | None = setting(
        "auto",
        doc="a plain socket for sync clients' blocking calls: auto (TCP, the ZeroMQ "
        "address's interface, a free port; with CURVE, none unless tls_cert is set), "
        "tcp+plain://host:port, unix:///path, or none",
        check=_plain,
    )
    tls_cert: str | None = setting(
        None,
        doc="a PEM file of the server's certificate chain: its plain TCP socket speaks TLS "
        "(tls+plain://); unset: no TLS",
        check=_filled,
    )
    tls_key: str | None = setting(
        None, doc="the PEM file of tls_cert's private key (unset: in tls_cert)", check=_filled
    )
    tls_handshake_timeout: float = setting(
        10.0,
        doc="seconds a connection to the TLS socket has to finish its handshake",
        check=_seconds,
    )
    data_dir: str | None = setting(
        None,
        doc="where the data server spills values (unset: <undertow home>/data/<name>); "
        "per server, so not read from the environment or the file ([host] data_dir is)",
        check=_filled,
        env=False,
        file=False,
    )
    memory_limit: int = setting(
        _MEMORY_LIMIT, doc="bytes of values kept in memory before they spill", check=_bytes
    )
    data_calls: bool = setting(
        True, doc="let pointer holders call public methods of the values (ptr.call)"
    )


@dataclass(frozen=True)
class HostSettings(Settings, section="host"):
    """What a service host (``undertow serve``, ``ServiceHost``) is made with. Table
    ``[host]`` of the settings file."""

    host: str = setting("127.0.0.1", doc="the interface to bind", check=_text)
    port: int = setting(
        0, doc="the port of the first service (0: a free one; others take free ones)", check=_port
    )
    backend: str | None = setting(
        None,
        doc="the registry URL (unset: the embedded SQLite file in the undertow home)",
        check=_backend,
        show=redact_url,
    )
    name: str | None = setting(
        None, doc="the name to register the one service under", check=_filled, env=False, file=False
    )
    advertise: str | None = setting(
        None, doc="the host name clients should use, when serving on a wildcard", check=_text
    )
    token: str | None = setting(
        None, doc="a token callers must sign with (NAME.SECRET)", check=_filled, secret=True
    )
    tokens: str | None = setting(
        None, doc="a file of tokens callers may sign with, one per line", check=_filled
    )
    allow_anonymous: bool = setting(
        False, doc="with tokens, still serve callers without one (never pickle)"
    )
    insecure: bool = setting(
        False, doc="serve beyond loopback without tokens, or plain HTTP beyond loopback"
    )
    curve_secret: str | None = setting(
        None,
        doc="a CURVE secret key file (undertow keygen): encrypt every connection",
        show=_key_file,
    )
    ttl: float | None = setting(
        None,
        doc="seconds the registry keeps an instance without a heartbeat (unset: the "
        "service's own, else 10)",
        check=_seconds,
    )
    quiet: bool = setting(False, doc="do not print where each service listens")
    http_port: int | None = setting(
        None,
        doc="also serve over HTTP, the first service on this port (0: a free one)",
        check=_port,
    )
    metrics_port: int | None = setting(
        None,
        doc="serve each service's figures for Prometheus at /metrics, the first service's "
        "on this port (0: a free one); they are also at /metrics on the HTTP port",
        check=_port,
    )
    data_dir: str | None = setting(
        None,
        doc="where data servers spill values, a directory per service (unset: "
        "<undertow home>/data/<service>)",
        check=_filled,
    )
    memory_limit: int = setting(
        _MEMORY_LIMIT,
        doc="bytes of values each data server keeps in memory before they spill",
        check=_bytes,
    )

    def server_for(self, service: str) -> ServerSettings:
        """The settings of the function server that serves ``service``: the host's own where
        it has them, the rest loaded as any server's (``UNDERTOW_<FIELD>``, ``[server]``)."""
        data_dir = None if self.data_dir is None else Path(self.data_dir).expanduser() / service
        return ServerSettings.load(
            name=service,
            allow_anonymous=self.allow_anonymous,
            insecure=self.insecure,
            curve_secret=self.curve_secret,
            data_dir=None if data_dir is None else str(data_dir),
            memory_limit=self.memory_limit,
        )
