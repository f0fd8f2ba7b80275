"""Async-and-streams client: await remote functions and iterate over remote generators.

Run:  python client.py tcp://127.0.0.1:PORT     (the address the server printed)
"""

import asyncio
import sys
import time

import undertow


async def main(address: str) -> None:
    # AsyncClient is the asyncio twin of undertow.connect(): the same functions, awaited.
    async with undertow.AsyncClient(address, timeout=10) as client:
        # One awaited call.
        print("fetched", await client.fetch(1, delay=0.1))

        # Ten calls at once: they all wait on the server together, so this takes about
        # 0.5 s, not 5 s.
        start = time.monotonic()
        items = await asyncio.gather(*(client.fetch(i) for i in range(10)))
        print(f"fetched {len(items)} items concurrently in {time.monotonic() - start:.1f} s")

        # A remote generator: 'async for' receives each item as it is produced.
        async for number in client.countdown(3):
            print("countdown:", number)

        # An async generator on the server streams the same way.
        async for tick in client.ticks(3):
            print("tick", tick["tick"])

    # The plain (sync) client streams too, with an ordinary for loop.
    with undertow.connect(address, timeout=10) as sync_client:
        print("sync countdown:", list(sync_client.countdown(2)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python client.py tcp://127.0.0.1:PORT")
    asyncio.run(main(sys.argv[1]))
