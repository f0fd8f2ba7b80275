"""Ready-made authorization rules for the ``auth`` option of ``server.config``.

A rule is any callable ``rule(identity, function_name, args, kwargs) -> bool``; ``identity``
is the caller's name, or None for an anonymous caller (a server with
``allow_anonymous=True``). True allows the call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["AuthRule", "allow", "authenticated"]

AuthRule = Callable[[str | None, str, Sequence[Any], Mapping[str, Any]], bool]


def allow(*identities: str) -> AuthRule:
    """A rule that allows only these identities: ``{"admin_*": {"auth": allow("alice")}}``."""
    if not identities or not all(isinstance(i, str) and i for i in identities):  # type: ignore[redundant-expr]
        raise ValueError(f"allow() takes one or more identity names, not {identities!r}")
    allowed = frozenset(identities)

    def rule(
        identity: str | None, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> bool:
        return identity in allowed

    rule.__qualname__ = rule.__name__ = f"allow({', '.join(sorted(allowed))})"
    return rule


def authenticated(
    identity: str | None, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> bool:
    """A rule that allows any authenticated caller and no anonymous one."""
    return identity is not None
