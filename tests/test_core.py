"""The low-level layer: a handler table and awaitable rpc proxies."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

import undertow
from undertow.core import HandlerServer, rpc

from ._waiting import suspend


async def test_handlers_and_rpc():
    async def slow_add(x: int, y: int) -> int:
        await suspend()  # as real coroutines do
        return x + y

    server = HandlerServer({"add": slow_add, "ping": lambda: "pong"}, name="low")
    address = await server.listen("tcp://127.0.0.1:0")
    try:
        async with rpc(address, timeout=10) as remote:
            assert await remote.ping() == "pong"
            assert await remote.add(x=1, y=2) == 3
            results = await asyncio.gather(*(remote.add(x=i, y=i) for i in range(50)))
            assert results == [2 * i for i in range(50)]
            with pytest.raises(undertow.FunctionNotFound, match="available: \\['add', 'ping'\\]"):
                await remote.missing()
            with pytest.raises(TypeError):
                await remote.add(x=1)
        assert "low" in repr(server)
    finally:
        await server.close()


async def test_the_low_level_layer_signs_and_checks_too():
    from undertow.security import TokenAuth

    token = "low.Lw3xV9mQ2rT7yU1iO5pL8sD4fG6hJ0zC"
    server = HandlerServer({"ping": lambda: "pong"}, name="low", auth=TokenAuth([token]))
    address = await server.listen("tcp://127.0.0.1:0")
    try:
        async with rpc(address, timeout=10, token=token) as remote:
            assert await remote.ping() == "pong"
        async with rpc(address, timeout=10) as stranger:
            with pytest.raises(undertow.AuthenticationError, match="requires authentication"):
                await stranger.ping()
    finally:
        await server.close()


async def test_listen_twice_is_an_error():
    server = HandlerServer({}, name="twice")
    await server.listen()
    try:
        with pytest.raises(undertow.UndertowError, match="already listens"):
            await server.listen()
    finally:
        await server.close()


def test_bad_addresses_are_named():
    server = undertow.Server(name="bad")
    with pytest.raises(undertow.ConnectError, match="unsupported scheme 'udp'"):
        server.start("udp://127.0.0.1:1")
    with pytest.raises(undertow.ConnectError, match="not host:port"):
        undertow.connect("tcp://nowhere", timeout=1)
    with pytest.raises(undertow.ConnectError, match="port 0"):
        undertow.connect("tcp://127.0.0.1:0", timeout=1)


def test_public_objects_have_informative_reprs(serve):
    server = undertow.Server(name="shown")
    server.register("ping", lambda: "pong")
    assert repr(server) == "<Server 'shown' not serving [1 function]>"
    address = serve(server)
    assert repr(server) == f"<Server 'shown' {address} [1 function]>"
    with undertow.connect(address, timeout=10) as client:
        assert repr(client) == f"<Client {address} server='shown' [1 function]>"
        future = client.ping.submit()
        assert future.result(10) == "pong"
        assert "finished" in repr(future)
    server.register("pong", lambda: "ping")
    assert repr(server) == f"<Server 'shown' {address} [2 functions]>"
    assert repr(rpc(address)) == f"<rpc {address}>"


async def test_jobs_answer_from_worker_threads_when_the_loop_reads_the_socket():
    """With ``listen(threads=0)`` the loop owns the socket; a job's reply from an executor
    thread is relayed to the loop, which forwards it."""
    from undertow.rpc import Incoming
    from undertow.wire import MsgpackCodec

    codec = MsgpackCodec()
    repliers: set[int] = set()

    def square(incoming: Incoming) -> tuple[str, Callable[[], None]]:
        def job() -> None:
            repliers.add(threading.get_ident())
            x = codec.decode(incoming.frames)["x"]
            incoming.reply(codec.encode(x * x), codec.name)

        return "square", job

    server = HandlerServer(name="jobs")
    server.raw_handlers["square"] = square
    address = await server.listen("tcp://127.0.0.1:0", threads=0)
    try:
        async with rpc(address, timeout=10) as remote:
            results = await asyncio.gather(*(remote.square(x=i) for i in range(30)))
        assert results == [i * i for i in range(30)]
        assert threading.get_ident() not in repliers  # answered from other threads
    finally:
        await server.close()
