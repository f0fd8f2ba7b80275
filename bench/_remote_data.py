"""Remote data: ten rows through a pointer whatever the array's size, and a whole array fetched.

Each array is made by a server of its own as float64 ``rows x 128`` with ``return_pointer``,
so no array crosses the wire when it is made: two ``undertow-data`` servers keep theirs in
memory (a 4 GiB limit), ``undertow-data-spill`` writes it to disk as ``.npy`` and reads it back
memory-mapped. Each figure is set against a floor measured in the same run:

- ``ptr[0:10]`` of a 1 GB, a 1 MB and a spilled 1 GB array, one call at a time in a fixed
  turn with a raw pyzmq REQ/REP round trip: p50s, their ratio to the raw floor, and the 1 GB
  array's to the 1 MB array's (about 1 when a slice costs the same whatever the size). On a
  small machine a call's latency depends on the one before it (a server or thread that has just
  worked answers sooner), so each array has a server of its own, and the turn (``TURN``) puts
  the same calls before each array's slices: blocks of calls per system, or a turn in one
  order, moved the 1 GB / 1 MB ratio by 5-40% either way.
- ``ptr.fetch()`` of the 1 GB arrays against a raw ZeroMQ download of as many bytes
  (DEALER/ROUTER, ``copy=False``) and ``numpy.copy`` of the fetched array (memcpy); best run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import zmq

import undertow
from bench._common import check, interleaved_latency, raw_rep_echo, run_interleaved, zmq_socket
from bench._servers import CMD_DOWN, send_frames

GB = 1e9  # GB = 10**9 bytes, as MB is 10**6 in the rest of the benchmark
COLUMNS = 128
ROWS = {"1mb": 1_000_000 // (COLUMNS * 8), "1gb": 1_000_000_000 // (COLUMNS * 8)}
HEAD = slice(0, 10)
#: the servers, each one's array and where it stays
ARRAYS = {
    "pointer_1gb": ("undertow-data#1gb", "1gb"),
    "pointer_1mb": ("undertow-data#1mb", "1mb"),
    "pointer_1gb_spilled": ("undertow-data-spill", "1gb"),
}
KINDS = tuple(kind for kind, _ in ARRAYS.values())
#: the order of the calls: each array's slice follows the raw round trip once and the other
#: array's slice once (right after the raw one, a slice measured ~5% slower)
TURN = (
    "raw_zmq",
    "pointer_1gb",
    "pointer_1mb",
    "pointer_1gb_spilled",
    "raw_zmq",
    "pointer_1mb",
    "pointer_1gb",
    "pointer_1gb_spilled",
)

TARGET_SLICE_RATIO = 1.1
TARGET_FETCH_GBPS = 1.0
#: names of the targets, in results.json and the summary
SLICE_GOAL = "10 rows through a pointer, p50 of a 1 GB / a 1 MB array"
FETCH_GOAL = "1 GB fetch GB/s"


def _ratio(value: float, floor: float) -> float:
    return round(value / floor, 3)


def measure_slices(
    raw: Callable[[], object],
    pointers: Mapping[str, undertow.Pointer],
    *,
    calls: int,
    rounds: int,
    warmup: int,
) -> dict[str, Any]:
    """p50 of ``ptr[0:10]`` for each pointer, interleaved with the raw REQ/REP floor."""
    expected = np.arange(HEAD.stop * COLUMNS, dtype=np.float64).reshape(-1, COLUMNS).tolist()
    heads: dict[str, Callable[[], object]] = {"raw_zmq": raw}
    for name, ptr in pointers.items():
        check(ptr[HEAD].tolist(), expected)
        heads[name] = functools.partial(ptr.__getitem__, HEAD)
    stats, round_p50 = interleaved_latency(
        heads, per_round=calls // (rounds * 2), rounds=rounds, warmup=warmup, turn=TURN
    )  # every system comes twice in a turn
    p50 = {name: s["p50_us"] for name, s in stats.items()}
    bigger = [name for name in pointers if name != "pointer_1mb"]
    return {
        **stats,
        "ratios_p50_vs_raw": {name: _ratio(p50[name], p50["raw_zmq"]) for name in pointers},
        "ratios_p50_vs_1mb": {name: _ratio(p50[name], p50["pointer_1mb"]) for name in bigger},
        # the same ratio within each round: its spread shows how much background load moved it
        "per_round_ratios_p50_vs_1mb": {
            name: [
                _ratio(x, f) for x, f in zip(round_p50[name], round_p50["pointer_1mb"], strict=True)
            ]
            for name in bigger
        },
        "notes": {
            "raw_zmq": "pyzmq REQ/REP, 20-byte payload echoed",
            "pointer": "ptr[0:10] of a float64 array of rows x 128 that make(rows, 128) left "
            "on its server (return_pointer), each array on a server of its own: the server "
            "slices, only the 10 rows (10 KB) travel; sync client, no token",
            "order": "one call at a time, in turns of raw, 1 GB, 1 MB, spilled, raw, 1 MB, "
            "1 GB, spilled: each array's slice follows the raw round trip once and the other "
            "array's once, as a call's latency depends on the one before it here",
            "pointer_1gb_spilled": "the array's server has a memory limit of 0, so it is in a "
            ".npy file, read memory-mapped on every access",
        },
    }


def measure_fetch(
    dealer: zmq.Socket[Any], pointers: Mapping[str, undertow.Pointer], *, runs: int
) -> dict[str, Any]:
    """``ptr.fetch()`` of the 1 GB arrays against a raw download and ``numpy.copy``."""
    nbytes = pointers["pointer_1gb"].nbytes
    shape, last = (ROWS["1gb"], COLUMNS), float(nbytes // 8 - 1)

    def raw_download() -> object:
        send_frames(dealer, [CMD_DOWN, str(nbytes).encode()])
        frame = dealer.recv(copy=False)
        check(len(frame.buffer), nbytes)
        return frame

    def fetch(ptr: undertow.Pointer) -> Callable[[], object]:
        def step() -> object:
            got = ptr.fetch()
            check((got.shape, float(got[-1, -1])), (shape, last))
            return got

        return step

    steps: dict[str, Callable[[], object]] = {
        "raw_zmq_download": raw_download,
        "pointer_fetch": fetch(pointers["pointer_1gb"]),
        "pointer_fetch_spilled": fetch(pointers["pointer_1gb_spilled"]),
    }
    raw_download()  # the raw server makes its blob once, before any timing
    steps["pointer_fetch_spilled"]()  # a first read of the file
    source = steps["pointer_fetch"]()
    steps["numpy_copy"] = functools.partial(np.copy, source)
    times = run_interleaved(steps, runs)
    result: dict[str, Any] = {
        name: {
            "best_s": round(min(t), 4),
            "gb_per_s": round(nbytes / min(t) / GB, 3),
            "all_s": [round(x, 4) for x in t],
        }
        for name, t in times.items()
    }
    gbps = {name: entry["gb_per_s"] for name, entry in result.items()}
    result["ratios"] = {
        f"{name}_vs_{floor}": _ratio(gbps[name], gbps[floor])
        for name in ("pointer_fetch", "pointer_fetch_spilled")
        for floor in ("raw_zmq_download", "numpy_copy")
    }
    result["notes"] = {
        "pointer_fetch": "ptr.fetch(): the server sends the array as an out-of-band ZeroMQ "
        "frame, the client wraps it without a copy; the spilled one is sent from its "
        "memory-mapped .npy file",
        "raw_zmq_download": "DEALER -> ROUTER, a tiny request and a frame of as many bytes "
        "back, copy=False; the server's blob is allocated once",
        "numpy_copy": "numpy.copy of the fetched 1 GB array in this process (allocates: page "
        "faults count, as they do for a fetch)",
        "order": "each run times every step in turn; the best run counts; a step's result is "
        "freed after its clock stops",
    }
    return {"bytes": nbytes, "runs": runs, **result}


def measure_remote_data(
    addresses: Mapping[str, str], *, calls: int, rounds: int, warmup: int, runs: int
) -> dict[str, Any]:
    """Make the arrays on their servers, measure slices and fetches, then delete them."""
    with contextlib.ExitStack() as stack:
        rep = zmq_socket(zmq.REQ, addresses["raw-rep"])
        stack.callback(rep.close)
        dealer = zmq_socket(zmq.DEALER, addresses["raw-router"])
        stack.callback(dealer.close)
        pointers: dict[str, undertow.Pointer] = {}
        for name, (kind, size) in ARRAYS.items():
            client = undertow.connect(addresses[kind], token=False, timeout=60)
            stack.enter_context(client)
            pointers[name] = client.make(ROWS[size], COLUMNS)
            stack.callback(pointers[name].delete)  # frees the server's memory, or its file
        sizes = {name: ptr.nbytes for name, ptr in pointers.items()}
        slices = measure_slices(
            raw_rep_echo(rep), pointers, calls=calls, rounds=rounds, warmup=warmup
        )
        return {
            "arrays": {"columns": COLUMNS, "dtype": "float64", "bytes": sizes},
            "slice": slices,
            "fetch": measure_fetch(dealer, pointers, runs=runs),
        }


def summary_rows(section: dict[str, Any], goal: Callable[[str, str], str]) -> list[str]:
    """The section's rows of the summary table; ``goal(name, text)`` marks a target."""
    sl, fe = section["slice"], section["fetch"]
    raw_us, small_us = sl["raw_zmq"]["p50_us"], sl["pointer_1mb"]["p50_us"]
    rows = [
        f"| 10 rows of a 1 MB array through a pointer (ptr[0:10]), p50 | {raw_us:.0f} µs "
        f"(zmq REQ/REP) | {small_us:.0f} µs | {sl['ratios_p50_vs_raw']['pointer_1mb']:.2f}x "
        "| | | context only |"
    ]
    for name, what, target in (
        ("pointer_1gb", "a 1 GB array", goal(SLICE_GOAL, f"<= {TARGET_SLICE_RATIO}x")),
        ("pointer_1gb_spilled", "a spilled 1 GB array (memory-mapped)", "context only"),
    ):
        rows.append(
            f"| 10 rows of {what} through a pointer, p50 | {small_us:.0f} µs (the 1 MB array's) "
            f"| {sl[name]['p50_us']:.0f} µs ({sl['ratios_p50_vs_raw'][name]:.2f}x raw) "
            f"| {sl['ratios_p50_vs_1mb'][name]:.2f}x | | | {target} |"
        )
    raw_gbps, ratios = fe["raw_zmq_download"]["gb_per_s"], fe["ratios"]
    for name, what, target in (
        ("pointer_fetch", "a 1 GB array", goal(FETCH_GOAL, f">= {TARGET_FETCH_GBPS:.0f} GB/s")),
        ("pointer_fetch_spilled", "a spilled 1 GB array", "context only"),
    ):
        rows.append(
            f"| full fetch of {what} (ptr.fetch()) | {raw_gbps:.2f} GB/s (zmq copy=False) "
            f"| {fe[name]['gb_per_s']:.2f} GB/s | {ratios[f'{name}_vs_raw_zmq_download']:.2f}x "
            f"| | | {target} |"
        )
    rows.append(
        f"| numpy.copy of 1 GB (memcpy) | {fe['numpy_copy']['gb_per_s']:.2f} GB/s "
        f"| fetch {ratios['pointer_fetch_vs_numpy_copy']:.2f}x, spilled "
        f"{ratios['pointer_fetch_spilled_vs_numpy_copy']:.2f}x of it | | | | |"
    )
    return rows
