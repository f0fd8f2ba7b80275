"""What the measurements share: the raw REQ/REP floor, timing, statistics and checks."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import zmq

RAW_PAYLOAD = b"0123456789abcdefghij"  # 20 bytes, about an echo(42) request's body


def zmq_socket(kind: int, address: str) -> zmq.Socket[Any]:
    """A socket of ``kind`` connected to ``address``, with no linger and no high-water marks."""
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    return sock


def raw_rep_echo(sock: zmq.Socket[Any]) -> Callable[[], object]:
    """One round trip of ``RAW_PAYLOAD`` on a REQ socket: the latency floor."""

    def call() -> object:
        sock.send(RAW_PAYLOAD)
        return sock.recv()

    return call


def check(value: object, expected: object) -> None:
    """Fail loudly when a remote call answered something unexpected."""
    if value != expected:
        raise RuntimeError(f"expected {expected!r}, got {value!r}")


def latency_stats(samples_ns: list[int]) -> dict[str, float]:
    """p50, p99, mean and min of round trips given in nanoseconds, in microseconds."""
    arr = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    p50, p99 = np.percentile(arr, [50, 99])
    return {
        "calls": len(samples_ns),
        "p50_us": round(float(p50), 2),
        "p99_us": round(float(p99), 2),
        "mean_us": round(float(arr.mean()), 2),
        "min_us": round(float(arr.min()), 2),
    }


def time_calls(call: Callable[[], object], n: int, into: list[int]) -> None:
    """Make ``n`` calls one after the other, appending each one's duration (ns) to ``into``."""
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        call()
        into.append(clock() - t0)


def interleaved_latency(
    calls: Mapping[str, Callable[[], object]],
    *,
    per_round: int,
    rounds: int,
    warmup: int,
    turn: Sequence[str] = (),
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Sequential round trips, systems interleaved round by round to share any drift.

    Args:
        calls: the round trip of each system, by name.
        per_round: calls of each system in a round (in a turn: times the turn is taken).
        rounds: how many rounds.
        warmup: untimed calls of each system first.
        turn: the systems' names in the order they are called one at a time (a name may
            recur), taken ``per_round`` times a round, rather than a block of ``per_round``
            calls each: the finest interleaving, for differences smaller than the machine's
            drift from one block to the next; a turn also decides which call follows which.

    Returns:
        The statistics of each system's round trips, and its p50 (ns) in every round.
    """
    for call in calls.values():
        time_calls(call, warmup, [])
    samples: dict[str, list[int]] = {name: [] for name in calls}
    round_p50: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        blocks: dict[str, list[int]] = {name: [] for name in calls}
        if turn:
            gc.collect()
            for _ in range(per_round):
                for name in turn:
                    time_calls(calls[name], 1, blocks[name])
        else:
            for name, call in calls.items():
                gc.collect()
                time_calls(call, per_round, blocks[name])
        for name, block in blocks.items():
            samples[name] += block
            round_p50[name].append(float(np.median(block)))
    return {name: latency_stats(s) for name, s in samples.items()}, round_p50


def run_interleaved(steps: Mapping[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Time every step in turn, run after run; the seconds of each step's runs.

    What a step returns is dropped after its clock stops, so freeing it is not timed.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            gc.collect()
            start = time.perf_counter()
            kept = step()
            times[name].append(time.perf_counter() - start)
            del kept
    return times
