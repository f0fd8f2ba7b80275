"""A/B of two checkouts on the small-call rows, in one run: ``python -m bench.ab --base DIR``.

Compares the undertow of this repository (B, "after") with the one of another checkout (A,
"before"; make one with ``git worktree add /tmp/base REV``). Each round runs, for A and then
for B, a server process and a client process that import undertow from that checkout's
``src``, next to a raw pyzmq REQ/REP echo measured in the same round as the floor. Rounds
alternate so that background load falls on both alike; the output gives each round's figures
and their medians, and the ratio B/A of each row.

Rows: ``latency`` (p50 of sequential ``client.echo(42)``, µs), ``signed`` (the same with a
token: every message signed), ``window`` (calls per second
with 64 ``client.echo.submit(42)`` futures in flight, oldest first) and ``http`` (p50 of
``POST /call/echo`` with a JSON body on a kept-alive connection, µs); ``latency_cpu`` and
``http_cpu``: the server process's CPU time per call during those runs (every thread, µs),
steadier than wall time on a shared machine; ``memkv``: seconds of the memkv example's
10,000 puts through its discovered service (``bench._servers memkv`` of each checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the A/B server's one token (a loopback benchmark's secret)
TOKEN = "ab.Qm3xV9nL2rT7yU1iO5pK8sD4fG6hJ0zCwE3rT5y"  # noqa: S105

SERVER = textwrap.dedent(
    """
    import sys, time, undertow
    # a token, and callers without one served too: the same server answers both latency rows
    server = undertow.Server(name="ab", token=sys.argv[1], allow_anonymous=True)

    @server.register
    def echo(x):
        return x

    @server.register
    def cpu():
        return time.process_time()  # the server process's CPU time, every thread

    address = server.start("tcp://127.0.0.1:0", http_port=0)
    print(address, server.http_address, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()
    """
)

CLIENT = textwrap.dedent(
    """
    import collections, http.client, json, sys, time, urllib.parse, undertow
    address, http_address, calls, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    client = undertow.connect(address, token=False)
    signed = undertow.connect(address, token=token)
    for _ in range(500):
        client.echo(42)
        signed.echo(42)
    signed_times = []
    for _ in range(calls):
        t = time.perf_counter()
        signed.echo(42)
        signed_times.append(time.perf_counter() - t)
    signed_times.sort()
    signed.close()
    times = []
    cpu0 = client.cpu()
    for _ in range(calls):
        t = time.perf_counter()
        client.echo(42)
        times.append(time.perf_counter() - t)
    latency_cpu = (client.cpu() - cpu0) / calls * 1e6
    times.sort()
    latency = times[len(times) // 2] * 1e6
    pending = collections.deque()
    total, window = calls * 4, 64
    t = time.perf_counter()
    for _ in range(total):
        if len(pending) >= window:
            assert pending.popleft().result(60) == 42
        pending.append(client.echo.submit(42))
    while pending:
        assert pending.popleft().result(60) == 42
    rate = total / (time.perf_counter() - t)
    where = urllib.parse.urlsplit(http_address)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    http_times = []
    cpu0 = 0.0
    for i in range(calls // 2 + 200):
        if i == 200:
            cpu0 = client.cpu()
        t = time.perf_counter()
        conn.request("POST", "/call/echo", b'{"args": [42]}', headers)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
        if i >= 200:
            http_times.append(time.perf_counter() - t)
    http_cpu = (client.cpu() - cpu0) / len(http_times) * 1e6
    http_times.sort()
    client.close()
    print(json.dumps({"latency": latency, "window": rate,
                      "signed": signed_times[len(signed_times) // 2] * 1e6,
                      "http": http_times[len(http_times) // 2] * 1e6,
                      "latency_cpu": latency_cpu, "http_cpu": http_cpu}))
    """
)

MEMKV = textwrap.dedent(
    """
    import gc, json, time
    from undertow.service import ServiceModule
    kv = ServiceModule.discover("MemKeyValue", timeout=30)
    for i in range(300):
        kv.put(key=-i, value=i)
    kv.clear()
    gc.collect()
    started = time.perf_counter()
    for i in range(10_000):
        kv.put(key=i, value=i * i)
    print(json.dumps({"memkv": time.perf_counter() - started}))
    """
)

RAW_SERVER = textwrap.dedent(
    """
    import sys, zmq
    rep = zmq.Context().socket(zmq.REP)
    print(rep.bind_to_random_port("tcp://127.0.0.1"), flush=True)
    while True:
        msg = rep.recv()
        rep.send(msg)
        if msg == b"stop":
            break
    """
)

RAW_CLIENT = textwrap.dedent(
    """
    import sys, time, zmq
    port, calls = sys.argv[1], int(sys.argv[2])
    req = zmq.Context().socket(zmq.REQ)
    req.connect(f"tcp://127.0.0.1:{port}")
    times = []
    for i in range(calls + 500):
        t = time.perf_counter()
        req.send(b"x" * 20)
        req.recv()
        if i >= 500:
            times.append(time.perf_counter() - t)
    req.send(b"stop")
    req.recv()
    times.sort()
    print(times[len(times) // 2] * 1e6)
    """
)


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env.pop("UNDERTOW_TOKEN", None)
    return env


def measure(tree: Path, calls: int) -> dict[str, float]:
    """One round of one checkout: a server process and a client process."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, TOKEN],
        env=_env(tree),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        address, http_address = server.stdout.readline().split()
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, address, http_address, str(calls), TOKEN],
            env=_env(tree),
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        figures: dict[str, float] = json.loads(out.stdout)
        return figures
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)


def measure_memkv(tree: Path) -> dict[str, float]:
    """Seconds of 10,000 puts through the memkv example's service, found by discovery, as
    ``python memkv.py`` makes them (the service served by that checkout's bench server)."""
    with tempfile.TemporaryDirectory() as home:
        env = dict(_env(tree), UNDERTOW_HOME=home)
        server = subprocess.Popen(
            [sys.executable, "-m", "bench._servers", "memkv"],
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            server.stdout.readline()  # the readiness line
            out = subprocess.run(
                [sys.executable, "-c", MEMKV],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            figures: dict[str, float] = json.loads(out.stdout)
            return figures
        finally:
            server.terminate()
            server.wait(30)


def raw_floor(calls: int) -> float:
    """p50 of a raw pyzmq REQ/REP echo between two processes, µs."""
    server = subprocess.Popen([sys.executable, "-c", RAW_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        out = subprocess.run(
            [sys.executable, "-c", RAW_CLIENT, port, str(calls)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        return float(out.stdout)
    finally:
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    trees = {"A": args.base.resolve(), "B": ROOT}
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        row: dict[str, Any] = {"raw": raw_floor(args.calls)}
        for name, tree in trees.items() if i % 2 == 0 else reversed(trees.items()):
            row[name] = measure(tree, args.calls) | measure_memkv(tree)
        rounds.append(row)
        print(json.dumps(row), flush=True)
    report(rounds)


def report(rounds: list[dict[str, Any]]) -> None:
    raw = statistics.median(r["raw"] for r in rounds)
    print(f"\nmedians of {len(rounds)} rounds (raw REQ/REP p50 {raw:.0f} µs):")
    rows = (
        ("latency", "µs p50"),
        ("signed", "µs p50 (a token)"),
        ("latency_cpu", "µs server CPU/call"),
        ("window", "calls/s"),
        ("http", "µs p50"),
        ("http_cpu", "µs server CPU/call"),
        ("memkv", "s for 10,000 puts"),
    )
    for row, unit in rows:
        a = statistics.median(r["A"][row] for r in rounds)
        b = statistics.median(r["B"][row] for r in rounds)
        per_round = ", ".join(f"{r['B'][row] / r['A'][row]:.2f}" for r in rounds)
        extra = f"; vs raw: A {a / raw:.2f}x, B {b / raw:.2f}x" if row == "latency" else ""
        print(f"  {row:8} A {a:10.1f}  B {b:10.1f} {unit}  B/A {b / a:.2f} ({per_round}){extra}")


if __name__ == "__main__":
    main()
