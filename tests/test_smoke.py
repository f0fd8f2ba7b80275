"""The basic round trip, in one process."""

from __future__ import annotations

import undertow


def test_call_returns_result(serve):
    server = undertow.Server(name="t")
    server.register("add", lambda x, y: x + y)
    address = serve(server)
    with undertow.connect(address, timeout=10) as client:
        assert client.add(2, 3) == 5
