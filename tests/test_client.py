"""Calls of every kind, discovery, futures, threads, deadlines, the async client."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import gc
import inspect
import os
import pydoc
import threading
import time
import warnings
from typing import Any

import pytest

import undertow

from ._threads import run_in_threads
from ._waiting import suspend, wait_until

WAIT = 10.0
TOKEN = "t.Zx8cV2bN6mQ4wE9rT1yU5iO3pA7s"


@pytest.fixture
def client_token(undertow_home: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients find their token in the environment, as users' clients do."""
    monkeypatch.setenv("UNDERTOW_TOKEN", TOKEN)


def make_server(**options: Any) -> undertow.Server:
    server = undertow.Server(name="t", token=TOKEN, **options)
    gate = threading.Event()
    server.gate = gate  # type: ignore[attr-defined]

    @server.register
    def add(x: int, y: int = 1) -> int:
        """Add two numbers."""
        return x + y

    @server.register
    def wait_gate() -> str:
        """Block until the test opens the gate."""
        assert gate.wait(WAIT)
        return "opened"

    @server.register
    async def aadd(x: int, y: int) -> int:
        await suspend()  # as real coroutines do
        return x + y

    @server.register
    def count(n: int):
        yield from range(n)

    @server.register
    def count_then_wait(n: int):
        yield "first"
        assert gate.wait(WAIT)
        yield from range(n)

    @server.register
    async def acount(n: int):
        for i in range(n):
            await suspend()  # between items, as real ones do
            yield i

    @server.register
    def apply(fn, value):
        return fn(value)

    @server.register
    def total_np(array) -> float:
        return float(array.sum())

    @server.register
    def double_np(array):
        return array * 2

    server.config(
        {
            "*_np": {"input_serialization": "pickle", "output_serialization": "pickle"},
            "apply": {"input_serialization": "pickle"},
            "limited": {"timeout": 0.2},
        }
    )
    return server


@pytest.fixture
def served(serve):
    server = make_server()
    address = serve(server)
    with undertow.connect(address, timeout=WAIT, token=TOKEN) as client:
        yield server, client
    server.gate.set()  # type: ignore[attr-defined]


def test_discovery_shows_remote_signatures_and_docstrings(served):
    _, client = served
    assert {"add", "aadd", "count", "wait_gate"} <= set(dir(client))
    assert str(inspect.signature(client.add)) == "(x: int, y: int = 1) -> int"
    assert client.add.__doc__ == "Add two numbers."
    text = pydoc.render_doc(client.add, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    assert "add(x: int, y: int = 1) -> int" in text
    assert "Add two numbers." in text
    assert set(undertow.functions(client)) >= {"add", "count"}
    assert "server='t'" in repr(client)


# IPython's Completer.complete() is the documented way to ask for matches in 8.x; it warns
# that a provisional API will replace it some day.
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_functions_named_like_the_clients_own_attributes_do_not_replace_them(serve):
    server = undertow.Server(name="clash")
    server.register("address", lambda: "remote address()")
    server.register("timeout", lambda: "remote timeout()")
    server.register("close", lambda: "remote close()")
    server.register("add", lambda x, y: x + y)
    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        for _ in range(2):  # after a refresh too
            assert client.address == address
            assert client.timeout == WAIT
            assert client["address"]() == "remote address()"
            assert client["timeout"]() == "remote timeout()"
            assert client["close"]() == "remote close()"
            assert client.add(1, 2) == 3
            client.refresh()


def test_ipython_completion_and_inspection(served):
    import jedi  # type: ignore[import-untyped]
    from IPython.core.interactiveshell import InteractiveShell

    _, client = served
    shell = InteractiveShell.instance()
    try:
        shell.user_ns["remote"] = client
        shell.Completer.use_jedi = False
        with warnings.catch_warnings():  # IPython's own notice about its complete() API
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            assert ".add" in shell.complete("remote.")[1]
        assert "add" in [c.name for c in jedi.Interpreter("remote.", [shell.user_ns]).complete()]
        info = shell.object_inspect("remote.add")
        assert info["definition"] == "remote.add(x: int, y: int = 1) -> int"
        assert info["docstring"] == "Add two numbers."
    finally:
        InteractiveShell.clear_instance()


def test_plain_async_and_generator_functions(served):
    _, client = served
    assert client.add(2, 3) == 5
    assert client.add(2) == 3
    assert client.add(x=2, y=5) == 7
    assert client.aadd(4, 5) == 9
    assert list(client.count(5)) == [0, 1, 2, 3, 4]
    assert list(client.acount(3)) == [0, 1, 2]
    assert client.call("add", 1, 1) == 2
    assert client["add"](1, 2) == 3


def test_slow_call_does_not_block_other_callers(served):
    server, client = served
    blocked = client.wait_gate.submit()
    for i in range(20):
        assert client.add(i, 1) == i + 1
    assert not blocked.done()
    server.gate.set()
    assert blocked.result(WAIT) == "opened"


def test_generator_items_arrive_while_it_runs(served):
    server, client = served
    stream = client.count_then_wait(3)
    assert next(stream) == "first"  # the generator is now blocked on the gate
    server.gate.set()
    assert list(stream) == [0, 1, 2]


def test_futures_are_concurrent_and_awaitable(served):
    _, client = served
    futures = [client.add.submit(i, i) for i in range(64)]
    assert [f.result(WAIT) for f in futures] == [2 * i for i in range(64)]

    async def main() -> list[int]:
        return list(await asyncio.gather(*(client.add.submit(i, 1) for i in range(5))))

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]
    assert client.submit("add", 1, 2).result(WAIT) == 3


