"""Messaging patterns, the peers and the floor: what every system is measured with, and a CLI.

Two topologies, each measured in messages per second end to end (a client sends N messages and
receives N answers; N over the time from the first send to the last answer):

* ``A``, master + 2 workers: the client streams to a master, which spreads the messages over
  two worker processes; each worker answers the message unchanged, and the answers come back to
  the client (through the master, or as the system does it).
* ``B``, 3-stage pipeline: client -> stage 1 -> stage 2 -> stage 3 -> client, each stage a
  process of its own that passes the message on unchanged.

Payloads are ``bytes``: 100 B (N about 20,000) and 1 MB (N 1,000; 300 for Ray and Dask).
Message ``i`` is its index (8 bytes, big-endian) followed by the same random tail, so every
answer is checked (``Answers``): its index is new and in range, its length right, and its
whole content for a sample (every answer up to 4 KiB, every 16th above). A measurement raises
when an answer is missing, repeated or wrong. Messages are made before the clock starts; a
warm-up of a few hundred (a hundred at 1 MB) goes first.

Systems (each ``measure_<system>_<topology>(n, size, timeout) -> msgs/s``, in its own module):

* ``raw``: pyzmq PUSH/PULL through the same topology (``bench._patterns_raw``), the floor;
* ``pylm``: pylm 0.14's Master/Worker and its Server/Pipeline chain (``bench._patterns_pylm``);
* ``ray``: an ``ActorPool`` of 2 actors; three chained actors (``bench._patterns_ray_dask``);
* ``dask``: ``client.map`` on a 2-worker ``LocalCluster``; three chained maps (same module).

``timeout`` bounds a measurement, its processes' start included (but not ``ray.init`` nor the
start of Dask's cluster); past it the measurement raises TimeoutError. Either way every process
it started is stopped before it returns (SIGTERM to the child's process group, SIGKILL after
10 s; Ray and Dask shut down their own).

Flow control: where the client sends on its own (raw, pylm, ray B) it keeps at most
``window_for(size)`` messages in flight (500 of 100 B; 16 of 1 MB), sending one more for each
answer. Ray's ActorPool keeps one call per actor in flight (that is how it works); Dask's
``client.map`` submits everything at once.

Run from the repository root::

    python -m bench._patterns_peers            # every system x topology x size, ~3 minutes
    python -m bench._patterns_peers --quick    # smaller N, ~1.5 minutes (Ray starts 4 times)
    python -m bench._patterns_peers --systems raw,pylm --topologies A
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench._jobs_procs import Child

#: the length of the index at the head of every message
INDEX_BYTES = 8
#: answers up to this size are all compared in full; larger ones one in SAMPLE_EVERY
FULL_CHECK_MAX = 4096
SAMPLE_EVERY = 16
#: bytes in flight a client aims at (flow control), and the most messages in flight
WINDOW_BYTES = 16 * 1024 * 1024
WINDOW_MAX = 500
SMALL, LARGE = 100, 1024 * 1024

Measure = Callable[[int, int, float], float]


def window_for(size: int) -> int:
    """How many messages of ``size`` bytes a client keeps in flight."""
    return max(4, min(WINDOW_MAX, WINDOW_BYTES // max(size, 1)))


def warmup_count(size: int) -> int:
    """Messages sent (and checked) before the clock starts."""
    return 300 if size <= FULL_CHECK_MAX else 100


class Messages:
    """The ``n`` messages of one run, made up front: index (8 bytes) + a random tail."""

    def __init__(self, n: int, size: int, *, seed: bytes | None = None) -> None:
        if size < INDEX_BYTES:
            raise ValueError(f"a message holds at least its {INDEX_BYTES}-byte index")
        self.n, self.size = n, size
        self.tail = seed if seed is not None else os.urandom(size - INDEX_BYTES)
        self.items = [self.make(i) for i in range(n)]

    def make(self, i: int) -> bytes:
        return i.to_bytes(INDEX_BYTES, "big") + self.tail


class Answers:
    """Checks the answers to ``Messages`` as they come: ``add`` each, ``finish`` at the end."""

    def __init__(self, messages: Messages) -> None:
        self.messages = messages
        self.seen = bytearray(messages.n)
        self.count = 0
        self.every = 1 if messages.size <= FULL_CHECK_MAX else SAMPLE_EVERY

    def add(self, answer: bytes | memoryview) -> None:
        view = memoryview(answer)
        if len(view) != self.messages.size:
            raise RuntimeError(f"answer of {len(view)} bytes, sent {self.messages.size}")
        index = int.from_bytes(view[:INDEX_BYTES], "big")
        if index >= self.messages.n or self.seen[index]:
            raise RuntimeError(f"answer {index} is out of range or came twice")
        if index % self.every == 0 and view != self.messages.items[index]:
            raise RuntimeError(f"answer {index} differs from the message sent")
        self.seen[index] = 1
        self.count += 1

    def finish(self) -> None:
        if self.count != self.messages.n:
            missing = self.messages.n - self.count
            raise RuntimeError(f"{missing} of {self.messages.n} answers did not come")


def check_all(messages: Messages, answers: list[bytes]) -> None:
    """Check a whole list of answers (systems that hand them back at the end)."""
    checker = Answers(messages)
    for answer in answers:
        checker.add(answer)
    checker.finish()


def rate(n: int, seconds: float) -> float:
    """Messages per second; a zero interval cannot happen but must not divide by zero."""
    return n / max(seconds, 1e-9)


def deadline_left(deadline: float) -> float:
    """Seconds to ``deadline`` (monotonic); TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the measurement took longer than its timeout")
    return left


