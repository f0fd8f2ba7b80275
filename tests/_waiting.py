"""Waiting in tests without sleeping for a guessed time."""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable, Generator


@types.coroutine
def suspend() -> Generator[None, None, None]:
    """Give the event loop one turn, as a coroutine that awaits real work does.

    Test functions use it to show that the server runs coroutines that suspend; it waits for
    nothing: a bare yield, as asyncio's own zero-second pause is.
    """
    yield


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Look at ``condition`` until it holds (True) or ``timeout`` seconds pass (False).

    For state that changes in the background with nothing to wait on, such as descriptors
    that ZeroMQ's reaper thread closes some time after a socket is closed.
    """
    deadline = time.monotonic() + timeout
    idle = threading.Event()  # never set: its wait() is the pause between looks
    while not condition():
        if time.monotonic() > deadline:
            return False
        idle.wait(interval)
    return True