def test_futures_work_with_the_concurrent_futures_helpers(served):
    server, client = served
    # a thread blocked in wait() on a future that is not done yet is woken when it is
    blocked = client.wait_gate.submit()
    quick = [client.add.submit(i, 1) for i in range(10)]
    seen: list[set[concurrent.futures.Future[Any]]] = []
    waiter = threading.Thread(
        target=lambda: seen.append(concurrent.futures.wait([blocked], timeout=WAIT).done)
    )
    waiter.start()
    assert sorted(f.result(WAIT) for f in concurrent.futures.as_completed(quick, WAIT)) == list(
        range(1, 11)
    )
    server.gate.set()
    waiter.join(WAIT)
    assert seen == [{blocked}]
    assert blocked.result(0) == "opened"
    # callbacks added before and after completion both run, once
    calls: list[object] = []
    future = client.add.submit(1, 2)
    future.add_done_callback(lambda f: calls.append(f.result()))
    assert future.result(WAIT) == 3
    future.add_done_callback(lambda f: calls.append(f.exception()))
    assert calls == [3, None]


def test_callbacks_run_once_each_and_keep_the_short_path(served):
    server, client = served
    counts: collections.Counter[int] = collections.Counter()
    done = threading.Semaphore(0)

    def note(f: concurrent.futures.Future[Any]) -> None:
        counts[f.result()] += 1
        done.release()

    futures = [client.add.submit(i, 0) for i in range(300)]
    for f in futures:  # some are done already, most not
        f.add_done_callback(note)
    for _ in futures:
        assert done.acquire(timeout=WAIT)
    assert counts == collections.Counter(range(300))  # each once
    # no future made a condition for its callback (only waiting does)
    assert not any("_condition" in f.__dict__ for f in futures)
    # a callback added once the future is done runs at once; its error is logged, not raised
    late: list[int] = []
    futures[0].add_done_callback(lambda f: late.append(f.result()))
    futures[0].add_done_callback(lambda f: 1 / 0)
    assert late == [0]
    # a cancelled future runs its callback too, once
    blocked = client.wait_gate.submit()
    cancelled: list[bool] = []
    blocked.add_done_callback(lambda f: cancelled.append(f.cancelled()))
    assert blocked.cancel()
    assert cancelled == [True]
    server.gate.set()


