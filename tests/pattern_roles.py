"""Pattern servers for the tests, one per process: ``python tests/pattern_roles.py ROLE ...``.

Each prints a line with ``serving`` when it is ready (the tests' readiness handshake) and
stops on SIGTERM.

- ``master NAME [TIMEOUT] [hooks]``: a master (workers silent TIMEOUT s count as dead);
  ``hooks``: scatter splits a string in words, gather upper-cases.
- ``worker NAME SLOTS [DELAY]``: a worker of ``square``, ``echo``, ``words``, ``fail3``,
  ``cached``; DELAY: seconds each ``square`` takes (its work; 0: none).
- ``sink NAME``: a sink.
- ``stage NAME``: the service NAME of ``pattern_stages.py`` (step1, step2, last).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import undertow
from undertow.patterns import MasterWorker, Sink


def square(x: int) -> int:
    return x * x


def echo(x: Any) -> Any:
    return x


def words(text: str) -> int:
    return len(text)


def fail3(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"{x} is a multiple of three")
    return x


def main(role: str, name: str, *rest: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if role == "master":
        timeout = float(rest[0]) if rest else 10.0
        hooks: dict[str, Any] = {}
        if len(rest) > 1 and rest[1] == "hooks":
            hooks = {"scatter": str.split, "gather": str.upper}
        master = undertow.Master(name, worker_timeout=timeout, **hooks)
        address = master.start()
        print(f"serving master {address}", flush=True)
        stop.wait()
        master.stop()
        return
    if role == "stage":  # one service of pattern_stages.py, in a process of its own
        import asyncio

        import pattern_stages  # type: ignore[import-not-found]  # next to this file
        from undertow.service import ServiceHost

        host = ServiceHost([getattr(pattern_stages, name)()], quiet=True)

        def ready(instances: Any) -> None:
            print(f"serving stage {instances[0].address}", flush=True)

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, host.stop)
            await host.serve(ready)

        asyncio.run(serve())
        return
    if role == "sink":
        sink = Sink(name)
        address = sink.start()
        print(f"serving sink {address}", flush=True)
        stop.wait()
        sink.stop()
        return
    slots = int(rest[0]) if rest else 1
    delay = float(rest[1]) if len(rest) > 1 else 0.0

    def slow_square(x: int) -> int:
        if delay:  # the message's work: a worker killed while it runs holds messages
            time.sleep(delay)
        return x * x

    def upper(x: str) -> str:
        return x.upper()

    def cached(key: str) -> Any:
        return undertow.connect(name).get(key)

    functions: dict[str, Callable[..., Any]] = {
        "square": slow_square,
        "echo": echo,
        "words": words,
        "fail3": fail3,
        "upper": upper,
        "cached": cached,
    }
    worker = MasterWorker(name, functions, slots=slots, beat=0.2).start()
    print(f"serving worker {name}", flush=True)
    stop.wait()
    worker.stop()


if __name__ == "__main__":
    main(*sys.argv[1:])
