"""The floor of the messaging-pattern benchmark: pyzmq PUSH/PULL through the same topologies.

A, master + 2 workers: client PUSH -> master PULL; master PUSH -> the workers' PULL (ZeroMQ
spreads round robin); workers PUSH -> master PULL; master PUSH -> client PULL. The master is a
minimal Python relay: one poller over its two PULL sockets, each ready socket drained (up to
``BURST`` messages) onto the PUSH socket of its direction.
B, 3-stage pipeline: client PUSH -> s1 PULL/PUSH -> s2 -> s3 -> client PULL (the client binds
its PULL; each stage binds its own PULL and connects its PUSH to the next one's).

Flow control: the client is one thread that keeps a window of ``window_for(size)`` messages in
flight (500 of 100 B, 16 of 1 MB): it sends until the window is full, then sends one more for
each answer it takes. Every queue on the way (high-water mark 1000) holds at most the window,
so nothing blocks or drops. Frames of 64 KiB and more travel with ``copy=False`` everywhere
(client, master, stages, workers); smaller ones are copied (faster for small frames).

Children run as ``python -m bench._patterns_raw ROLE ...`` and print ``READY`` with the
addresses they bound (port 0 on 127.0.0.1) as their readiness handshake; SIGTERM stops them.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import zmq

from bench._patterns_peers import (
    Answers,
    Messages,
    Procs,
    deadline_left,
    rate,
    warmup_count,
    window_for,
)

#: frames of this size and more are sent and received with copy=False
ZERO_COPY_MIN = 64 * 1024
#: messages the master relays from one socket before it looks at the other
BURST = 64
LOCAL = "tcp://127.0.0.1"

Socket = zmq.Socket[Any]


def bind_any(sock: Socket) -> str:
    """Bind ``sock`` to a port the system picks on 127.0.0.1; the address it got."""
    sock.bind(f"{LOCAL}:*")
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


def forward(src: Socket, dest: Socket, copy: bool, flags: int = 0) -> None:
    """Move one message from ``src`` to ``dest`` (zmq.Again if ``flags`` say not to wait)."""
    if copy:
        dest.send(src.recv(flags))
    else:
        dest.send(src.recv(flags, copy=False), copy=False)


def child_args(module: str, role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, role, *args]


# --- the client (in the benchmark process) --------------------------------------------------


def drive(push: Socket, pull: Socket, messages: Messages, deadline: float) -> float:
    """Send every message with a bounded window in flight and check every answer; the seconds
    from the first send to the last answer."""
    answers = Answers(messages)
    copy = messages.size < ZERO_COPY_MIN
    window, items, n = window_for(messages.size), messages.items, messages.n
    sent = 0
    started = time.perf_counter()
    while answers.count < n:
        while sent < n and sent - answers.count < window:
            push.send(items[sent], 0, copy)
            sent += 1
        if not pull.poll(int(deadline_left(deadline) * 1000) + 1):
            deadline_left(deadline)
            continue
        while answers.count < n:
            try:
                frame = pull.recv(zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                break
            answers.add(frame.buffer if isinstance(frame, zmq.Frame) else frame)
    seconds = time.perf_counter() - started
    answers.finish()
    return seconds


def client_run(push: Socket, pull: Socket, n: int, size: int, deadline: float) -> float:
    """The warm-up, then ``n`` messages of ``size`` bytes timed: messages per second."""
    drive(push, pull, Messages(warmup_count(size), size), deadline)
    messages = Messages(n, size)
    return rate(n, drive(push, pull, messages, deadline))


def client_sockets(ctx: zmq.Context[Any]) -> tuple[Socket, Socket]:
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    for sock in (push, pull):
        sock.setsockopt(zmq.LINGER, 0)
    return push, pull


def _flag(size: int) -> str:
    return "zero-copy" if size >= ZERO_COPY_MIN else "copy"


def measure_raw_a(n: int, size: int, timeout: float) -> float:
    """Topology A on pyzmq: master relay + 2 echo workers; messages per second."""
    deadline = time.monotonic() + timeout
    children, ctx = Procs(), zmq.Context()
    me = "bench._patterns_raw"
    try:
        inbound, work, back, out = children.start(
            "raw-master", child_args(me, "master", _flag(size)),
            rb"READY (\S+) (\S+) (\S+) (\S+)\n", deadline,
        )  # fmt: skip
        for k in range(2):
            children.start(
                f"raw-worker{k}", child_args(me, "relay", _flag(size), back, work),
                rb"READY\n", deadline,
            )  # fmt: skip
        push, pull = client_sockets(ctx)
        push.connect(inbound)
        pull.connect(out)
        return client_run(push, pull, n, size, deadline)
    finally:
        children.stop_all()
        ctx.destroy(linger=0)


def measure_raw_b(n: int, size: int, timeout: float) -> float:
    """Topology B on pyzmq: three relay stages in a chain; messages per second."""
    deadline = time.monotonic() + timeout
    children, ctx = Procs(), zmq.Context()
    try:
        push, pull = client_sockets(ctx)
        target = bind_any(pull)
        for stage in (3, 2, 1):
            [target] = children.start(
                f"raw-stage{stage}",
                child_args("bench._patterns_raw", "relay", _flag(size), target),
                rb"READY (\S+)\n", deadline,
            )  # fmt: skip
        push.connect(target)
        return client_run(push, pull, n, size, deadline)
    finally:
        children.stop_all()
        ctx.destroy(linger=0)


# --- the children ---------------------------------------------------------------------------


def run_relay(copy: bool, push_to: str, pull_from: str | None) -> None:
    """A stage or a worker: PULL (bound, or connected to ``pull_from``) -> PUSH ``push_to``."""
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    push.connect(push_to)
    if pull_from is None:
        print(f"READY {bind_any(pull)}", flush=True)
    else:
        pull.connect(pull_from)
        print("READY", flush=True)
    while True:
        forward(pull, push, copy)


def run_master(copy: bool) -> None:
    """The master of A: client -> workers and workers -> client, one poller for both."""
    ctx = zmq.Context()
    inbound, back = ctx.socket(zmq.PULL), ctx.socket(zmq.PULL)
    work, out = ctx.socket(zmq.PUSH), ctx.socket(zmq.PUSH)
    addresses = [bind_any(sock) for sock in (inbound, work, back, out)]
    print("READY", *addresses, flush=True)
    route = {inbound: work, back: out}
    poller = zmq.Poller()
    for sock in route:
        poller.register(sock, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            with contextlib.suppress(zmq.Again):
                for _ in range(BURST):
                    forward(sock, route[sock], copy, zmq.NOBLOCK)


def main(argv: list[str]) -> None:
    role, copy = argv[0], argv[1] == "copy"
    if role == "master":
        run_master(copy)
    elif role == "relay":
        run_relay(copy, argv[2], argv[3] if len(argv) > 3 else None)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