def test_failed_future_carries_the_remote_exception(served):
    _, client = served
    future = client.add.submit("a", 1)
    with pytest.raises(TypeError, match="can only concatenate str"):
        future.result(WAIT)


def test_client_is_safe_from_many_threads(served):
    _, client = served
    results: dict[int, list[int]] = {}

    def work(t: int) -> None:
        results[t] = [client.add(t * 1000, i) for i in range(150)]
        results[t] += [f.result(WAIT) for f in [client.add.submit(t, i) for i in range(20)]]

    run_in_threads(work, range(8), timeout=60)
    for t in range(8):
        assert results[t] == [t * 1000 + i for i in range(150)] + [t + i for i in range(20)]


def test_deadlines_name_the_function_and_address(served):
    _, client = served
    started = time.monotonic()
    with pytest.raises(undertow.RPCTimeout) as info:
        client.wait_gate.options(timeout=0.3)()  # blocked until the fixture opens the gate
    assert time.monotonic() - started < 3
    assert isinstance(info.value, TimeoutError)
    assert "wait_gate()" in str(info.value)
    assert client.address in str(info.value)
    # the client keeps working, and the late reply is dropped
    assert client.add(1, 1) == 2


def test_a_late_reply_is_never_taken_for_a_later_call(served):
    server, client = served
    with pytest.raises(undertow.RPCTimeout):
        client.wait_gate.options(timeout=0.2)()
    server.gate.set()  # the abandoned call now finishes and its reply comes back late
    assert [client.add(i, 1) for i in range(20)] == [i + 1 for i in range(20)]
    assert client.wait_gate() == "opened"


def forever_server() -> tuple[undertow.Server, threading.Event, threading.Event]:
    """A server whose ``forever()`` waits until cancelled; events say it started and stopped."""
    server = undertow.Server(name="forever")
    started, stopped = threading.Event(), threading.Event()

    @server.register
    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    return server, started, stopped


def test_a_call_past_its_deadline_is_stopped_on_the_server(serve):
    server, started, stopped = forever_server()
    with undertow.connect(serve(server), timeout=WAIT) as client:
        with pytest.raises(undertow.RPCTimeout):
            client.forever.options(timeout=0.3)()
        assert started.is_set()
        assert stopped.wait(WAIT), "the server did not cancel the call whose deadline passed"


def _open_fds() -> int:
    """How many file descriptors this process has open."""
    if os.path.isdir("/proc/self/fd"):
        return len(os.listdir("/proc/self/fd"))
    count = 0  # elsewhere: ask each descriptor number (tests open far fewer than 4096)
    for fd in range(4096):
        try:
            os.fstat(fd)
        except OSError:
            continue
        count += 1
    return count


@pytest.mark.usefixtures("client_token")
def test_threads_that_call_leave_no_connection_behind(served):
    server, _ = served
    with undertow.connect(server.address, timeout=WAIT) as warm:  # the context's own descriptors
        warm.add(1)
    baseline = _open_fds()

    # each calling thread has a connection of its own; closing the client closes them all,
    # including those of threads still alive
    client = undertow.connect(server.address, timeout=WAIT)
    release = threading.Event()
    called = threading.Barrier(5)

    def work(i: int) -> None:
        assert client.add(i) == i + 1
        called.wait(WAIT)
        release.wait(WAIT)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    called.wait(WAIT)
    assert _open_fds() > baseline
    client.close()
    assert wait_until(lambda: _open_fds() <= baseline, WAIT), (
        f"{_open_fds() - baseline} descriptors left"
    )
    release.set()
    for thread in threads:
        thread.join(WAIT)
    with pytest.raises(undertow.ConnectionClosed):
        client.add(1)

    # a thread that ends takes its connection with it, while the client stays open
    with undertow.connect(server.address, timeout=WAIT) as client:
        client.add(1)
        with_client = _open_fds()
        run_in_threads(lambda i: client.add(i), range(3), timeout=WAIT)
        gc.collect()
        assert wait_until(lambda: _open_fds() <= with_client, WAIT), (
            "a finished thread kept its socket"
        )


