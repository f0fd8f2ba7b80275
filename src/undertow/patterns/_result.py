"""One answer of a stream: the input's id and its value, or the error it ended with."""

from __future__ import annotations

from typing import Any

from undertow.wire import decode_error, rebuild

__all__ = ["Result", "rebuild_error"]


class Result:
    """One answer of a stream.

    ``id`` is the input's position in what was streamed (0, 1, ...); ``value`` is the answer,
    or raises the error the input ended with (a stage or worker raised, the message could not
    be sent...), for that input only; ``error`` is that error or None.
    """

    __slots__ = ("_value", "error", "id")

    def __init__(self, id: Any, value: Any = None, *, error: BaseException | None = None) -> None:
        self.id = id
        self._value = value
        self.error = error

    @property
    def ok(self) -> bool:
        """True when the input was answered without an error."""
        return self.error is None

    @property
    def value(self) -> Any:
        """The answer; raises the input's error if it has one."""
        if self.error is not None:
            raise self.error
        return self._value

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Result(id={self.id!r}, error={self.error!r})"
        return f"Result(id={self.id!r}, value={self._value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return (self.id, self._value, self.error) == (other.id, other._value, other.error)

    __hash__ = None  # type: ignore[assignment]


def rebuild_error(body: Any, where: Any) -> BaseException:
    """The exception an error entry's body describes (as for a failed call)."""
    try:
        info = decode_error(bytes(body))
    except Exception as exc:
        from undertow.errors import StreamError

        return StreamError(f"an error came back that cannot be read: {exc}")
    return rebuild(info, where=f"stream through {where}")
