"""HTTP example: the same functions over ZeroMQ and HTTP, for curl, browsers and Python.

Run:  python server.py [HTTP_PORT]     (0, the default, picks a free port)

It prints its ZeroMQ address, then its HTTP address; try, with the latter:

    curl --json '{"args": [2, 3]}' http://127.0.0.1:PORT/call/add
    curl -N --json '{"args": [3]}' -H 'Accept: application/x-ndjson' http://127.0.0.1:PORT/call/countdown
    curl http://127.0.0.1:PORT/openapi.json
"""

import sys
import time
from collections.abc import Iterator

import undertow

server = undertow.Server(name="web-demo")


@server.register
def add(x: float, y: float = 1.0) -> float:
    """Add two numbers."""
    return x + y


@server.register
def countdown(n: int) -> Iterator[int]:
    """Count down from n, printing as it goes; each number is streamed as it is yielded."""
    for i in range(n, 0, -1):
        print(f"counting {i}", flush=True)
        time.sleep(0.05)
        yield i


if __name__ == "__main__":
    # HTTP on the same interface as ZeroMQ: 127.0.0.1 unless told otherwise
    server.serve_forever(http_port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
