"""CURVE encryption of ZeroMQ connections: key pairs, and loading them.

A server holds a secret key; a client needs only the server's public key (and makes a key
pair of its own for each connection). Keys are Z85 text, 40 characters. ``undertow keygen``
writes a pair as ZeroMQ certificate files: ``NAME.key`` (public, to hand out) and
``NAME.key_secret`` (readable by its owner only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from undertow.errors import ConfigError

__all__ = ["curve_available", "keygen", "load_public", "load_secret"]


def curve_available() -> bool:
    """True when this libzmq was built with CURVE."""
    return bool(zmq.has("curve"))


def _require() -> None:
    if not curve_available():
        raise ConfigError(
            "this libzmq was built without CURVE encryption; install pyzmq from PyPI "
            "(its wheels include it)"
        )


def keygen(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write a new key pair for ``name`` into ``directory``; returns (public, secret) paths."""
    _require()
    folder = Path(directory).expanduser()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    public, secret = (Path(p) for p in zmq.auth.create_certificates(folder, name))
    secret.chmod(0o600)
    return public, secret


def _key(value: Any, what: str, *, secret: bool) -> str:
    """A Z85 key from a key itself (str or bytes) or a certificate file."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"{what} must be a Z85 key or a key file, not {type(value).__name__}")
    text = os.fspath(value)
    if len(text) == 40 and not os.path.exists(text):
        return text
    path = Path(text).expanduser()
    try:
        public, private = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{what}: {text!r} is neither a 40-character Z85 key nor a readable key file "
            f"({exc}); make a pair with `undertow keygen NAME`"
        ) from exc
    key = private if secret else public
    if key is None:
        raise ConfigError(
            f"{what}: {path} holds no secret key; give the NAME.key_secret file of the pair"
        )
    return key.decode("ascii")


def load_secret(value: Any) -> tuple[str, str]:
    """``(public, secret)`` Z85 keys of a server, from its ``.key_secret`` file."""
    _require()
    secret = _key(value, "curve_secret", secret=True)
    return zmq.curve_public(secret.encode()).decode("ascii"), secret


def load_public(value: Any) -> str:
    """A public Z85 key, given as itself or as a ``.key``/``.key_secret`` file."""
    _require()
    return _key(value, "curve_server_key", secret=False)
