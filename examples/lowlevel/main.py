"""The low-level layer: a HandlerServer and an rpc proxy, in one self-contained asyncio script.

Run:  python main.py

undertow.Server is built on undertow.core.HandlerServer. Use the low level when you want a
small async service with no discovery, no output forwarding and no pickle: handlers take
keyword arguments and return a value, and both travel as msgpack.
"""

import asyncio

from undertow.core import HandlerServer, rpc


def add(x: int, y: int) -> int:
    # A plain handler runs directly on the event loop, so keep it short.
    return x + y


async def slow_double(x: int) -> int:
    # An async handler runs as a task, so it can wait without blocking other calls.
    await asyncio.sleep(0.1)
    return 2 * x


async def main() -> None:
    # A table of named handlers; port 0 picks any free port.
    server = HandlerServer({"add": add, "slow_double": slow_double})
    address = await server.listen("tcp://127.0.0.1:0")
    print("listening on", address)
    try:
        # rpc() is a thin proxy: attribute calls send keyword arguments and are awaited.
        async with rpc(address, timeout=10) as remote:
            print("add:", await remote.add(x=1, y=2))
            doubled = await asyncio.gather(*(remote.slow_double(x=i) for i in range(5)))
            print("slow_double:", doubled)
            # Errors raised by a handler come back as exceptions.
            try:
                await remote.add(x=1)
            except TypeError as exc:
                print("caught TypeError:", exc)
    finally:
        await server.close()
    print("closed")


if __name__ == "__main__":
    asyncio.run(main())