@pytest.mark.usefixtures("client_token")
def test_default_deadline_applies_to_futures(serve):
    server = make_server()
    address = serve(server)
    try:
        with undertow.connect(address, timeout=0.3) as client:
            with pytest.raises(undertow.RPCTimeout, match="wait_gate"):
                client.wait_gate.submit().result(WAIT)
    finally:
        server.gate.set()  # type: ignore[attr-defined]


@pytest.mark.usefixtures("client_token")
def test_server_side_timeout_option(serve):
    server = make_server()
    release = threading.Event()

    @server.register
    def limited() -> None:
        assert release.wait(WAIT)  # runs past its 0.2 s limit until the test lets it go

    address = serve(server)
    try:
        with undertow.connect(address, timeout=WAIT) as client:
            started = time.monotonic()
            with pytest.raises(undertow.RPCTimeout, match="limited"):
                client.limited()
            assert time.monotonic() - started < 1.5
    finally:
        release.set()


def test_numpy_round_trip_keeps_data(served):
    import numpy as np

    _, client = served
    array = np.random.default_rng(0).random(1_000_000)
    assert client.total_np(array) == pytest.approx(float(array.sum()))
    doubled = client.double_np(array)
    assert isinstance(doubled, np.ndarray)
    assert np.array_equal(doubled, array * 2)


def test_lambdas_travel_with_pickle(served):
    _, client = served
    offset = 10
    assert client.apply(lambda v: v + offset, 5) == 15


def test_pickle_needs_an_authenticated_caller(serve):
    address = serve(make_server(allow_anonymous=True))
    with undertow.connect(address, timeout=WAIT, token=False) as client:  # anonymous
        with pytest.raises(undertow.AuthenticationError, match="token"):
            client.total_np([1, 2])
        assert client.add(1, 2) == 3  # msgpack functions still serve anonymous callers
    with pytest.raises(undertow.AuthenticationError, match="authentication failed"):
        undertow.connect(address, timeout=WAIT, token="t.wrongwrongwrongwrongwrongwrong")


def test_a_server_with_auth_refuses_a_client_without_a_token(serve):
    address = serve(make_server())
    with pytest.raises(undertow.AuthenticationError, match="requires authentication"):
        undertow.connect(address, timeout=WAIT, token=False)


def test_unknown_function_lists_the_available_ones(served):
    _, client = served
    with pytest.raises(undertow.FunctionNotFound) as info:
        client.nope  # noqa: B018
    assert "'nope'" in str(info.value)
    assert "add" in info.value.available
    assert not hasattr(client, "_private")


@pytest.mark.usefixtures("client_token")
def test_client_started_before_its_server_waits_for_it():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    outcome: list[object] = []

    def connect_early() -> None:
        try:
            with undertow.connect(address, timeout=WAIT) as client:
                outcome.append(client.add(20, 22))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect_early)
    thread.start()
    server = make_server()
    try:
        server.start(address)
        thread.join(WAIT + 5)
    finally:
        server.stop()
    assert outcome == [42]


@pytest.mark.usefixtures("client_token")
def test_closing_the_client_wakes_waiting_calls(served):
    server, _ = served
    client = undertow.connect(server.address, timeout=WAIT)
    future = client.wait_gate.submit()
    client.close()
    with pytest.raises(undertow.ConnectionClosed):
        future.result(WAIT)


