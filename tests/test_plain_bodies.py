"""Large bodies over a plain socket are read into memory that is used again only once nothing
holds it: values a function keeps, or a caller keeps, are never written over by the next
message, on either side, and the memory kept for bodies to come stays within its budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import undertow
from undertow.transport import _plain_wire

pytestmark = [pytest.mark.usefixtures("undertow_home"), pytest.mark.timeout(60)]

WAIT = 20.0
SIZE = 4 << 20  # over the 256 KiB from which a body is read into memory of its own


@pytest.fixture(params=["tcp", "unix"])
def served(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setenv("UNDERTOW_SHM", "0")  # through the socket, not shared memory
    kept: list[Any] = []
    server = undertow.Server(name="bodies")

    def keep(a: Any) -> float:
        kept.append(a)  # held past the call: its memory must not be read into again
        return float(a[0])

    def firsts() -> list[float]:
        return [float(a[0]) for a in kept] + [float(a[-1]) for a in kept]

    def make(n: int, value: float) -> Any:
        return np.full(n // 8, value)

    server.register("keep", keep)
    server.register("firsts", firsts)
    server.register("make", make)
    server.config(
        {"keep": {"input_serialization": "numpy"}, "make": {"output_serialization": "numpy"}}
    )
    plain = "tcp+plain://127.0.0.1:0" if request.param == "tcp" else f"unix://{tmp_path}/b.sock"
    address = server.start("tcp://127.0.0.1:0", plain=plain)
    try:
        yield address
    finally:
        server.stop()


def test_a_value_the_server_keeps_is_not_written_over(served):
    with undertow.connect(served, timeout=WAIT) as client:
        for value in (1.0, 2.0, 3.0):
            assert client.keep(np.full(SIZE // 8, value)) == value
        assert client.firsts() == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]


def test_a_value_the_caller_keeps_is_not_written_over(served, monkeypatch):
    # a budget of its own: readers of earlier tests' connections may still hold the process's
    monkeypatch.setattr(_plain_wire, "spares", _plain_wire._Spares(limit=4 * SIZE))
    with undertow.connect(served, timeout=WAIT) as client:
        first = client.make(SIZE, 1.0)
        second = client.make(SIZE, 2.0)
        assert (float(first[0]), float(first[-1])) == (1.0, 1.0)
        assert (float(second[0]), float(second[-1])) == (2.0, 2.0)
        address = int(second.__array_interface__["data"][0])
        del second
        third = client.make(SIZE, 3.0)  # the memory let go of is used again
        # (the value starts where the answer's header ends, a few bytes that vary: the
        # server's timings in the header are whole nanoseconds, of varying length)
        assert abs(int(third.__array_interface__["data"][0]) - address) < 64
        assert float(third[-1]) == 3.0
        assert float(first[-1]) == 1.0


def test_the_memory_kept_for_bodies_stays_within_its_budget(monkeypatch):
    spares = _plain_wire._Spares(limit=3 * SIZE)
    monkeypatch.setattr(_plain_wire, "spares", spares)
    readers = [_plain_wire._Reader(None) for _ in range(4)]
    bodies = [reader._body_buffer(SIZE) for reader in readers]
    assert spares.held == 3 * SIZE  # the fourth reader's memory is not kept
    assert [reader._spare is not None for reader in readers] == [True, True, True, False]
    del bodies, readers
    assert spares.held == 0  # let go of with the readers
