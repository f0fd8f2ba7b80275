"""The client's contract, the same tests over every transport: one server listens on ZeroMQ
and HTTP, and each test runs once with a client of each address (sync tests with
``undertow.connect``, async ones with ``undertow.AsyncClient``)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import undertow

from ._tls import make_tls

WAIT = 10.0
TOKEN = "t.Zx8cV2bN6mQ4wE9rT1yU5iO3pA7s"
TRANSPORTS = ["zmq", "http"]


@dataclass
class Served:
    """A running server, its address for the transport under test, and what its functions
    tell the test."""

    server: undertow.Server
    address: str
    started: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    hello: threading.Event = field(default_factory=threading.Event)
    heard: list[tuple[str, str]] = field(default_factory=list)
    plain: bool = False

    def output(self, stream: str, text: str) -> None:
        """The clients' output callback."""
        self.heard.append((stream, text))
        if "hello" in text:
            self.hello.set()


def make_server(served: Served) -> None:
    server = served.server

    @server.register
    def add(x: int, y: int = 1) -> int:
        """Add two numbers."""
        return x + y

    @server.register
    def divide(a: float, b: float) -> float:
        return a / b

    @server.register
    def chatty() -> str:
        print("hello")
        # the call goes on only once the client has seen the print
        assert served.hello.wait(WAIT), "the output did not arrive while the call ran"
        return "done"

    @server.register
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    @server.register
    async def forever() -> None:
        served.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            served.stopped.set()

    @server.register
    def numbers(n: int) -> list[int]:
        return list(range(n))

    server.config({"numbers": {"return_pointer": True}})


@pytest.fixture(params=[*TRANSPORTS, "plain", "tls"])
def served(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    undertow_home: object,
    tmp_path: Path,
) -> Iterator[Served]:
    """A server with a token, listening on ZeroMQ, HTTP and a plain socket; the address of
    the transport under test ("plain": the ZeroMQ address, whose server tells sync clients
    to make blocking calls over its plain socket; "tls": the same socket speaking TLS).
    Clients find the token (and the TLS authority) in the environment, as users' clients
    do."""
    monkeypatch.setenv("UNDERTOW_TOKEN", TOKEN)
    options: dict[str, Any] = {}
    if request.param == "tls":
        files = make_tls(tmp_path)
        options = {"tls_cert": files.cert, "tls_key": files.key}
        monkeypatch.setenv("UNDERTOW_TLS_CA", files.ca)
    server = undertow.Server(name="contract", token=TOKEN, **options)
    server.start("tcp://127.0.0.1:0", http_port=0, plain="tcp+plain://127.0.0.1:0")
    address = server.http_address if request.param == "http" else server.address
    served = Served(server, address)
    served.plain = request.param in ("plain", "tls")
    make_server(served)
    yield served
    served.release.set()
    server.stop()


@pytest.fixture
def client(served: Served) -> Iterator[undertow.Client]:
    with undertow.connect(served.address, timeout=WAIT, output=served.output) as c:
        conn = c._conn
        if served.plain:
            assert conn.plain is not None
            assert conn.plain.usable()
            assert conn.plain.address == served.server.plain_address
        elif hasattr(conn, "plain"):
            conn.plain = None  # the ZeroMQ case: blocking calls stay on ZeroMQ
        yield c


@pytest.fixture
async def aclient(served: Served) -> AsyncIterator[undertow.AsyncClient]:
    async with undertow.AsyncClient(served.address, timeout=WAIT, output=served.output) as c:
        yield c