async def test_async_client_has_the_same_functions(serve):
    server = make_server()
    address = serve(server)
    async with undertow.AsyncClient(address, timeout=WAIT, token=TOKEN) as client:
        assert await client.add(2, 3) == 5
        assert await client.aadd(1, 2) == 3
        assert [i async for i in client.count(3)] == [0, 1, 2]
        task = client.add.submit(5, 5)
        assert await task == 10
        assert await asyncio.gather(*(client.add(i, 0) for i in range(10))) == list(range(10))
        with pytest.raises(undertow.RPCTimeout, match="wait_gate"):
            await client.wait_gate.options(timeout=0.2)()
        with pytest.raises(ZeroDivisionError):
            await client.apply(lambda v: 1 / v, 0)
        assert str(inspect.signature(client.add)) == "(x: int, y: int = 1) -> int"
    server.gate.set()  # type: ignore[attr-defined]


def test_sync_and_async_clients_offer_the_same_methods():
    public = {"call", "submit", "refresh"}
    for name in public:
        sync_params = list(inspect.signature(getattr(undertow.Client, name)).parameters)
        async_params = list(inspect.signature(getattr(undertow.AsyncClient, name)).parameters)
        assert sync_params == async_params, name
    assert list(inspect.signature(undertow.Client).parameters) == list(
        inspect.signature(undertow.AsyncClient).parameters
    )


def test_cancelling_a_future_stops_the_remote_call(serve):
    server, started, stopped = forever_server()
    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        future = client.forever.submit()
        assert started.wait(WAIT)
        assert future.cancel()
        assert future.cancelled()
        assert stopped.wait(WAIT), "the server did not cancel the running task"


def test_a_finished_future_cannot_be_cancelled(served):
    _, client = served
    future = client.add.submit(1, 2)
    assert future.result(WAIT) == 3
    assert not future.cancel()
    assert future.result() == 3


def test_plain_functions_are_bounded_by_max_workers_and_async_ones_still_run(serve):
    # every call over ZeroMQ: the blocking ping() must meet the busy pool, not a plain socket's
    server = undertow.Server(name="bounded", max_workers=2, plain=None)
    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    release = threading.Event()

    @server.register
    def busy() -> int:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        try:
            assert release.wait(WAIT)
        finally:
            with lock:
                running["now"] -= 1
        return 1

    @server.register
    async def ping() -> str:
        return "pong"

    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        futures = [client.busy.submit() for _ in range(5)]
        assert wait_until(lambda: running["now"] == 2, WAIT)
        # both workers busy, three calls queued: the server still answers async functions
        assert client.ping() == "pong"
        assert running["most"] <= 2
        release.set()
        assert [f.result(WAIT) for f in futures] == [1] * 5
    assert running["most"] == 2


def test_leaving_a_stream_early_stops_the_remote_generator(serve):
    server = undertow.Server(name="streams")
    stopped = threading.Event()

    @server.register
    def naturals():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            stopped.set()

    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        stream = client.naturals()
        assert [next(stream) for _ in range(3)] == [0, 1, 2]
        stream.close()
        assert stopped.wait(WAIT), "the remote generator kept running"
        assert next(client.naturals()) == 0  # the server still serves


@pytest.mark.parametrize("name", ["naturals", "anaturals"])
def test_a_fast_generator_waits_for_a_slow_consumer(serve, name):
    from undertow.wire import STREAM_WINDOW

    server = undertow.Server(name="flow")
    produced = [0]
    changed = threading.Condition()

    def count(n: int) -> None:
        with changed:
            produced[0] = n + 1
            changed.notify_all()

    @server.register
    def naturals():
        n = 0
        while True:
            count(n)
            yield n
            n += 1

    @server.register
    async def anaturals():
        n = 0
        while True:
            count(n)
            yield n
            n += 1

    def settles_at(count: int) -> bool:
        with changed:
            if not changed.wait_for(lambda: produced[0] >= count, WAIT):
                return False
            # a bounded look for overshoot: nothing more may be produced without credit
            changed.wait_for(lambda: produced[0] > count, 0.3)
            return produced[0] == count

    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        stream = client[name]()
        assert next(stream) == 0
        # one window sent, plus the item the generator holds while it waits for credit
        assert settles_at(STREAM_WINDOW + 1)
        half = STREAM_WINDOW // 2
        assert [next(stream) for _ in range(half - 1)] == list(range(1, half))
        assert settles_at(half + STREAM_WINDOW + 1)
        stream.close()


