"""How a data server reports its errors to the caller: the codes the client rebuilds its
typed errors from (``wire.rebuild``)."""

from __future__ import annotations

from undertow.errors import (
    DataNotFound,
    DataUnavailable,
    PermissionDenied,
    SerializationError,
    UndertowError,
)
from undertow.wire import ErrorInfo, error_info

__all__ = ["failure"]


def failure(exc: UndertowError) -> ErrorInfo:
    """How a data error is reported to the caller."""
    if isinstance(exc, DataNotFound):
        return ErrorInfo(_qualname(exc), str(exc), args=[exc.key], code="data_not_found")
    if isinstance(exc, DataUnavailable):
        args = [exc.key, exc.address]
        return ErrorInfo(_qualname(exc), str(exc), args=args, code="data_unavailable")
    if isinstance(exc, PermissionDenied):
        return error_info(exc, code="denied")
    return error_info(
        exc, code="serialization" if isinstance(exc, SerializationError) else "remote"
    )


def _qualname(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"
