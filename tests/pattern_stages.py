"""Three services whose functions the pipeline tests chain (``python -m undertow.service``)."""

from __future__ import annotations

import random
import time
from typing import Any

import undertow
from undertow.service import Expose


def _work() -> None:
    """A stage's work: a random 0-3 ms, so that later messages overtake earlier ones (what
    the pipeline test checks); not a wait for anything."""
    time.sleep(random.random() * 0.003)


@Expose()
class step1:
    @Expose()
    def foo(self, message: str) -> str:
        _work()
        return message + " step1"

    @Expose()
    def evens(self, n: int) -> Any:
        return n if n % 2 == 0 else undertow.DROP

    @Expose()
    def kind(self, n: int) -> undertow.To:
        return undertow.To("small" if n < 5 else "big", n)

    @Expose()
    def pieces(self, n: int) -> Any:
        yield from range(n)


@Expose()
class step2:
    @Expose()
    def bar(self, message: str) -> str:
        _work()
        return message + " step2"

    @Expose()
    def fail3(self, n: int) -> int:
        if n % 3 == 0:
            raise ValueError(f"{n} is a multiple of three")
        return n

    @Expose()
    def double(self, n: int) -> int:
        return 2 * n


@Expose()
class last:
    @Expose()
    def baz(self, message: str) -> str:
        _work()
        return message + " last"

    @Expose()
    def neg(self, n: int) -> int:
        return -n

    @Expose()
    def unsendable(self, n: int) -> Any:
        return 1j if n == 1 else n
