"""undertow in the messaging-pattern benchmark: a master and two workers; three chained stages.

A: ``undertow.Master("bench")`` and two ``MasterWorker`` processes serving ``echo``; the client
streams the messages with ``undertow.stream(messages, "bench.echo", zero_copy=True)``, answers
in completion order. B: three services (``stage1``, ``stage2``, ``stage3``, each a process of
its own, each with ``echo``); the client streams through ``Pipeline("stage1.echo",
"stage2.echo", "stage3.echo")``, each stage sending straight to the next and the last to the
client. ``zero_copy=True``: bytes of 64 KiB or more reach the functions and the client as
memoryviews of the frames that brought them, as the raw floor's relays handle them.

Every process of a measurement shares one undertow home in a temporary directory (its
registry, the user's own token), so nothing outside the benchmark is touched. Children run as
``python -m bench._patterns_undertow ROLE NAME`` and print ``serving ...`` once registered.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from typing import Any

from bench._patterns_peers import (
    Answers,
    Messages,
    Procs,
    deadline_left,
    rate,
    warmup_count,
    window_for,
)

READY = rb"serving (\S+)"


def echo(message: Any) -> Any:
    return message


def _environment(home: str) -> dict[str, str]:
    env = dict(os.environ, UNDERTOW_HOME=home, PYTHONPATH=os.getcwd())
    for name in ("UNDERTOW_BACKEND", "UNDERTOW_TOKEN", "UNDERTOW_TOKENS"):
        env.pop(name, None)
    return env


def _run(topology: str, n: int, size: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    procs = Procs()
    old_home = os.environ.get("UNDERTOW_HOME")
    with tempfile.TemporaryDirectory(prefix="undertow-bench-") as home:
        os.environ["UNDERTOW_HOME"] = home
        env = _environment(home)
        try:
            _start(procs, topology, env, deadline)
            return _measure(topology, n, size, deadline)
        finally:
            import undertow

            undertow.patterns.shutdown()
            procs.stop_all()
            if old_home is None:
                os.environ.pop("UNDERTOW_HOME", None)
            else:
                os.environ["UNDERTOW_HOME"] = old_home


def _start(procs: Procs, topology: str, env: dict[str, str], deadline: float) -> None:
    me = [sys.executable, "-m", "bench._patterns_undertow"]
    from bench._jobs_procs import Child

    def start(name: str, args: list[str]) -> None:
        child = Child(name, args, env=env)
        procs.running.append(child)
        child.wait_ready(READY, deadline)

    if topology == "A":
        start("master", [*me, "master", "bench"])
        for i in range(2):
            start(f"worker{i}", [*me, "worker", "bench"])
    else:
        for i in (1, 2, 3):
            start(f"stage{i}", [*me, "stage", f"stage{i}"])


def _measure(topology: str, n: int, size: int, deadline: float) -> float:
    import undertow

    target: Any = "bench.echo"
    if topology == "B":
        target = undertow.Pipeline("stage1.echo", "stage2.echo", "stage3.echo")
    window = window_for(size)
    warm = Messages(warmup_count(size), size)
    _pass(undertow, warm, target, window, deadline)
    messages = Messages(n, size, seed=warm.tail)
    started = time.perf_counter()
    _pass(undertow, messages, target, window, deadline)
    return rate(n, time.perf_counter() - started)


def _pass(undertow: Any, messages: Messages, target: Any, window: int, deadline: float) -> None:
    answers = Answers(messages)
    stream = undertow.stream(
        messages.items, target, window=window, timeout=deadline_left(deadline), zero_copy=True
    )
    for result in stream:
        answers.add(result.value)
    answers.finish()


def measure_undertow_a(n: int, size: int, timeout: float) -> float:
    return _run("A", n, size, timeout)


def measure_undertow_b(n: int, size: int, timeout: float) -> float:
    return _run("B", n, size, timeout)


# --- the children ----------------------------------------------------------------------------


def _child(role: str, name: str) -> None:
    import undertow
    from undertow.service import Expose, ServiceHost

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if role == "master":
        master = undertow.Master(name)
        print(f"serving {master.start()}", flush=True)
        stop.wait()
        master.stop()
    elif role == "worker":
        worker = undertow.MasterWorker(name, [echo]).start()
        print("serving worker", flush=True)
        stop.wait()
        worker.stop()
    else:

        @Expose(name=name)
        class Stage:
            @Expose()
            def echo(self, message: Any) -> Any:
                return message

        host = ServiceHost([Stage()], name=name, quiet=True)
        thread = threading.Thread(target=host.serve_forever, daemon=True)
        thread.start()
        while not host.instances:
            if stop.wait(0.01):
                return
        print(f"serving {host.instances[0].address}", flush=True)
        stop.wait()
        host.stop()
        thread.join(10)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
