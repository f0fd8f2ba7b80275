"""The tokens of the sessions :class:`undertow.Cluster` started on this machine, kept so that
a job's pickled result can be read after a kernel restart.

A session's token signs its jobs and, signed back, their pickled results; a new kernel has a
new session, hence another token. So each session's token is kept in the undertow home
(``~/.undertow/sessions/NAME.token``, the directory 0700, the file 0600: as private as the
user's own token), found again by the name a signed result carries, and removed when the
session closes. A file left by a session that was killed goes after a week.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from undertow.config import home
from undertow.security import SigningKey, client_key

__all__ = ["forget_session", "keep_session", "session_key"]

#: the names sessions give their tokens (checked before a name becomes part of a path)
_NAME = re.compile(r"session-[A-Za-z0-9_]{4,40}")
#: seconds a session's token is kept after its last use when nothing removed it
_KEEP = 7 * 86400.0


def _directory() -> Path:
    path = home() / "sessions"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def keep_session(name: str, token: str) -> None:
    """Keep the token of session ``name`` (and forget those of sessions long gone)."""
    directory = _directory()
    now = time.time()
    for old in directory.glob("session-*.token"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > _KEEP:
                old.unlink()
    path = directory / f"{name}.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")


def forget_session(name: str) -> None:
    """Remove the token of session ``name``."""
    if _NAME.fullmatch(name):
        with contextlib.suppress(OSError):
            (_directory() / f"{name}.token").unlink()


def session_key(name: str) -> SigningKey | None:
    """The key of session ``name`` if its token is kept here (None for another name)."""
    if not _NAME.fullmatch(name):
        return None
    try:
        token = (_directory() / f"{name}.token").read_text().strip()
    except OSError:
        return None
    key = client_key(token)
    return key if key.key_id == name else None
