"""The server's receiver pool under mixed load: nothing is lost, concurrency stays bounded."""

from __future__ import annotations

import threading
import time

import undertow

from ._threads import run_in_threads
from ._waiting import suspend

WAIT = 20.0


def test_mixed_fast_slow_and_async_calls_from_many_clients(serve):
    server = undertow.Server(name="mixed", max_workers=2)
    lock = threading.Lock()
    running = {"now": 0, "most": 0}

    def track(delta: int) -> None:
        with lock:
            running["now"] += delta
            running["most"] = max(running["most"], running["now"])

    @server.register
    def fast(i: int) -> int:
        track(1)
        track(-1)
        return i

    @server.register
    def slow(i: int) -> int:
        track(1)
        try:
            sum(range(200_000))  # real work, longer than the pool's 5 ms inline allowance
        finally:
            track(-1)
        return -i

    @server.register
    async def later(i: int) -> int:
        await suspend()  # as real coroutines do
        return i * 10

    address = serve(server)

    def client_thread(seed: int) -> None:
        with undertow.connect(address, timeout=WAIT) as client:
            for i in range(seed, seed + 40):
                kind = i % 4
                if kind == 0:
                    assert client.slow(i) == -i
                elif kind == 1:
                    assert client.later(i) == i * 10
                else:
                    assert client.fast(i) == i
            futures = [client.slow.submit(i) for i in range(6)]
            assert [f.result(WAIT) for f in futures] == [-i for i in range(6)]

    run_in_threads(client_thread, (k * 100 for k in range(4)), timeout=WAIT * 2)
    assert running["most"] <= 2


def test_a_blocked_call_does_not_stop_the_server_receiving(serve):
    # Two calls must run at the same time to finish: the first blocks until the second
    # arrives, which only happens if another thread took over receiving from the first (the
    # sentinel's job). Without the takeover the barrier breaks and both calls fail.
    server = undertow.Server(name="pairs", max_workers=2)
    pair = threading.Barrier(2, timeout=WAIT)

    @server.register
    def meet(i: int) -> int:
        pair.wait()
        return i

    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        for round_ in range(3):
            futures = [client.meet.submit(round_ * 2 + k) for k in range(2)]
            assert sorted(f.result(WAIT) for f in futures) == [round_ * 2, round_ * 2 + 1]


def test_max_workers_bounds_the_functions_running_over_both_transports(serve):
    from ._waiting import wait_until

    server = undertow.Server(name="bound", max_workers=2)
    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    release = threading.Event()

    @server.register
    def hold(i: int) -> int:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        release.wait(WAIT)
        with lock:
            running["now"] -= 1
        return i

    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        assert client._conn.plain is not None
        futures = [client.hold.submit(i) for i in range(2)]  # over ZeroMQ
        blocking = [threading.Thread(target=client.hold, args=(i,)) for i in range(2, 4)]
        for thread in blocking:  # blocking calls: over the plain socket
            thread.start()
        try:
            assert wait_until(lambda: running["now"] == 2, WAIT)
            # four calls are in; two run, the other two wait for a slot, whichever transport
            assert not wait_until(lambda: running["now"] > 2, 0.5)
        finally:
            release.set()
        assert [f.result(WAIT) for f in futures] == [0, 1]
        for thread in blocking:
            thread.join(WAIT)
    assert running["most"] == 2


def test_a_blocked_call_after_the_server_was_idle_does_not_stop_it_receiving(serve, monkeypatch):
    # After an idle spell the sentinel sleeps deeply and waits behind the other idle threads:
    # the first call that then blocks must still wake it (it once woke another thread, which
    # went back to sleep, and every later call waited for the blocked one to end).
    monkeypatch.setattr("undertow.rpc._receivers._IDLE_AFTER", 0.05)
    server = undertow.Server(name="after-idle", max_workers=4)
    pair = threading.Barrier(2, timeout=WAIT)

    @server.register
    def meet(i: int) -> int:
        pair.wait()
        return i

    @server.register
    def quick(i: int) -> int:
        return i

    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        for round_ in range(3):
            assert [client.quick(i) for i in range(20)] == list(range(20))  # busy: it polls
            time.sleep(0.2)  # an idle spell longer than _IDLE_AFTER, the condition under test
            futures = [client.meet.submit(round_ * 2 + k) for k in range(2)]
            assert sorted(f.result(WAIT) for f in futures) == [round_ * 2, round_ * 2 + 1]
