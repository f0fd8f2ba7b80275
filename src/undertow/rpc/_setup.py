"""How a server is set up from what it is given: its settings, its authenticator."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from undertow._util import is_local_address
from undertow.config import ServerSettings, backend_url, redact_url
from undertow.errors import ConfigError
from undertow.security import (
    Authenticator,
    ServerSeal,
    TokenAuth,
    parse_token,
    user_proof,
    user_token,
)
from undertow.transport import ServerTls, server_tls

if TYPE_CHECKING:
    from undertow.rpc._entry import Entry

__all__ = [
    "checked_auth",
    "describe",
    "plain_to_serve",
    "refuse_user_token_beyond_loopback",
    "runs_code",
    "server_settings",
    "tls_of",
]


def server_settings(
    name: str | None, settings: ServerSettings | None, options: dict[str, Any]
) -> ServerSettings:
    """The settings of a new server: ``settings`` as given, or loaded from the keyword
    ``options`` (each one not given from the environment, then the settings file)."""
    if settings is not None:
        if options or name is not None:
            named = sorted(options) + ([] if name is None else ["name"])
            raise ConfigError(
                f"give Server settings=... or options ({', '.join(named)}), not both; "
                "dataclasses.replace(settings, ...) changes some of them"
            )
        return settings
    # a path is as good as its text; None means "no limit" here, "not given" to the loader
    given = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}
    unlimited = "max_message_size" in given and given["max_message_size"] is None
    loaded = ServerSettings.load(name=name, **given)
    return dataclasses.replace(loaded, max_message_size=None) if unlimited else loaded


def checked_auth(auth: Authenticator | None, token: str | None) -> Authenticator | None:
    """The server's authenticator, from ``auth`` or ``token`` (not both)."""
    if auth is not None and token is not None:
        raise ConfigError("give the server auth=... or token=..., not both")
    if token is not None:
        auth = TokenAuth([token])
    if auth is not None and not isinstance(auth, Authenticator):
        raise ConfigError(
            f"auth must be an Authenticator (such as TokenAuth), not {type(auth).__name__}"
        )
    return auth


def runs_code(entries: Mapping[str, Entry]) -> bool:
    """True if a function of ``entries`` takes or returns a codec that runs code when
    decoded (pickle and its kind)."""
    return any(
        e.options.input_serialization.unsafe or e.options.output_serialization.unsafe
        for e in entries.values()
    )


def accept_user_token(server: Any) -> None:
    """Let ``server`` (a :class:`~undertow.Server` with no tokens) take the user's own token;
    other callers stay anonymous (they reach what needs no pickle, as before)."""
    if server._auth is not None:  # tokens given, or the user's own taken already
        return
    token = user_token()
    assert token is not None  # made if it was not there
    server._auth = TokenAuth([token])
    server._user_token = token
    server._core.seal = ServerSeal(server._auth, server.settings.replay_window)
    server._core.allow_anonymous = True


def refuse_user_token_beyond_loopback(address: str, entries: Mapping[str, Entry]) -> None:
    """The user's own token is for this machine: beyond it, pickle needs tokens given
    (``address``: where the server listens or is about to; empty: not yet)."""
    if not address or is_local_address(address):
        return
    pickled = sorted(name for name, entry in entries.items() if runs_code({name: entry}))
    what = ", ".join(map(repr, pickled)) or "messages in pickle"
    raise ConfigError(
        f"refusing to serve {what} (pickle, or another codec that "
        f"runs code when decoded) on {address} with only your own user token: give the "
        "server tokens "
        "(Server(auth=TokenAuth(...)) or token=..., --tokens/--token for undertow serve) so "
        "that callers on other machines can be told apart, or serve on 127.0.0.1"
    )


def tls_of(settings: ServerSettings) -> ServerTls | None:
    """The server's TLS configuration from its settings (None: no TLS); ConfigError naming
    the file and the fix when its certificate or key cannot be used."""
    if settings.tls_cert is None:
        if settings.tls_key is not None:
            raise ConfigError(
                f"tls_key is set ({settings.tls_key!r}) but tls_cert is not: give the "
                "certificate chain's PEM file as tls_cert too"
            )
        return None
    return server_tls(settings.tls_cert, settings.tls_key, settings.tls_handshake_timeout)


def plain_to_serve(plain: str | None, *, curve: bool, tls: bool) -> str | None:
    """The plain socket a server serves (``"none"``: none); none beside CURVE (its calls
    would travel in clear), unless its TCP socket speaks TLS."""
    if plain is not None and plain.strip().lower() == "none":
        return None
    if plain is None or not curve or (tls and not plain.startswith("unix://")):
        return plain
    if plain != "auto":
        raise ConfigError(
            "a server that encrypts with CURVE cannot also serve a plain socket, which "
            f"would carry its calls in clear ({plain!r}): leave plain= out, or give the "
            "server tls_cert (and tls_key) to serve it over TLS"
        )
    return None


def describe(
    server: Any, core: Any, token: str | None, queued: bool, challenge: str | None
) -> dict[str, Any]:
    """``server.description(challenge)``: ``token`` is the user's own it accepts (if any),
    ``queued`` whether some function is queued (then the job backend is named)."""
    described: dict[str, Any] = {
        "server": server.name,
        "functions": server.info(),
        "authenticates": server.authenticates,
        "max_message_size": core.max_message_size,
        "user": None if token is None else parse_token(token)[0],
        "jobs": redact_url(backend_url(server.job_backend)) if queued else None,
        "plain": core.plain_address,
        "local": core.local_address,
    }
    if token is not None and challenge:
        described["proof"] = user_proof(token, challenge)
    return described
