"""Where a call's time went (``undertow.explain(future)``, ``undertow.explain(client)``): the
client's clocks and the server's timings carried in its answer, for plain and async
functions, failures, streams and the server's own operations."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import undertow
from undertow.rpc import call_timing
from undertow.rpc._calls import Call
from undertow.rpc._timing import explain_call
from undertow.wire import Header, Kind

pytestmark = [pytest.mark.usefixtures("undertow_home"), pytest.mark.timeout(60)]

NAP = 0.05


@pytest.fixture
def client() -> Iterator[undertow.Client]:
    server = undertow.Server(name="timed")
    gate = threading.Event()

    @server.register
    def nap(lines: int) -> str:
        for i in range(lines):
            print(f"line {i}")
        time.sleep(NAP)  # the function's own work: the time explain() must show as running
        return "rested"

    @server.register
    async def anap() -> str:
        await asyncio.sleep(NAP)  # the function's work, on the server's loop
        return "rested"

    @server.register
    def fails() -> None:
        raise ValueError("as it should")

    @server.register
    def waits() -> bool:
        return gate.wait(30)

    address = server.start("tcp://127.0.0.1:0")
    try:
        with undertow.connect(address) as c:
            yield c
    finally:
        gate.set()
        server.stop()


def _parts(future: Any) -> undertow.rpc.CallTiming:
    timing = call_timing(future._call)
    assert timing is not None
    return timing


def test_a_futures_time_is_split_between_here_the_way_and_the_server(
    client: undertow.Client,
) -> None:
    future = client.nap.submit(3)
    assert future.result(timeout=20) == "rested"
    t = _parts(future)
    assert t.function == "nap"
    assert t.ran is not None
    assert NAP <= t.ran < t.total
    assert t.before is not None
    assert t.after is not None
    assert t.on_the_way is not None
    assert min(t.before, t.after, t.on_the_way) >= 0
    assert t.here is not None
    assert t.here >= 0
    # the parts add up to the whole (the way is what the round trip took beyond the server)
    assert t.here + t.on_the_way + t.before + t.ran + t.after == pytest.approx(t.total)
    assert t.lines == 3
    assert t.printed >= 0
    said = undertow.explain(future)
    assert said.startswith(f"call {t.call_id} of nap() at {client.address}")
    for part in ("before it went out", "on the way", "before it ran", "running", "after it"):
        assert part in said
    assert "3 line(s) of output" in said
    assert future.explain() == said


def test_an_async_functions_running_time_is_its_own(client: undertow.Client) -> None:
    future = client.anap.submit()
    assert future.result(timeout=20) == "rested"
    t = _parts(future)
    assert t.ran is not None
    assert NAP <= t.ran < t.total
    assert t.lines == 0
    assert "output" not in undertow.explain(future)


def test_the_last_blocking_call_of_a_client_is_explained(client: undertow.Client) -> None:
    assert client.nap(0) == "rested"
    said = undertow.explain(client)
    assert " of nap() at " in said
    assert "running" in said
    with pytest.raises(ValueError, match="as it should"):
        client.fails()
    said = undertow.explain(client)  # a failure is timed as well
    assert " of fails() at " in said
    assert "running" in said


def test_a_call_still_running_has_no_timing_yet(client: undertow.Client) -> None:
    future = client.waits.submit()
    assert call_timing(future._call) is None
    assert "no answer yet" in undertow.explain(future)
    client.submit("fails")  # unrelated calls do not disturb it
    future.cancel()


def test_explain_refuses_what_it_cannot_explain_and_says_what_it_takes() -> None:
    with pytest.raises(TypeError, match=r"a call's future .* not int"):
        undertow.explain(42)


def _answered(timing: tuple[int, int, int] | None, sent: bool = True) -> Call:
    call = Call(9, "f", None)
    call.made = 100.0
    call.sent = 100.001 if sent else 0.0
    call.feed(Header(Kind.RESULT, 9, timing=timing), [])
    call.answered = 100.010  # 10 ms in all
    return call


def test_an_answer_without_server_timings_says_so() -> None:
    said = explain_call(_answered(None), "tcp://h:1")
    assert "the server gave no timings" in said
    assert "running" not in said


def test_a_call_held_for_a_batch_says_so_and_the_way_covers_its_wait() -> None:
    call = _answered((1_000_000, 5_000_000, 1_000_000), sent=False)
    t = call_timing(call)
    assert t is not None
    assert t.here is None
    assert t.on_the_way == pytest.approx(0.003)  # 10 ms less the server's 7
    assert "held for a batch" in explain_call(call, "tcp://h:1")