class ReprCodec:
    """A custom serialization: Python literals as text (safe: ast.literal_eval)."""

    name = "pyliteral"

    @staticmethod
    def dumps(value):
        return repr(value)

    @staticmethod
    def loads(data):
        import ast

        return ast.literal_eval(data.decode())


def test_serialization_by_glob_with_the_json_module_and_a_custom_codec(serve):
    import json

    server = undertow.Server(name="codecs")

    @server.register
    def shape_json(rows: list[list[int]]) -> dict[str, object]:
        return {"rows": len(rows), "first": rows[0]}

    @server.register
    def shape_literal(rows):
        return (len(rows), set(rows))

    server.config(
        {
            "*_json": {"input_serialization": json, "output_serialization": json},
            "*_literal": {"input_serialization": ReprCodec, "output_serialization": ReprCodec},
        }
    )
    assert server.describe()["shape_json"]["input_serialization"] == "json"
    assert server.describe()["shape_literal"]["output_serialization"] == "pyliteral"
    address = serve(server)
    with undertow.connect(address, timeout=WAIT, codecs={"pyliteral": ReprCodec}) as client:
        assert client.shape_json([[1, 2], [3]]) == {"rows": 2, "first": [1, 2]}
        assert client.shape_literal([1, 1, 2]) == (3, {1, 2})
    with undertow.connect(address, timeout=WAIT) as client:
        with pytest.raises(undertow.ConfigError, match=r"pass codecs=\{'pyliteral'"):
            client.shape_literal([1])


async def test_cancelling_a_task_that_awaits_a_stream_stops_the_generator(serve):
    server = undertow.Server(name="astreams")
    started = threading.Event()
    stopped = threading.Event()

    @server.register
    async def slow_items():
        try:
            yield 1
            started.set()
            await asyncio.Event().wait()
            yield 2
        finally:
            stopped.set()

    address = serve(server)
    async with undertow.AsyncClient(address, timeout=WAIT) as client:
        stream = client.slow_items()

        async def consume() -> list[int]:
            return [item async for item in stream]

        task = asyncio.ensure_future(consume())
        assert await asyncio.to_thread(started.wait, WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(stopped.wait, WAIT), "the remote generator kept running"


def test_the_repr_counts_functions_in_words(serve):
    server = undertow.Server(name="one")
    server.register("only", lambda: 1)
    with undertow.connect(serve(server), timeout=WAIT) as client:
        assert repr(client).endswith("[1 function]>")
        server.register("other", lambda: 2)
        client.refresh()
        assert repr(client).endswith("[2 functions]>")


def test_options_that_mean_nothing_over_http_are_refused_by_name():
    refused: dict[str, Any] = {"curve_server_key": "x" * 40, "connect_wait": 1.0}
    for name, value in refused.items():
        with pytest.raises(undertow.ConfigError, match=f"{name} does not apply to HTTP"):
            undertow.Client("http://127.0.0.1:1", **{name: value})
        with pytest.raises(undertow.ConfigError, match=name):
            undertow.AsyncClient("http://127.0.0.1:1", **{name: value})
    with pytest.raises(undertow.ConfigError, match="no transport for ftp://"):
        undertow.Client("ftp://127.0.0.1:1")


def test_a_one_way_call_runs_and_is_answered_with_nothing(serve) -> None:
    from undertow.rpc import FunctionInfo

    server = undertow.Server(name="oneway")
    seen: list[int] = []
    arrived = threading.Event()

    @server.register
    def note(x: int) -> int:
        seen.append(x)
        arrived.set()
        return x * 100

    with undertow.Client(serve(server)) as client:
        client._post(FunctionInfo("note"), (7,), {}, 10.0)
        assert arrived.wait(10)
        assert seen == [7]
        # no answer came for it: the next call gets its own result, nothing stray
        assert client.note(8) == 800
        assert seen == [7, 8]
