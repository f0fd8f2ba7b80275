"""Async-and-streams server: async def functions and generators that stream their items.

Run:  python server.py [PORT]      (PORT 0, the default, picks any free port)
"""

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator

import undertow

server = undertow.Server(name="streams")


# An async def function runs on the server's event loop, so many calls can wait at once
# without using a thread each.
@server.register
async def fetch(item: int, delay: float = 0.5) -> str:
    """Pretend to fetch an item over the network, taking `delay` seconds."""
    await asyncio.sleep(delay)
    return f"item-{item}"


# A generator function streams: the caller receives each item as soon as it is yielded,
# long before the generator finishes.
@server.register
def countdown(n: int) -> Iterator[int]:
    """Count down from n, one number every 0.1 s."""
    print(f"counting down from {n}")  # output reaches the caller too, alongside the items
    for i in range(n, 0, -1):
        time.sleep(0.1)
        yield i


# Async generators stream too.
@server.register
async def ticks(count: int, interval: float = 0.1) -> AsyncIterator[dict[str, float]]:
    """Yield `count` timestamped ticks, `interval` seconds apart."""
    for i in range(count):
        await asyncio.sleep(interval)
        yield {"tick": i, "time": time.time()}


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server.serve_forever("127.0.0.1", port)