class Procs:
    """The child processes of one measurement: ``start`` waits for a child's readiness line,
    ``stop_all`` (in ``finally``) ends every one (SIGTERM, then SIGKILL, its whole group)."""

    def __init__(self) -> None:
        self.running: list[Child] = []

    def start(self, name: str, args: Sequence[str], ready: bytes, deadline: float) -> list[str]:
        """Start ``args``; once a line matches ``ready`` (a regex), the groups it caught."""
        child = Child(name, args)
        self.running.append(child)
        try:
            match = child.wait_ready(ready, deadline)
        except RuntimeError as exc:
            if time.monotonic() >= deadline:  # a timeout, not a child that failed
                raise TimeoutError(f"{name}: no {ready!r} line within the timeout") from exc
            raise
        return [group.decode() for group in match.groups()]

    def stop_all(self) -> None:
        while self.running:
            child = self.running.pop()
            with contextlib.suppress(Exception):
                child.stop()


# --- the CLI ---------------------------------------------------------------------------------

#: system -> (module with its measure functions, the package it needs)
SYSTEMS: dict[str, tuple[str, str]] = {
    "undertow": ("bench._patterns_undertow", "undertow"),
    "raw": ("bench._patterns_raw", "zmq"),
    "pylm": ("bench._patterns_pylm", "pylm"),
    "ray": ("bench._patterns_ray_dask", "ray"),
    "dask": ("bench._patterns_ray_dask", "distributed"),
}
TOPOLOGIES = ("A", "B")


@dataclass(frozen=True)
class Plan:
    """N for each system and size; the slow systems get fewer messages (the docstring of
    ``plan`` says why)."""

    counts: dict[tuple[str, int], int]
    timeout: float

    def n(self, system: str, size: int) -> int:
        return self.counts.get((system, size), self.counts[("*", size)])


def plan(quick: bool) -> Plan:
    """Full: 20,000 x 100 B and 1,000 x 1 MB (about a second for the fast systems: 300 took
    a third of one, where one stall of the machine moved a figure by 10%), but 5,000 x 100 B
    and 300 x 1 MB for Ray and Dask (each message is a task or an actor call of ~1 ms there,
    and they move 1 MB at 100-400 a second: the full counts would take minutes a cell)."""
    if quick:
        return Plan({("*", SMALL): 2000, ("*", LARGE): 50, ("ray", SMALL): 1000,
                     ("dask", SMALL): 1000}, timeout=60.0)  # fmt: skip
    return Plan({("*", SMALL): 20_000, ("*", LARGE): 1000, ("ray", SMALL): 5000,
                 ("dask", SMALL): 5000, ("ray", LARGE): 300, ("dask", LARGE): 300},
                timeout=120.0)  # fmt: skip


def measure_function(system: str, topology: str) -> Measure:
    """``measure_<system>_<topology>`` from the system's module."""
    module = importlib.import_module(SYSTEMS[system][0])
    found: Measure = getattr(module, f"measure_{system}_{topology.lower()}")
    return found


def installed(system: str) -> bool:
    return importlib.util.find_spec(SYSTEMS[system][1]) is not None


def run_cell(system: str, topology: str, size: int, n: int, timeout: float) -> str:
    """One measurement as a table row: msgs/s (or why it failed) and how long it took, system
    start and stop included."""
    started = time.monotonic()
    try:
        value = f"{measure_function(system, topology)(n, size, timeout):,.0f}"
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        value = f"FAILED ({type(exc).__name__}: {str(exc)[:80]})"
    took = time.monotonic() - started
    label = "100 B" if size == SMALL else "1 MB" if size == LARGE else f"{size} B"
    row = f"| {system} | {topology} | {label} | {n:,} | {value} | {took:.1f} |"
    print(row, file=sys.stderr)  # as it goes: the table is printed at the end
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N (a smoke test)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES), help="A, B or A,B")
    parser.add_argument(
        "--cell", nargs=5, metavar=("SYSTEM", "TOPOLOGY", "SIZE", "N", "TIMEOUT"),
        help="measure one cell; print msgs/s as the last line (bench.patterns runs each so)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.cell:
        system, topology, size, n, timeout = args.cell
        print(measure_function(system, topology)(int(n), int(size), float(timeout)))
        return 0
    chosen = plan(args.quick)
    rows: list[str] = []
    began = time.monotonic()
    for system in args.systems.split(","):
        if not installed(system):
            print(f"{system}: skipped, {SYSTEMS[system][1]} is not installed")
            continue
        for topology in args.topologies.split(","):
            for size in (SMALL, LARGE):
                n = chosen.n(system, size)
                rows.append(run_cell(system, topology, size, n, chosen.timeout))
    print("\n| system | topology | payload | N | msgs/s | seconds |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    print("\n".join(rows))
    print(f"\n{time.monotonic() - began:.0f} s in all (seconds: each cell with its start/stop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
