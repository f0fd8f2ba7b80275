"""The user's own token: authentication with nothing to set up, for one user on one machine.

A server that serves pickle (which runs code when decoded) must know who signs its calls. When
it is given no tokens and listens on loopback, it accepts the token of the user who runs it: a
file ``user.token`` in the undertow home (``~/.undertow``, mode 0700), made on first use with
mode 0600, so that only that user (and root) can read it, as Jupyter does with its runtime
tokens. A client of the same user, with no token of its own, finds the same file and signs with
it when the server says it needs a signature. Another user of the machine cannot read the file,
so their calls reach only what anonymous callers may use (never pickle).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

from undertow.config import home
from undertow.errors import ConfigError
from undertow.security._tokens import TokenAuth, config_path, new_token

__all__ = ["USER_TOKEN_FILE", "user_auth", "user_proof", "user_token", "user_token_path"]

#: the file, in the undertow home, that holds the user's own token
USER_TOKEN_FILE = "user.token"  # noqa: S105 - a file name, not a secret


def user_token_path() -> Path:
    """Where the user's own token is kept (the file may not exist yet)."""
    return config_path().parent / USER_TOKEN_FILE


def user_token(*, create: bool = True) -> str | None:
    """The token of the user running this process, made on first use if ``create``.

    Returns None when the file does not exist and ``create`` is False, or when this process
    cannot read it (another user's home). A file that others can read, or that another user
    owns, is refused with a :class:`ConfigError` saying how to fix it.
    """
    path = user_token_path()
    token = _read(path, strict=create)
    if token is None and create:
        token = _make(home() / USER_TOKEN_FILE)  # home() makes the directory, private
    return token


def user_proof(token: str, challenge: str) -> str:
    """Proof that whoever answers ``challenge`` holds ``token``, without showing it: a
    server gives it before a client sends the token itself (as an HTTP bearer), so that a
    program of another user posing as the server learns nothing."""
    message = b"undertow user token proof\0" + challenge.encode()
    return hmac.new(token.strip().encode(), message, hashlib.sha256).hexdigest()


def user_auth() -> TokenAuth:
    """An authenticator that knows the user's own token (made if needed)."""
    token = user_token(create=True)
    assert token is not None  # made above
    return TokenAuth([token])


def _read(path: Path, *, strict: bool) -> str | None:
    """The token in ``path``; None if there is none, or (unless ``strict``: a server that
    needs it) if this process may not read it (another user's home)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except (PermissionError, NotADirectoryError) as exc:
        if not strict:
            return None  # not ours to read: this process goes without
        raise ConfigError(
            f"cannot read the user token {path} ({exc.strerror}); it may belong to another "
            "user (made by a run under sudo?): delete it, or point UNDERTOW_HOME at a "
            "directory of your own"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the user token {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        _check_private(path, info)
        token = file.read().decode(errors="replace").strip()
    if not token:
        raise ConfigError(f"the user token {path} is empty; delete it and a new one is made")
    return token


def _check_private(path: Path, info: os.stat_result) -> None:
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ConfigError(
            f"the user token {path} belongs to uid {info.st_uid}, not to you (uid "
            f"{os.getuid()}); point UNDERTOW_HOME at a directory of your own"
        )
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the user token {path} can be read by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}); run `chmod 600 {path}` or delete it (a new "
            "one is made)"
        )


def _make(path: Path) -> str:
    """Write a fresh token to ``path`` unless another process got there first."""
    token = new_token(_identity())
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(token.encode() + b"\n")
        try:
            os.link(temporary, path)  # atomic: fails if the file appeared meanwhile
        except FileExistsError:
            found = _read(path, strict=True)
            if found is None:  # deleted again at once: no token to agree on
                raise ConfigError(f"the user token {path} vanished while it was made") from None
            return found
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return token


def _identity() -> str:
    """The name the user's token carries: the login name, as a token name allows."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = ""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", login)[:64].strip("-")
    return name or "user"
