"""What a server says of itself and of each of its functions (the answer to ``_describe``)."""

from __future__ import annotations

import msgspec

__all__ = ["Description", "FunctionInfo"]


class FunctionInfo(msgspec.Struct, frozen=True):
    """What a server says about one of its functions."""

    name: str
    doc: str = ""
    #: [name, kind, default repr or None, annotation or None] per parameter
    params: list[tuple[str, int, str | None, str | None]] = []
    returns: str | None = None
    mode: str = "function"  # "function" | "async" | "generator" | "asyncgen"
    input: str = "msgpack"
    output: str = "msgpack"
    #: takes or returns pickle: only an authenticated caller may call it
    needs_auth: bool = False
    forwards_output: bool = True
    timeout: float | None = None
    #: calls of it are durable jobs on this queue (``client.f(...)`` returns a Job)
    queue: str | None = None

    @property
    def streams(self) -> bool:
        """True for generator functions: the call yields items."""
        return self.mode in ("generator", "asyncgen")


class Description(msgspec.Struct, frozen=True):
    """The reply to ``_describe``."""

    server: str
    functions: list[FunctionInfo]
    #: the server checks signatures (it has an authenticator)
    authenticates: bool = False
    #: the largest message the server accepts, in bytes (None: no limit)
    max_message_size: int | None = None
    #: the user whose own token the server accepts (it serves pickle with no tokens given)
    user: str | None = None
    #: the server's proof that it holds that token, when the client sent a challenge
    proof: str | None = None
    #: where the jobs of its queued functions go (a backend URL, no password), if it has any
    jobs: str | None = None
    #: a plain-socket address it also serves (``tcp+plain://``, ``unix://``), if any
    plain: str | None = None
    #: a Unix socket for clients on its host (large values in shared memory), if any
    local: str | None = None