def a_dead_address(transport: str) -> str:
    """An address of a port where nothing listens: bound once, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"{'tcp' if transport == 'zmq' else 'http'}://127.0.0.1:{port}"


# -- calls --------------------------------------------------------------------------------------


def test_calls(client: undertow.Client) -> None:
    assert isinstance(client, undertow.Client)
    assert client.add(2, y=40) == 42
    assert client.call("add", 1) == 2
    assert client.add.submit(5).result(WAIT) == 6
    assert client.submit("add", 7).result(WAIT) == 8
    assert client.add.__doc__ == "Add two numbers."
    assert "[6 functions]" in repr(client)
    with pytest.raises(undertow.FunctionNotFound, match="missing"):
        client.call("missing")


async def test_async_calls(aclient: undertow.AsyncClient) -> None:
    assert await aclient.add(2, y=40) == 42
    assert await aclient.call("add", 1) == 2
    assert await aclient.add.submit(5) == 6
    assert await asyncio.gather(*(aclient.add(i, 0) for i in range(5))) == list(range(5))


# -- errors -------------------------------------------------------------------------------------


def test_errors(client: undertow.Client) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        client.divide(1, 0)
    assert str(info.value) == "division by zero"
    assert "in divide" in str(info.value.__cause__)  # the remote traceback
    assert f"divide() at {client.address}" in str(info.value.__cause__)
    with pytest.raises(ZeroDivisionError):
        client.divide.submit(1, 0).result(WAIT)
    assert client.add(1) == 2  # the client is still usable


async def test_async_errors(aclient: undertow.AsyncClient) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        await aclient.divide(1, 0)
    assert str(info.value) == "division by zero"
    assert "in divide" in str(info.value.__cause__)


# -- live output --------------------------------------------------------------------------------


def test_live_output(client: undertow.Client, served: Served) -> None:
    assert client.chatty() == "done"
    assert served.heard == [("stdout", "hello\n")]


async def test_async_live_output(aclient: undertow.AsyncClient, served: Served) -> None:
    assert await aclient.chatty() == "done"
    assert served.heard == [("stdout", "hello\n")]


# -- streams ------------------------------------------------------------------------------------


def test_streams(client: undertow.Client) -> None:
    assert list(client.count(4)) == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="generator"):
        client.count.submit(2)


async def test_async_streams(aclient: undertow.AsyncClient) -> None:
    assert [i async for i in aclient.count(4)] == [0, 1, 2, 3]


# -- deadlines and cancellation -----------------------------------------------------------------


def test_a_call_past_its_deadline_times_out_and_stops_on_the_server(
    client: undertow.Client, served: Served
) -> None:
    with pytest.raises(undertow.RPCTimeout) as info:
        client.forever.options(timeout=0.3)()
    assert "forever()" in str(info.value)
    assert client.address in str(info.value)
    assert served.stopped.wait(WAIT), "the call went on after its deadline"
    assert client.add(1) == 2


async def test_an_async_call_past_its_deadline_times_out_and_stops_on_the_server(
    aclient: undertow.AsyncClient, served: Served
) -> None:
    with pytest.raises(undertow.RPCTimeout, match="forever"):
        await aclient.forever.options(timeout=0.3)()
    assert await asyncio.to_thread(served.stopped.wait, WAIT)
    assert await aclient.add(1) == 2


def test_a_cancelled_future_stops_on_the_server(client: undertow.Client, served: Served) -> None:
    future = client.forever.submit()
    assert served.started.wait(WAIT)
    assert future.cancel()
    assert future.cancelled()
    assert served.stopped.wait(WAIT), "the call went on after it was cancelled"


async def test_a_cancelled_task_stops_on_the_server(
    aclient: undertow.AsyncClient, served: Served
) -> None:
    task = aclient.forever.submit()
    assert await asyncio.to_thread(served.started.wait, WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(served.stopped.wait, WAIT)


def test_closing_the_client_fails_its_waiting_futures(served: Served) -> None:
    client = undertow.connect(served.address, timeout=WAIT)
    future = client.forever.submit()
    assert served.started.wait(WAIT)
    client.close()
    assert client.closed
    with pytest.raises(undertow.ConnectionClosed):
        future.result(WAIT)


# -- tokens -------------------------------------------------------------------------------------


def test_tokens(served: Served) -> None:
    with pytest.raises(undertow.AuthenticationError):
        undertow.connect(served.address, timeout=WAIT, token=False)
    with undertow.connect(served.address, timeout=WAIT, token=TOKEN) as client:
        assert client.add(1) == 2


async def test_async_tokens(served: Served) -> None:
    with pytest.raises(undertow.AuthenticationError):
        await undertow.connect_async(served.address, timeout=WAIT, token=False)
    client = await undertow.connect_async(served.address, timeout=WAIT, token=TOKEN)
    try:
        assert await client.add(1) == 2
    finally:
        await client.aclose()


# -- pointers -----------------------------------------------------------------------------------


def test_pointers(client: undertow.Client) -> None:
    ptr = client.numbers(5)
    assert isinstance(ptr, undertow.Pointer)
    assert ptr[0:2] == [0, 1]
    assert len(ptr) == 5
    assert client.numbers.submit(3).result(WAIT)[1:] == [1, 2]


async def test_async_pointers(aclient: undertow.AsyncClient) -> None:
    ptr = await aclient.numbers(5)
    assert isinstance(ptr, undertow.Pointer)
    assert await asyncio.to_thread(ptr.__getitem__, slice(0, 2)) == [0, 1]


def test_a_pointer_asked_for_per_call(client: undertow.Client) -> None:
    kept = client.add.options(return_pointer=True)
    ptr = kept(2, 3)
    assert isinstance(ptr, undertow.Pointer)
    assert ptr.fetch() == 5
    future = kept.submit(4)
    assert future.result(WAIT).fetch() == 5
    items = list(client.count.options(return_pointer=True)(3))
    assert all(isinstance(item, undertow.Pointer) for item in items)
    assert [item.fetch() for item in items] == [0, 1, 2]
    assert client.add(2, 3) == 5  # the option was for those calls only


async def test_a_pointer_asked_for_per_async_call(aclient: undertow.AsyncClient) -> None:
    ptr = await aclient.add.options(return_pointer=True)(2, 3)
    assert isinstance(ptr, undertow.Pointer)
    assert await asyncio.to_thread(ptr.fetch) == 5
    items = [item async for item in aclient.count.options(return_pointer=True)(2)]
    assert all(isinstance(item, undertow.Pointer) for item in items)
    assert await aclient.add(2, 3) == 5


# -- connecting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nothing_listening_says_so_and_how_to_wait_longer(transport: str) -> None:
    address = a_dead_address(transport)
    started = time.monotonic()
    with pytest.raises(undertow.TransportError) as info:
        undertow.connect(address, timeout=WAIT, connect_timeout=0.3)
    assert time.monotonic() - started < WAIT
    message = str(info.value)
    assert f"nothing answered at {address}" in message
    assert "_describe" not in message
    assert ".options(" not in message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_nothing_listening_says_so_to_the_async_client_too(transport: str) -> None:
    address = a_dead_address(transport)
    with pytest.raises(undertow.TransportError, match=f"nothing answered at {address}"):
        await undertow.connect_async(address, timeout=WAIT, connect_timeout=0.3)
