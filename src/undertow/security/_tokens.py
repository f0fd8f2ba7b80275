"""Shared-secret tokens: who holds which secret, and where a client finds its own.

A token reads ``NAME.SECRET``: the name is the identity the server will see, the secret is 43
URL-safe characters from :mod:`secrets` (256 bits). Over ZeroMQ the token never travels: a
client signs each message with it (see ``_seal.py``) and sends only the name, so a server
looks the secret up by name and checks the signature. Over HTTP it is the bearer token of
each request: serve HTTP beyond loopback only behind TLS. ``undertow token new NAME`` makes one.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from undertow.config import config_file, read_config_file
from undertow.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "TOKENS_ENV",
    "TOKEN_ENV",
    "Authenticator",
    "SigningKey",
    "TokenAuth",
    "client_key",
    "config_path",
    "find_client_token",
    "new_token",
    "parse_token",
]

#: a client's token (and, for ``undertow serve``, the one token the server accepts)
TOKEN_ENV = "UNDERTOW_TOKEN"  # noqa: S105 - the name of a variable, not a secret
#: a file of tokens a server accepts, one per line
TOKENS_ENV = "UNDERTOW_TOKENS"
#: the per-user settings file, in the undertow home
CONFIG_FILE = "config.toml"
#: a token whose secret is shorter than this (128 bits of URL-safe base64) is refused
MIN_SECRET = 22
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: the name of a token given without one (``Server(token="...")``)
DEFAULT_NAME = "default"


class SigningKey:
    """An identity and the secret its messages are signed with. The repr hides the secret."""

    __slots__ = ("identity", "key_id", "mac", "secret")

    def __init__(self, identity: str, key_id: str, secret: bytes) -> None:
        self.identity = identity
        #: what a signed message names, so that the other side can find the secret
        self.key_id = key_id
        self.secret = secret
        #: HMAC-SHA256 keyed with the secret, copied for each message (which saves deriving
        #: the key's pads again every time)
        self.mac = hmac.new(secret, digestmod="sha256")

    def __repr__(self) -> str:
        return f"<SigningKey {self.identity!r}>"


@runtime_checkable
class Authenticator(Protocol):
    """Maps credentials to an identity; a server takes one (``Server(auth=...)``).

    :meth:`signing_key` is all a server needs: it finds the secret a signed message names and
    checks the signature with it. :meth:`authenticate` checks a credential presented whole
    (an HTTP bearer token). Write your own to keep users elsewhere (a database, a vault).
    """

    def signing_key(self, key_id: str) -> SigningKey | None:
        """The identity and secret behind ``key_id``; None if it is unknown."""
        ...

    def authenticate(self, credential: str) -> str | None:
        """The identity a whole credential (a token) belongs to; None if it is not valid."""
        ...


def parse_token(token: str) -> tuple[str, str]:
    """``(name, secret)`` of a token; a token without a ``NAME.`` part is named ``default``."""
    name, dot, secret = token.partition(".")
    if dot and _NAME.match(name) and secret:
        return name, secret
    return DEFAULT_NAME, token


def new_token(name: str) -> str:
    """A fresh token for ``name``: ``NAME.`` and 256 random bits from :mod:`secrets`."""
    if not _NAME.match(name):
        raise ConfigError(
            f"token name {name!r} must be 1-64 letters, digits, '_' or '-' (it names the user)"
        )
    return f"{name}.{secrets.token_urlsafe(32)}"


def client_key(token: str) -> SigningKey:
    """The key a client signs with, from its token."""
    if not isinstance(token, str) or not token.strip():  # type: ignore[redundant-expr]
        raise ConfigError("token must be a non-empty string such as 'alice.<secret>'")
    token = token.strip()
    name, _ = parse_token(token)
    return SigningKey(name, name, token.encode())


class TokenAuth:
    """The built-in authenticator: several users, each with a token of its own.

    ::

        auth = TokenAuth(["alice.Xk3...", "bob.9Qe..."])    # identities "alice" and "bob"
        auth = TokenAuth.from_file("~/.undertow/tokens")     # one token per line, # comments
        auth = TokenAuth.from_env()                          # $UNDERTOW_TOKENS names the file
        server = undertow.Server(auth=auth)

    Secrets shorter than 128 bits are refused; make tokens with ``undertow token new NAME``.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        if isinstance(tokens, str):
            tokens = [tokens]
        self._keys: dict[str, SigningKey] = {}
        self._tokens: list[str] = []
        for raw in tokens:
            token = raw.strip()
            self._tokens.append(token)
            name, secret = parse_token(token)
            if len(secret) < MIN_SECRET:
                raise ConfigError(
                    f"the token for {name!r} has a secret of {len(secret)} characters; use at "
                    f"least {MIN_SECRET} (128 bits), e.g. from `undertow token new {name}`"
                )
            if name in self._keys:
                raise ConfigError(f"two tokens are named {name!r}; each user needs one name")
            self._keys[name] = SigningKey(name, name, token.encode())
        if not self._keys:
            raise ConfigError("TokenAuth needs at least one token")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TokenAuth:
        """Tokens from a file, one per line (blank lines and ``#`` comments skipped).

        The file should be readable by its owner only; a warning says so otherwise.
        """
        file = Path(path).expanduser()
        try:
            text = file.read_text()
            mode = file.stat().st_mode
        except OSError as exc:
            raise ConfigError(f"cannot read the tokens file {file}: {exc.strerror}") from exc
        _warn_if_shared(file, mode)
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        tokens = [line for line in lines if line]
        if not tokens:
            raise ConfigError(f"the tokens file {file} holds no token")
        return cls(tokens)

    @classmethod
    def from_env(cls, name: str = TOKENS_ENV) -> TokenAuth:
        """Tokens from the file that the environment variable ``name`` names."""
        path = os.environ.get(name)
        if not path:
            raise ConfigError(f"${name} is not set; set it to a tokens file")
        return cls.from_file(path)

    @classmethod
    def from_sources(
        cls, *, token: str | None = None, file: str | os.PathLike[str] | None = None
    ) -> TokenAuth | None:
        """The tokens of ``file`` and the one ``token``, whichever are given; None if neither."""
        tokens = [] if file is None else cls.from_file(file)._tokens
        if token:
            tokens.append(token)
        return cls(tokens) if tokens else None

    @property
    def identities(self) -> list[str]:
        """The names of the users this authenticator knows."""
        return sorted(self._keys)

    def signing_key(self, key_id: str) -> SigningKey | None:
        return self._keys.get(key_id)

    def authenticate(self, credential: str) -> str | None:
        name, _ = parse_token(credential.strip())
        key = self._keys.get(name)
        # compared in constant time; an unknown name is compared against itself for the same cost
        expected = key.secret if key is not None else credential.encode()
        if secrets.compare_digest(credential.strip().encode(), expected) and key is not None:
            return key.identity
        return None

    def __repr__(self) -> str:
        return f"<TokenAuth {self.identities}>"


def _warn_if_shared(file: Path, mode: int) -> None:
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(
            f"{file} can be read by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {file}`",
            UserWarning,
            stacklevel=3,
        )


def config_path() -> Path:
    """The user's undertow settings file (it may not exist)."""
    return config_file()


def find_client_token(explicit: str | bool | None) -> str | None:
    """The token a client uses: ``explicit`` (False: none at all), else ``$UNDERTOW_TOKEN``,
    else ``token = "..."`` in the settings file (:func:`config_path`)."""
    if explicit is False:
        return None
    if isinstance(explicit, str):
        return explicit
    if explicit is not None and explicit is not True:
        raise ConfigError(f"token must be a string, False or None, not {type(explicit).__name__}")
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return from_env
    file = config_path()
    token = read_config_file(file).get("token")
    if token is None:
        return None
    if not isinstance(token, str):
        raise ConfigError(f"'token' in {file} must be a string, not {type(token).__name__}")
    _warn_if_shared(file, file.stat().st_mode)
    return token
