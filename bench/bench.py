"""undertow benchmark: latency, throughput, bulk transfer and remote data against raw ZeroMQ
and peers.

Run from the repository root::

    python -m bench.bench            # full run, ~2-3 minutes
    python -m bench.bench --quick    # smoke test, well under a minute
    python -m bench.bench --out /tmp/results.json

Every server runs in its own process (``python -m bench._servers KIND``); the client side
runs in this process. Each undertow figure is set against a floor measured in the same run:
raw pyzmq for the transport and ``numpy.copy`` for memory bandwidth; the bulk rows also set
Ray's same-host fetch (when ray is installed) against the download through shared memory.
Results go to ``bench/results.json`` and a markdown summary to stdout.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import datetime
import gc
import http.client
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import msgspec
import numpy as np
import zmq

import undertow
from bench import _ray_fetch, _remote_data
from bench._common import (
    RAW_PAYLOAD,
    check,
    interleaved_latency,
    raw_rep_echo,
    run_interleaved,
    zmq_socket,
)
from bench._servers import CMD_DOWN, CMD_ECHO, CMD_UP, TOKEN, recv_frames, send_frames
from undertow.transport import shm_sending

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
MB = 1e6  # throughput is in MB/s with MB = 10**6 bytes
BULK_BYTES = 100_000_000  # 12.5 M float64
WINDOW = 64

TARGET_LATENCY_RATIO = 1.0  # issue 17 (was 1.3); and below RPyC and Pyro5
TARGET_THROUGHPUT_RATIO = 0.5  # issue 17 (was 0.3)
TARGET_BULK_MBPS = 1000.0
TARGET_TCP_RATIO = 1.0  # issue 17: 100 MB each way at least a raw TCP socket's speed
TARGET_RSS_GROWTH = 3.0
TARGET_MEMKV_RATIO = 1.1  # issue 17 (was 1.3)
TARGET_SIGNED_RATIO = 1.1  # issue 17: a signed call's p50 within 10% of an unsigned one's
MEMKV_PUTS = 10_000
RAY_GOAL = "fetch of a kept value, shared memory on (undertow-shm) >= Ray same-host fetch"


@dataclass(frozen=True)
class Plan:
    """How many iterations each measurement runs."""

    latency_calls: int
    latency_warmup: int
    latency_rounds: int
    throughput_calls: int
    throughput_rounds: int
    bulk_runs: int
    memkv_rounds: int
    #: ptr[0:10] calls per array, one call at a time in turns, after latency_warmup calls
    slice_calls: int
    slice_rounds: int
    fetch_runs: int

    @classmethod
    def make(cls, quick: bool) -> Plan:
        """The full plan, or the short one of ``--quick``."""
        if quick:
            return cls(1000, 100, 2, 3000, 1, 2, 1, 600, 3, 2)
        return cls(5000, 300, 10, 20000, 4, 5, 3, 4000, 10, 5)


# -- server processes ----------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """One benchmark server running in a child process."""

    kind: str
    proc: subprocess.Popen[bytes]
    address: str = ""
    drain: threading.Thread | None = None
    signalled_at: float | None = None
    stop_seconds: float | None = None
    returncode: int | None = None


_READY = re.compile(rb" on (\S+)\s*$")


def _spawn(kind: str) -> ServerProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._servers", kind],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C reaches only us; we stop the servers ourselves
    )
    return ServerProcess(kind, proc)


def _await_ready(server: ServerProcess, deadline: float) -> None:
    """Read the child's stdout up to its readiness line; then keep draining it in a thread."""
    stdout = server.proc.stdout
    assert stdout is not None
    fd = stdout.fileno()
    buffered = b""
    while b"\n" not in buffered:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"server {server.kind!r} did not report ready in {READY_TIMEOUT} s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            code = server.proc.wait(STOP_TIMEOUT)
            raise RuntimeError(f"server {server.kind!r} exited with {code} before it was ready")
        buffered += chunk
    line = buffered.split(b"\n", 1)[0]
    match = _READY.search(line)
    if match is None:
        raise RuntimeError(f"server {server.kind!r} printed {line!r}, not its address")
    server.address = match.group(1).decode()

    def drain() -> None:
        with contextlib.suppress(OSError, ValueError):
            while os.read(fd, 65536):
                pass

    server.drain = threading.Thread(target=drain, name=f"drain-{server.kind}", daemon=True)
    server.drain.start()


def _terminate(server: ServerProcess) -> None:
    """Send SIGTERM once (a second one could cut a graceful shutdown short)."""
    if server.proc.poll() is None and server.signalled_at is None:
        server.signalled_at = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)


def _reap(server: ServerProcess) -> None:
    """Wait for a terminated server to exit; kill it if it takes longer than STOP_TIMEOUT."""
    proc = server.proc
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if server.signalled_at is not None:
        server.stop_seconds = time.perf_counter() - server.signalled_at
    server.returncode = proc.returncode
    if server.drain is not None:
        server.drain.join(1.0)  # sees end of file now that the child is gone
    if proc.stdout is not None and not (server.drain and server.drain.is_alive()):
        proc.stdout.close()


@contextlib.contextmanager
def running(kinds: list[str]) -> Iterator[dict[str, ServerProcess]]:
    """Start one process per kind (names may repeat as ``kind#n``) and stop them all on exit."""
    servers: dict[str, ServerProcess] = {}
    try:
        for name in kinds:
            servers[name] = _spawn(name.split("#", 1)[0])
        deadline = time.monotonic() + READY_TIMEOUT
        for server in servers.values():
            _await_ready(server, deadline)
        yield servers
    finally:
        for server in servers.values():
            _terminate(server)
        for server in servers.values():
            _reap(server)


# -- clients ------------------------------------------------------------------------------------


def optional(module: str) -> ModuleType | None:
    """Import an optional peer library, or None if it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


#: the peers that run a server of their own (latency and throughput rows)
SERVER_PEERS = ("pyro5", "rpyc")


def peers_available() -> dict[str, bool]:
    """Which of the optional peers (Pyro5, RPyC, Ray) can be imported.

    Ray is found, not imported: a large import, made by the bulk section that uses it
    (``optional("ray")``), so it does not weigh on the rows measured before.
    """
    return {
        "pyro5": optional("Pyro5.api") is not None,
        "rpyc": optional("rpyc") is not None,
        "ray": importlib.util.find_spec("ray") is not None,
    }


@dataclass
class Clients:
    """Connections from this process to the servers of the latency/throughput runs."""

    rep: zmq.Socket[Any]
    dealer: zmq.Socket[Any]
    ut: undertow.Client
    #: the same server, every message signed with the token
    ut_signed: undertow.Client
    #: a kept-alive HTTP/1.1 connection to the server that also serves HTTP
    http: http.client.HTTPConnection
    #: the server without a plain socket (every call over ZeroMQ)
    ut_zmq: undertow.Client | None = None
    pyro5: Any = None
    rpyc: Any = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Close every connection."""
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                close()


def _rpyc_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def connect_all(servers: dict[str, ServerProcess]) -> Clients:
    """Connect a client to each server and make one call on each (connection warm-up)."""
    rep = zmq_socket(zmq.REQ, servers["raw-rep"].address)
    clients = Clients(
        http=_http_connection(servers["undertow-http"].address),
        rep=rep,
        dealer=zmq_socket(zmq.DEALER, servers["raw-router"].address),
        ut=undertow.connect(servers["undertow"].address, token=False, timeout=60),
        ut_signed=undertow.connect(servers["undertow"].address, token=TOKEN, timeout=60),
    )
    if "undertow-zmq" in servers:
        clients.ut_zmq = undertow.connect(servers["undertow-zmq"].address, timeout=60)
        clients.closers.append(clients.ut_zmq.close)
    clients.closers += [
        clients.rep.close,
        clients.dealer.close,
        clients.ut.close,
        clients.ut_signed.close,
        clients.http.close,
    ]
    if "pyro5" in servers:
        api = importlib.import_module("Pyro5.api")
        clients.pyro5 = api.Proxy(servers["pyro5"].address)
        clients.pyro5._pyroBind()
        clients.closers.append(clients.pyro5._pyroRelease)
    if "rpyc" in servers:
        rpyc = importlib.import_module("rpyc")
        port = _rpyc_port(servers["rpyc"].address)
        clients.rpyc = rpyc.connect("127.0.0.1", port, config={"sync_request_timeout": 60})
        clients.closers.append(clients.rpyc.close)
    return clients


def _http_connection(address: str) -> http.client.HTTPConnection:
    where = urllib.parse.urlsplit(address)
    assert where.hostname is not None
    return http.client.HTTPConnection(where.hostname, where.port, timeout=60)


def _http_call(
    conn: http.client.HTTPConnection, name: str, body: bytes, content_type: str = "application/json"
) -> bytes:
    """One POST /call/NAME on a kept-alive connection; the response body. A connection the
    server closed while idle (its keep-alive timeout, on a slow run) is opened again once."""
    headers = {"Content-Type": content_type, "Accept": content_type}
    try:
        conn.request("POST", f"/call/{name}", body, headers)
        response = conn.getresponse()
    except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
        conn.close()
        conn.request("POST", f"/call/{name}", body, headers)
        response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    return data


def _http_echo(conn: http.client.HTTPConnection) -> Callable[[], object]:
    def call() -> object:
        return json.loads(_http_call(conn, "echo", b'{"args": [42]}'))

    return call


def _raw_dealer_echo(sock: zmq.Socket[Any]) -> Callable[[], object]:
    def call() -> object:
        send_frames(sock, [CMD_ECHO, RAW_PAYLOAD])
        return recv_frames(sock)[0].bytes

    return call


def latency_calls(clients: Clients) -> dict[str, Callable[[], object]]:
    """One small synchronous round trip per system, by name."""
    client = clients.ut
    calls: dict[str, Callable[[], object]] = {
        "raw_zmq": raw_rep_echo(clients.rep),
        # the pattern undertow uses (a DEALER per client, a ROUTER server, several frames):
        # shows what the socket pattern itself costs over REQ/REP, before any undertow code
        "raw_dealer_router": _raw_dealer_echo(clients.dealer),
        "undertow": lambda: client.echo(42),
        "undertow_signed": lambda: signed.echo(42),
        "undertow_http": _http_echo(clients.http),
    }
    signed = clients.ut_signed
    if clients.ut_zmq is not None:
        over_zmq = clients.ut_zmq
        calls["undertow_zmq"] = lambda: over_zmq.echo(42)
    if clients.pyro5 is not None:
        proxy = clients.pyro5
        calls["pyro5"] = lambda: proxy.echo(42)
    if clients.rpyc is not None:
        # bound once: conn.root.echo(42) would add a remote getattr round trip to every call
        remote_echo = clients.rpyc.root.echo
        calls["rpyc"] = lambda: remote_echo(42)
    return calls


# -- 1. latency ----------------------------------------------------------------------------------


def measure_latency(clients: Clients, plan: Plan) -> dict[str, Any]:
    """Sequential echo round trips; systems interleaved round by round to share any drift."""
    calls = latency_calls(clients)
    for name, call in calls.items():
        check(call(), RAW_PAYLOAD if name.startswith("raw_") else 42)
    stats, round_p50 = interleaved_latency(
        calls,
        per_round=plan.latency_calls // plan.latency_rounds,
        rounds=plan.latency_rounds,
        warmup=plan.latency_warmup,
    )
    result: dict[str, Any] = dict(stats)
    floor = result["raw_zmq"]["p50_us"]
    # the same ratio within each round: its spread shows how much background load moved it
    result["per_round_ratios_p50_vs_raw"] = {
        name: [round(x / f, 3) for x, f in zip(r, round_p50["raw_zmq"], strict=True)]
        for name, r in round_p50.items()
        if name != "raw_zmq"
    }
    result["ratios_p50_vs_raw"] = {
        name: round(result[name]["p50_us"] / floor, 3) for name in calls if name != "raw_zmq"
    }
    result["ratios_p99_vs_raw"] = {
        name: round(result[name]["p99_us"] / result["raw_zmq"]["p99_us"], 3)
        for name in calls
        if name != "raw_zmq"
    }
    result["notes"] = {
        "raw_zmq": f"pyzmq REQ/REP, {len(RAW_PAYLOAD)}-byte payload echoed",
        "raw_dealer_router": "pyzmq DEALER -> ROUTER echo, 2 frames, sent and received frame "
        "by frame (pyzmq's multipart helpers cost ~25% more)",
        "undertow": "client.echo(42), sync client, default options, no token (the server's "
        "plain socket: tcp+plain://)",
        "undertow_signed": "the same with a token: request and reply signed (over the plain "
        "socket a 16-byte keyed BLAKE2b tag a message after one handshake a connection)",
        "undertow_zmq": "client.echo(42) to a server without a plain socket: the blocking "
        "call goes over ZeroMQ (what every call did before issue 17)",
        "undertow_http": "POST /call/echo with a JSON body on a kept-alive HTTP/1.1 connection "
        "(http.client), to a server that also serves HTTP",
        "pyro5": "Proxy.echo(42), default serpent serializer, thread-pool daemon",
        "rpyc": "remote_echo = conn.root.echo bound once, then remote_echo(42)",
    }
    return result


# -- 2. throughput ---------------------------------------------------------------------------


def _raw_dealer_window(sock: zmq.Socket[Any], total: int, window: int) -> None:
    request = [CMD_ECHO, RAW_PAYLOAD]
    sent = received = 0
    while sent < min(window, total):
        send_frames(sock, request)
        sent += 1
    while received < total:
        recv_frames(sock)
        received += 1
        if sent < total:
            send_frames(sock, request)
            sent += 1


def _futures_window(
    submit: Callable[[], concurrent.futures.Future[Any]], total: int, window: int
) -> None:
    """Keep ``window`` futures in flight: each completion lets one more call start."""
    slots = threading.Semaphore(window)
    failures: list[BaseException] = []

    def done(future: concurrent.futures.Future[Any]) -> None:
        exc = future.exception()
        if exc is not None:
            failures.append(exc)
        elif future.result() != 42:
            failures.append(RuntimeError(f"echo answered {future.result()!r}"))
        slots.release()

    for _ in range(total):
        if not slots.acquire(timeout=60):
            raise RuntimeError("no call completed within 60 s")
        submit().add_done_callback(done)
    for _ in range(window):
        if not slots.acquire(timeout=60):
            raise RuntimeError("the last calls did not complete within 60 s")
    if failures:
        raise RuntimeError(f"{len(failures)} calls failed, first: {failures[0]!r}")


def _oldest_first_window(
    start: Callable[[], Any], value: Callable[[Any], object], total: int, window: int
) -> None:
    """Keep ``window`` calls in flight, waiting for the oldest before starting another: what
    the raw floor does (replies come in order) and how RPyC's async results are used."""
    pending: collections.deque[Any] = collections.deque()
    for _ in range(total):
        if len(pending) >= window:
            check(value(pending.popleft()), 42)
        pending.append(start())
    while pending:
        check(value(pending.popleft()), 42)


def _rpyc_window(async_echo: Callable[[int], Any], total: int, window: int) -> None:
    """Keep ``window`` RPyC async calls in flight, oldest first."""
    _oldest_first_window(lambda: async_echo(42), lambda r: r.value, total, window)


def _undertow_window(submit: Callable[[int], Any], total: int, window: int) -> None:
    """Keep ``window`` undertow futures in flight, oldest first."""
    _oldest_first_window(lambda: submit(42), lambda f: f.result(60), total, window)


def _sequential(call: Callable[[], object], total: int) -> None:
    for _ in range(total):
        call()


def throughput_runs(clients: Clients) -> dict[str, Callable[[int], None]]:
    """One function per system that completes ``n`` echo calls as fast as it can."""
    echo = clients.ut.echo
    runs: dict[str, Callable[[int], None]] = {
        "raw_zmq": lambda n: _raw_dealer_window(clients.dealer, n, WINDOW),
        "undertow": lambda n: _undertow_window(echo.submit, n, WINDOW),
        "undertow_callbacks": lambda n: _futures_window(lambda: echo.submit(42), n, WINDOW),
    }
    if clients.pyro5 is not None:
        proxy = clients.pyro5
        runs["pyro5"] = lambda n: _sequential(lambda: proxy.echo(42), n)
    if clients.rpyc is not None:
        rpyc = importlib.import_module("rpyc")
        async_echo = rpyc.async_(clients.rpyc.root.echo)
        runs["rpyc"] = lambda n: _rpyc_window(async_echo, n, WINDOW)
    return runs


def measure_throughput(clients: Clients, plan: Plan) -> dict[str, Any]:
    """Calls per second with up to 64 calls in flight from one client; best of the rounds."""
    runs = throughput_runs(clients)
    for run in runs.values():
        run(min(WINDOW * 4, plan.throughput_calls))  # warm-up
    per_round = plan.throughput_calls // plan.throughput_rounds
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(plan.throughput_rounds):
        for name, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            run(per_round)
            rates[name].append(per_round / (time.perf_counter() - start))
    result: dict[str, Any] = {
        name: {
            "calls_per_round": per_round,
            "rounds": len(r),
            "calls_per_s": round(max(r)),
            "all_rounds": [round(x) for x in r],
        }
        for name, r in rates.items()
    }
    floor = result["raw_zmq"]["calls_per_s"]
    result["ratios_vs_raw"] = {
        name: round(result[name]["calls_per_s"] / floor, 3) for name in runs if name != "raw_zmq"
    }
    result["per_round_ratios_vs_raw"] = {
        name: [round(x / f, 3) for x, f in zip(r, rates["raw_zmq"], strict=True)]
        for name, r in rates.items()
        if name != "raw_zmq"
    }
    result["notes"] = {
        "raw_zmq": f"pyzmq DEALER -> ROUTER echo, {WINDOW} messages in flight",
        "undertow": f"client.echo.submit(42), {WINDOW} futures in flight, oldest first "
        "(as the raw floor and RPyC)",
        "undertow_callbacks": f"client.echo.submit(42), {WINDOW} futures in flight, each "
        "completion's done-callback releases a semaphore that lets one more start (context)",
        "pyro5": "sequential proxy.echo(42): a Pyro5 proxy cannot be shared between threads, "
        "so unbatched calls have one in flight",
        "rpyc": f"rpyc.async_(conn.root.echo), {WINDOW} AsyncResults in flight (oldest first)",
    }
    return result


# -- 3. bulk -------------------------------------------------------------------------------------


def _mbps(seconds: float, nbytes: int = BULK_BYTES) -> float:
    return round(nbytes / seconds / MB, 1)


def _bulk_entry(times: list[float]) -> dict[str, Any]:
    return {
        "best_s": round(min(times), 5),
        "mb_per_s": _mbps(min(times)),
        "all_s": [round(t, 5) for t in times],
    }


def _rss_growth(before: list[int], after: list[int]) -> dict[str, Any]:
    baseline, peak_before = before
    peak = after[1]
    return {
        "baseline_kib": baseline,
        "peak_before_kib": peak_before,
        "peak_after_kib": peak,
        "growth_kib": peak - baseline,
        "growth_x_payload": round((peak - baseline) * 1024 / BULK_BYTES, 3),
    }


def raw_bulk_steps(
    sock: zmq.Socket[Any], arr: np.ndarray[Any, Any]
) -> dict[str, Callable[[], None]]:
    """A 100 MB frame each way over DEALER/ROUTER with copy=False, a tiny message the other."""

    def upload() -> None:
        send_frames(sock, [CMD_UP, arr.data.cast("B")])
        check(int(sock.recv()), BULK_BYTES)

    def download() -> None:
        send_frames(sock, [CMD_DOWN, str(BULK_BYTES).encode()])
        frame = sock.recv(copy=False)
        check(len(frame.buffer), BULK_BYTES)

    return {"raw_zmq_upload": upload, "raw_zmq_download": download}


def raw_tcp_bulk_steps(
    sock: socket.socket, arr: np.ndarray[Any, Any]
) -> dict[str, Callable[[], None]]:
    """A 100 MB transfer each way over one plain TCP connection: sent from the array's own
    buffer, received into a buffer made once and reused (both ends), so the floor is the
    transfer alone, without the page faults of a fresh buffer that undertow's receiver pays."""
    into = bytearray(BULK_BYTES)

    def upload() -> None:
        sock.sendall(b"U" + struct.pack(">Q", BULK_BYTES))
        sock.sendall(arr.data.cast("B"))
        check(struct.unpack(">Q", _read_exactly(sock, memoryview(bytearray(8))))[0], BULK_BYTES)

    def download() -> None:
        sock.sendall(b"D" + struct.pack(">Q", BULK_BYTES))
        check(len(_read_exactly(sock, memoryview(into))), BULK_BYTES)

    return {"raw_tcp_upload": upload, "raw_tcp_download": download}


def _read_exactly(sock: socket.socket, view: memoryview) -> memoryview:
    got, size = 0, len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("the raw TCP server closed the connection")
        got += n
    return view


def undertow_bulk_steps(
    up: undertow.Client,
    down: undertow.Client,
    signed: undertow.Client,
    arr: np.ndarray[Any, Any],
    prefix: str = "undertow",
    transfer_only: bool = False,
) -> dict[str, Callable[[], None]]:
    """``up.total(arr)`` and ``down.make(100_000_000)``, each on a server of its own (the
    numpy codec, no token); ``signed.total_signed(arr)``: pickle, every frame signed. One
    byte of each page of the value that arrives is read, so memory handed over unread (shared
    memory, faulted in on first touch) pays for its pages in the step. ``transfer_only``:
    the upload calls ``size(arr)`` (the array's byte count back, as the raw TCP server
    answers with the length it read) instead of summing it (5 ms of ~30 here)."""
    expected = float(arr.sum())

    def upload() -> None:
        if transfer_only:
            check(up.size(arr), arr.nbytes)
        else:
            check(up.total(arr), expected)

    def upload_signed() -> None:
        check(signed.total_signed(arr), expected)

    def download() -> None:
        got = down.make(BULK_BYTES)
        touched = int(got.view(np.uint8)[7::4096].sum())  # a byte a page (0x3f of each 1.0)
        check((got.nbytes, float(got[-1]), touched > 0), (BULK_BYTES, 1.0, True))

    return {
        f"{prefix}_upload": upload,
        f"{prefix}_download": download,
        f"{prefix}_upload_signed": upload_signed,
    }


FETCH_STEPS = ("undertow_shm_fetch", "undertow_shm_fresh_make", "undertow_shm_fresh_fetch")


def undertow_fetch_steps(client: undertow.Client) -> dict[str, Callable[[], object]]:
    """Ray's two fetches, done the undertow way on a server with shared memory on: a value
    kept in its data store (``make`` with ``return_pointer``), fetched with ``ptr.fetch()``.
    ``undertow_shm_fetch``: one value made before timing, fetched run after run;
    ``undertow_shm_fresh_fetch``: a new value each run, made (and the last one deleted) in
    the step before it, ``undertow_shm_fresh_make``, which is not a figure of its own. One
    byte of each page is read, as in Ray's steps."""
    make = client.make.options(return_pointer=True)
    kept = make(BULK_BYTES)
    fresh: list[Any] = []

    def fetch(ptr: Any) -> object:
        got = ptr.fetch()
        touched = int(got.view(np.uint8)[7::4096].sum())  # a byte a page (0x3f of each 1.0)
        check((got.nbytes, float(got[-1]), touched > 0), (BULK_BYTES, 1.0, True))
        return got  # let go of after the clock stops

    def make_fresh() -> object:
        while fresh:
            fresh.pop().delete()
        fresh.append(make(BULK_BYTES))
        return None

    def fetch_fresh() -> object:
        return fetch(fresh[-1])

    fetch(kept)  # mapped once, untimed, as Ray's first ray.get
    bodies = (lambda: fetch(kept), make_fresh, fetch_fresh)
    return dict(zip(FETCH_STEPS, bodies, strict=True))


def http_bulk_steps(conn: http.client.HTTPConnection) -> dict[str, Callable[[], None]]:
    """100 MB of bytes up (``blob_len``) and down (``blob``) as msgpack bodies over HTTP;
    the client's own encoding and decoding are counted, as a user's would be."""
    payload = b"\1" * BULK_BYTES
    msgpack = "application/msgpack"

    def upload() -> None:
        body = msgspec.msgpack.encode({"args": [payload]})
        check(msgspec.msgpack.decode(_http_call(conn, "blob_len", body, msgpack)), BULK_BYTES)

    def download() -> None:
        body = msgspec.msgpack.encode({"args": [BULK_BYTES]})
        got = msgspec.msgpack.decode(_http_call(conn, "blob", body, msgpack))
        check(len(got), BULK_BYTES)

    return {"http_upload": upload, "http_download": download}


MEMORY_STEPS = ("numpy_copy", "numpy_copyto_preallocated", "numpy_ones")


def memory_steps(arr: np.ndarray[Any, Any]) -> dict[str, Callable[[], None]]:
    """``numpy.copy`` (allocates: page faults count), ``copyto`` (does not) and ``numpy.ones``."""
    dst = np.empty_like(arr)

    def copy() -> None:
        np.copy(arr)

    def copyto() -> None:
        np.copyto(dst, arr)

    def ones() -> None:
        np.ones(arr.size)

    return dict(zip(MEMORY_STEPS, (copy, copyto, ones), strict=True))


def _ray_section(
    fetch: _ray_fetch.RayFetch | None, entries: dict[str, dict[str, Any]], copy_mbps: float
) -> dict[str, Any]:
    """The Ray rows of the bulk results: figures, or why there are none."""
    if fetch is None:
        return {"status": "not installed"}
    if fetch.failure is not None:
        return {"status": "failed", **fetch.failure, "shutdown_error": fetch.shutdown_error}
    kept, fresh = entries["ray_fetch"], entries["ray_fresh_fetch"]
    return {
        "status": "measured",
        "version": _version("ray"),
        "startup_s": fetch.startup_s,
        "object_store_bytes": _ray_fetch.STORE_BYTES,
        "download": kept,
        "download_fresh_object": fresh,
        "fresh_object_task_best_s": entries["ray_fresh_make"]["best_s"],
        "ratios_vs_numpy_copy": {
            "download": round(kept["mb_per_s"] / copy_mbps, 3),
            "download_fresh_object": round(fresh["mb_per_s"] / copy_mbps, 3),
        },
        "shutdown_error": fetch.shutdown_error,
    }


def measure_bulk(servers: dict[str, ServerProcess], plan: Plan) -> dict[str, Any]:
    """Upload and download of 100 MB of float64, undertow against raw ZeroMQ and memcpy, and
    Ray's same-host fetch of as many bytes when ray is installed.

    The steps run interleaved, run after run, so background load hits all of them alike;
    the best run of each counts. Each undertow direction has a fresh server of its own, whose
    peak RSS growth is read before and after all its runs. Ray is started (untimed) for this
    section only; a Ray failure is recorded and the other steps go on.
    """
    arr = np.ones(BULK_BYTES // 8)
    fetch: _ray_fetch.RayFetch | None = None
    with contextlib.ExitStack() as stack:
        ray = optional("ray") if peers_available()["ray"] else None
        if ray is not None:
            print("starting a local Ray for its fetch row ...", file=sys.stderr, flush=True)
            fetch = stack.enter_context(_ray_fetch.session(ray, BULK_BYTES))
        sock = zmq_socket(zmq.DEALER, servers["raw-router"].address)
        stack.callback(sock.close)
        up, down = (
            stack.enter_context(undertow.connect(servers[n].address, token=False, timeout=60))
            for n in ("undertow#up", "undertow#down")
        )
        signed = stack.enter_context(
            undertow.connect(servers["undertow#signed"].address, token=TOKEN, timeout=60)
        )
        conn = _http_connection(servers["undertow-http"].address)
        stack.callback(conn.close)
        tcp_host, tcp_port = servers["raw-tcp"].address[len("tcp://") :].rsplit(":", 1)
        tcp = socket.create_connection((tcp_host, int(tcp_port)), timeout=60)
        stack.callback(tcp.close)
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # steps may return what they got, let go of after the clock stops (Ray's do)
        steps: dict[str, Callable[[], object]] = dict(
            raw_bulk_steps(sock, arr) | raw_tcp_bulk_steps(tcp, arr)
        )
        steps["raw_zmq_download"]()  # the server makes its blob once, before any timing
        steps["raw_tcp_download"]()
        tcp_up, tcp_down = (
            stack.enter_context(undertow.connect(servers[n].address, token=False, timeout=60))
            for n in ("undertow-tcp#up", "undertow-tcp#down")
        )
        steps |= undertow_bulk_steps(up, down, signed, arr) | memory_steps(arr)
        tcp_steps = undertow_bulk_steps(
            tcp_up, tcp_down, signed, arr, prefix="undertow_tcp", transfer_only=True
        )
        del tcp_steps["undertow_tcp_upload_signed"]
        steps |= tcp_steps
        saved = os.environ.get("UNDERTOW_SHM")
        os.environ["UNDERTOW_SHM"] = "1"  # these clients' connections send through memory
        try:
            shm_up, shm_down = (
                stack.enter_context(undertow.connect(servers[n].address, token=False, timeout=60))
                for n in ("undertow-shm#up", "undertow-shm#down")
            )
            shm_up.total(arr[:1])  # connected now, while the setting holds
            shm_down.total(arr[:1])
        finally:
            if saved is None:
                os.environ.pop("UNDERTOW_SHM", None)
            else:
                os.environ["UNDERTOW_SHM"] = saved
        shm_steps = undertow_bulk_steps(
            shm_up, shm_down, signed, arr, prefix="undertow_shm", transfer_only=True
        )
        del shm_steps["undertow_shm_upload_signed"]
        steps |= shm_steps | undertow_fetch_steps(shm_down)
        steps |= http_bulk_steps(conn)
        if fetch is not None:
            steps |= fetch.steps()
        before = {"upload": up.rss(), "download": down.rss()}
        times = run_interleaved(steps, plan.bulk_runs)
        after = {"upload": up.rss(), "download": down.rss()}
    entries = {name: _bulk_entry(t) for name, t in times.items()}
    result: dict[str, Any] = {
        "payload_bytes": BULK_BYTES,
        "runs": plan.bulk_runs,
        "memcpy": {k: entries[k] for k in MEMORY_STEPS},
        "raw_zmq": {d: entries[f"raw_zmq_{d}"] for d in ("upload", "download")},
        "raw_tcp": {d: entries[f"raw_tcp_{d}"] for d in ("upload", "download")},
        "undertow": {
            d: {**entries[f"undertow_{d}"], "server_rss": _rss_growth(before[d], after[d])}
            for d in ("upload", "download")
        },
        "undertow_signed": {"upload": entries["undertow_upload_signed"]},
        "undertow_tcp": {d: entries[f"undertow_tcp_{d}"] for d in ("upload", "download")},
        "undertow_shm": {d: entries[f"undertow_shm_{d}"] for d in ("upload", "download")}
        | {
            "fetch": entries["undertow_shm_fetch"],
            "fetch_fresh_value": entries["undertow_shm_fresh_fetch"],
        },
        "shm_by_default": shm_sending(),
        "undertow_http": {d: entries[f"http_{d}"] for d in ("upload", "download")},
    }
    copy = result["memcpy"]["numpy_copy"]["mb_per_s"]
    result["ray"] = _ray_section(fetch, entries, copy)
    result["ratios"] = {}
    for d in ("upload", "download"):
        mbps = result["undertow"][d]["mb_per_s"]
        result["ratios"][f"{d}_vs_raw"] = round(mbps / result["raw_zmq"][d]["mb_per_s"], 3)
        result["ratios"][f"{d}_vs_raw_tcp"] = round(mbps / result["raw_tcp"][d]["mb_per_s"], 3)
        tcp = result["undertow_tcp"][d]["mb_per_s"]
        result["ratios"][f"{d}_no_shm_vs_raw_tcp"] = round(
            tcp / result["raw_tcp"][d]["mb_per_s"], 3
        )
        result["ratios"][f"{d}_vs_numpy_copy"] = round(mbps / copy, 3)
    if result["ray"]["status"] == "measured":
        shm, ray = result["undertow_shm"], result["ray"]
        result["ratios"]["fetch_shm_vs_ray"] = round(
            shm["fetch"]["mb_per_s"] / ray["download"]["mb_per_s"], 3
        )
        result["ratios"]["fresh_fetch_shm_vs_ray"] = round(
            shm["fetch_fresh_value"]["mb_per_s"] / ray["download_fresh_object"]["mb_per_s"], 3
        )
        result["ratios"]["download_shm_vs_ray"] = round(
            shm["download"]["mb_per_s"] / ray["download"]["mb_per_s"], 3
        )
    result["notes"] = {
        "undertow": "upload: client.total(arr) (the numpy codec: the array is an out-of-band "
        "frame), server sums it; download: client.make(100_000_000), server sends out of band "
        "an array it made on the first call (as the raw floor makes its blob once; the best "
        "run counts); no token, so nothing is signed; by default over the local Unix socket, "
        "through shared memory only where the kernel gives shared memory huge pages "
        "(shm_by_default)",
        "undertow_http": "100 MB of bytes in a msgpack body: POST /call/blob_len up, POST "
        "/call/blob down (Accept: application/msgpack), kept-alive http.client connection; the "
        "client's msgpack encoding and decoding included",
        "undertow_signed": "upload: client.total_signed(arr) with a token, pickle 5 with an "
        "out-of-band buffer, every frame covered by the HMAC-SHA256 signature (a server of its "
        "own)",
        "raw_zmq": "DEALER -> ROUTER copy=False, 100 MB frame one way and a tiny reply; the "
        "server's download blob is allocated once",
        "undertow_tcp": "the same calls on servers whose plain socket is TCP only (no local "
        "Unix socket: nothing through shared memory), the upload calling size(arr), which "
        "answers the array's byte count as the raw TCP server answers the length it read "
        "(total(arr) also sums it)",
        "undertow_shm": "the same calls (upload: size(arr)) over the local Unix socket with "
        "large frames through shared memory both ways (UNDERTOW_SHM=1 in the server and for "
        "these connections), "
        "whatever the kernel's huge-page setting for shared memory; fetch: ptr.fetch() of a "
        "value kept in the server's data store (made once with make and return_pointer, in "
        "shared memory there: the client maps it once and then views it, as Ray does); "
        "fetch_fresh_value: a new value each run (made and the last one deleted before the "
        "clock starts), mapped anew",
        "raw_tcp": "one plain TCP connection (TCP_NODELAY): a 9-byte command, then 100 MB sent "
        "with sendall from the array's buffer and read with recv_into into a buffer made once "
        "and reused (both ends); the server's download blob is made once",
        "server_rss": "peak RSS (VmHWM; ru_maxrss would include the parent's peak inherited "
        "across fork+exec) of a server process used only for that direction; growth is the peak "
        "after all runs minus the peak once set up, before any call",
        "ray": "same host, when ray is installed: a local Ray (1 CPU, 1 GB object store, no "
        "dashboard, all on 127.0.0.1), started before any timing; a task makes the array "
        "(np.ones) into Ray's shared-memory object store; download: the driver's "
        "ray.get(ref) of one object made once (fetched once, untimed, at start), a read-only "
        "zero-copy view; download_fresh_object: ray.get of a new task's result each run, the "
        "task started and awaited with ray.wait before the clock starts "
        "(fresh_object_task_best_s is that untimed part); each reads one byte of each 4 KiB "
        "page within the timed step, as the undertow download does; a failure is recorded "
        "(status, where, error) and the other rows go on",
        "order": "each run times every step in turn (raw, undertow, numpy, Ray), best run counts",
    }
    return result


# -- 4. services: the memkv example ------------------------------------------------------------


def measure_memkv(servers: dict[str, ServerProcess], plan: Plan) -> dict[str, Any]:
    """10,000 sync puts through the discovered MemKeyValue service, as ``python memkv.py``
    makes them, against 10,000 raw REQ/REP round trips; rounds interleaved."""
    from undertow.service import ServiceModule

    kv = ServiceModule.discover("MemKeyValue", timeout=READY_TIMEOUT)
    rep = zmq_socket(zmq.REQ, servers["raw-rep"].address)
    raw = raw_rep_echo(rep)
    try:
        for i in range(300):  # warm-up, as for the other measurements
            kv.put(key=-i, value=i)
            raw()
        put_s: list[float] = []
        raw_s: list[float] = []
        for _ in range(plan.memkv_rounds):
            kv.clear()
            gc.collect()
            started = time.perf_counter()
            for i in range(MEMKV_PUTS):
                kv.put(key=i, value=i * i)
            put_s.append(time.perf_counter() - started)
            check(kv.size(), MEMKV_PUTS)
            gc.collect()
            started = time.perf_counter()
            for _ in range(MEMKV_PUTS):
                raw()
            raw_s.append(time.perf_counter() - started)
    finally:
        kv.close()
        rep.close()
    puts, floor = float(np.median(put_s)), float(np.median(raw_s))
    return {
        "puts": MEMKV_PUTS,
        "undertow_s": round(puts, 4),
        "raw_zmq_s": round(floor, 4),
        "ratio_vs_raw": round(puts / floor, 3),
        "rounds_undertow_s": [round(x, 4) for x in put_s],
        "rounds_raw_zmq_s": [round(x, 4) for x in raw_s],
        "notes": "kv.put(key=i, value=i*i) on ServiceModule.discover(MemKeyValue), the service "
        "of examples/memkv/memkv.py unchanged; floor: pyzmq REQ/REP round trips of a 20-byte "
        "payload; medians of the rounds",
    }


# -- report --------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return str(out.stdout).strip()


def machine_info(peers: dict[str, bool]) -> dict[str, Any]:
    """Where and with what the benchmark ran; peers that cannot be imported are not installed."""
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "loadavg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "numpy": np.__version__,
        "undertow": undertow.__version__,
        "undertow_commit": _git_commit(),
        "msgspec": _version("msgspec"),
        "cloudpickle": _version("cloudpickle"),
        "Pyro5": _version("Pyro5") if peers["pyro5"] else "not installed",
        "rpyc": _version("rpyc") if peers["rpyc"] else "not installed",
        "ray": _version("ray") if peers["ray"] else "not installed",
    }


def _target(name: str, value: float, op: str, limit: float) -> dict[str, Any]:
    ok = value <= limit if op == "<=" else value >= limit
    return {"name": name, "value": value, "op": op, "limit": limit, "pass": bool(ok)}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals undertow is held to, each with its measured value and a pass flag."""
    lat, thr, bulk = results["latency"], results["throughput"], results["bulk"]
    data = results["remote_data"]
    up, down = bulk["undertow"]["upload"], bulk["undertow"]["download"]
    p50 = lat["undertow"]["p50_us"]
    # only when Ray was measured: a peer that is not installed has no target
    versus_ray = (
        [
            _target(
                RAY_GOAL,
                bulk["undertow_shm"]["fetch"]["mb_per_s"],
                ">=",
                bulk["ray"]["download"]["mb_per_s"],
            )
        ]
        if bulk["ray"]["status"] == "measured"
        else []
    )
    return [
        _target(
            "latency p50 / raw p50",
            lat["ratios_p50_vs_raw"]["undertow"],
            "<=",
            TARGET_LATENCY_RATIO,
        ),
        *(  # below the peers measured in the same run
            _target(f"latency p50 / {peer} p50", round(p50 / lat[peer]["p50_us"], 3), "<=", 1.0)
            for peer in ("rpyc", "pyro5")
            if peer in lat
        ),
        _target(
            "signed latency p50 / unsigned p50",
            round(lat["undertow_signed"]["p50_us"] / lat["undertow"]["p50_us"], 3),
            "<=",
            TARGET_SIGNED_RATIO,
        ),
        _target(
            "throughput / raw", thr["ratios_vs_raw"]["undertow"], ">=", TARGET_THROUGHPUT_RATIO
        ),
        _target(
            "memkv 10,000 puts / raw", results["memkv"]["ratio_vs_raw"], "<=", TARGET_MEMKV_RATIO
        ),
        _target("upload MB/s", up["mb_per_s"], ">=", TARGET_BULK_MBPS),
        _target("download MB/s", down["mb_per_s"], ">=", TARGET_BULK_MBPS),
        *versus_ray,
        *(
            _target(f"{d}, no shared memory / raw TCP", ratio, ">=", TARGET_TCP_RATIO)
            for d in ("upload", "download")
            for ratio in (bulk["ratios"][f"{d}_no_shm_vs_raw_tcp"],)
        ),
        _target(
            "server RSS growth / payload, upload",
            up["server_rss"]["growth_x_payload"],
            "<=",
            TARGET_RSS_GROWTH,
        ),
        _target(
            "server RSS growth / payload, download",
            down["server_rss"]["growth_x_payload"],
            "<=",
            TARGET_RSS_GROWTH,
        ),
        _target(
            _remote_data.SLICE_GOAL,
            data["slice"]["ratios_p50_vs_1mb"]["pointer_1gb"],
            "<=",
            _remote_data.TARGET_SLICE_RATIO,
        ),
        _target(
            _remote_data.FETCH_GOAL,
            data["fetch"]["pointer_fetch"]["gb_per_s"],
            ">=",
            _remote_data.TARGET_FETCH_GBPS,
        ),
    ]


def _peer_cell(section: dict[str, Any], name: str, key: str, ratios: str, unit: str) -> str:
    if name not in section:
        return str(section.get("peers", {}).get(name, "n/a"))
    return f"{section[name][key]:,.0f} {unit} ({section[ratios][name]:.2f}x)"


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _ray_rows(bulk: dict[str, Any], goal: Callable[[str, str], str]) -> list[str]:
    """Ray's same-host fetch against the fetch of a kept value with shared memory on, and the
    fresh-object and call-result variants as context; one line saying why when Ray was not
    measured."""
    ray = bulk["ray"]
    if ray["status"] != "measured":
        error = str(ray.get("error", "")).replace("|", "/")[:160]  # a cell of the table
        why = ray["status"] + (f" ({ray['where']}: {error})" if error else "")
        return [f"| 100 MB download against Ray's same-host fetch | Ray {why} | | | | | |"]
    shm = bulk["undertow_shm"]
    fetch, fresh_fetch = shm["fetch"]["mb_per_s"], shm["fetch_fresh_value"]["mb_per_s"]
    down = shm["download"]["mb_per_s"]
    kept, fresh = ray["download"]["mb_per_s"], ray["download_fresh_object"]["mb_per_s"]
    return [
        f"| 100 MB fetch of a kept value (ptr.fetch(), shared memory on) against Ray "
        f"{ray['version']} same-host fetch | {kept:,.0f} MB/s (ray.get of one object, zero-copy "
        f"view) | {fetch:,.0f} MB/s | {fetch / kept:.2f}x | | | {goal(RAY_GOAL, '>= Ray')} |",
        f"| 100 MB fetch of a fresh value each run against Ray's fetch of a fresh object "
        f"| {fresh:,.0f} MB/s (ray.get of a new task result, after ray.wait) "
        f"| {fresh_fetch:,.0f} MB/s | {fresh_fetch / fresh:.2f}x | | | context only |",
        f"| 100 MB download (a call's result, shared memory on) against Ray's fetch "
        f"| {kept:,.0f} MB/s | {down:,.0f} MB/s | {down / kept:.2f}x | | | context only |",
    ]


def summary(results: dict[str, Any]) -> str:
    """A markdown table of the results, fit to paste into the README."""
    m, lat, thr, bulk = (results[k] for k in ("machine", "latency", "throughput", "bulk"))
    goals = {t["name"]: t for t in results["targets"]}
    raw_b, ut_b, mem = bulk["raw_zmq"], bulk["undertow"], bulk["memcpy"]["numpy_copy"]

    def goal(name: str, text: str) -> str:
        return f"{text}: {_mark(goals[name]['pass'])}"

    rows = [
        "| measurement | floor | undertow | undertow / floor | Pyro5 | RPyC | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| echo latency p50 | {lat['raw_zmq']['p50_us']:.0f} µs (zmq REQ/REP) "
        f"| {lat['undertow']['p50_us']:.0f} µs | {lat['ratios_p50_vs_raw']['undertow']:.2f}x "
        f"| {_peer_cell(lat, 'pyro5', 'p50_us', 'ratios_p50_vs_raw', 'µs')} "
        f"| {_peer_cell(lat, 'rpyc', 'p50_us', 'ratios_p50_vs_raw', 'µs')} "
        f"| {goal('latency p50 / raw p50', f'<= {TARGET_LATENCY_RATIO}x')} |",
        f"| echo latency p99 | {lat['raw_zmq']['p99_us']:.0f} µs "
        f"| {lat['undertow']['p99_us']:.0f} µs | {lat['ratios_p99_vs_raw']['undertow']:.2f}x "
        f"| {_peer_cell(lat, 'pyro5', 'p99_us', 'ratios_p99_vs_raw', 'µs')} "
        f"| {_peer_cell(lat, 'rpyc', 'p99_us', 'ratios_p99_vs_raw', 'µs')} | |",
        *(
            [
                f"| echo latency p50, every call over ZeroMQ (no plain socket) "
                f"| {lat['raw_zmq']['p50_us']:.0f} µs | {lat['undertow_zmq']['p50_us']:.0f} µs "
                f"| {lat['ratios_p50_vs_raw']['undertow_zmq']:.2f}x | | | context only |"
            ]
            if "undertow_zmq" in lat
            else []
        ),
        f"| echo latency p50, raw DEALER/ROUTER | {lat['raw_zmq']['p50_us']:.0f} µs "
        f"| {lat['raw_dealer_router']['p50_us']:.0f} µs (no undertow code) "
        f"| {lat['ratios_p50_vs_raw']['raw_dealer_router']:.2f}x | | | context only |",
        f"| echo latency p50, signed (a token), against unsigned "
        f"| {lat['undertow']['p50_us']:.1f} µs (unsigned) "
        f"| {lat['undertow_signed']['p50_us']:.1f} µs "
        f"| {lat['undertow_signed']['p50_us'] / lat['undertow']['p50_us']:.2f}x | | "
        f"| {goal('signed latency p50 / unsigned p50', f'<= {TARGET_SIGNED_RATIO:.1f}x')} |",
        f"| echo latency p50 over HTTP (JSON) | {lat['raw_zmq']['p50_us']:.0f} µs "
        f"| {lat['undertow_http']['p50_us']:.0f} µs "
        f"| {lat['ratios_p50_vs_raw']['undertow_http']:.2f}x | | | context only |",
        f"| echo throughput, {WINDOW} in flight | {thr['raw_zmq']['calls_per_s']:,} calls/s "
        f"(zmq DEALER/ROUTER) | {thr['undertow']['calls_per_s']:,} calls/s "
        f"| {thr['ratios_vs_raw']['undertow']:.2f}x "
        f"| {_peer_cell(thr, 'pyro5', 'calls_per_s', 'ratios_vs_raw', '/s')}, sequential "
        f"| {_peer_cell(thr, 'rpyc', 'calls_per_s', 'ratios_vs_raw', '/s')} "
        f"| {goal('throughput / raw', f'>= {TARGET_THROUGHPUT_RATIO}x')} |",
        f"| echo throughput, {WINDOW} in flight, driven by done-callbacks "
        f"| {thr['raw_zmq']['calls_per_s']:,} calls/s "
        f"| {thr['undertow_callbacks']['calls_per_s']:,} calls/s "
        f"| {thr['ratios_vs_raw']['undertow_callbacks']:.2f}x | | | context only |",
    ]
    shm_note = ", shared memory" if bulk["shm_by_default"] else ""
    for d, verb in (("upload", "client.total(arr)"), ("download", "client.make(100_000_000)")):
        rss = ut_b[d]["server_rss"]
        rows += [
            f"| 100 MB {d} ({verb}; local socket{shm_note}) "
            f"| {raw_b[d]['mb_per_s']:,.0f} MB/s (zmq copy=False) "
            f"| {ut_b[d]['mb_per_s']:,.0f} MB/s | {bulk['ratios'][f'{d}_vs_raw']:.2f}x "
            f"| | | {goal(f'{d} MB/s', f'>= {TARGET_BULK_MBPS:.0f} MB/s')} |",
            f"| 100 MB {d}, no shared memory (TCP only), against a raw TCP socket "
            f"| {bulk['raw_tcp'][d]['mb_per_s']:,.0f} MB/s (sendall / recv_into) "
            f"| {bulk['undertow_tcp'][d]['mb_per_s']:,.0f} MB/s "
            f"| {bulk['ratios'][f'{d}_no_shm_vs_raw_tcp']:.2f}x | | "
            f"| {goal(f'{d}, no shared memory / raw TCP', f'>= {TARGET_TCP_RATIO:.1f}x')} |",
            f"| server peak RSS growth, {d} | | {rss['growth_x_payload']:.2f}x of payload "
            f"({rss['growth_kib'] / 1024:,.0f} MiB) | | | "
            f"| {goal(f'server RSS growth / payload, {d}', f'<= {TARGET_RSS_GROWTH:.0f}x')} |",
        ]
    for d in ("upload", "download"):
        shm, tcp = bulk["undertow_shm"][d]["mb_per_s"], bulk["raw_tcp"][d]["mb_per_s"]
        rows.append(
            f"| 100 MB {d}, shared memory on (UNDERTOW_SHM=1) | {tcp:,.0f} MB/s (raw TCP) "
            f"| {shm:,.0f} MB/s | {shm / tcp:.2f}x | | | context only |"
        )
    rows += _ray_rows(bulk, goal)
    for d in ("upload", "download"):
        over_http = bulk["undertow_http"][d]["mb_per_s"]
        rows.append(
            f"| 100 MB {d} over HTTP (msgpack body) | {raw_b[d]['mb_per_s']:,.0f} MB/s "
            f"| {over_http:,.0f} MB/s | {over_http / raw_b[d]['mb_per_s']:.2f}x "
            "| | | context only |"
        )
    signed_up = bulk["undertow_signed"]["upload"]["mb_per_s"]
    rows.append(
        f"| 100 MB upload, pickle, signed (a token) | {raw_b['upload']['mb_per_s']:,.0f} MB/s "
        f"| {signed_up:,.0f} MB/s | {signed_up / raw_b['upload']['mb_per_s']:.2f}x "
        "| | | context only |"
    )
    kv = results["memkv"]
    rows.append(
        f"| memkv example: {kv['puts']:,} sync puts | {kv['raw_zmq_s']:.2f} s "
        f"({kv['puts']:,} zmq REQ/REP) | {kv['undertow_s']:.2f} s | {kv['ratio_vs_raw']:.2f}x "
        f"| | | {goal('memkv 10,000 puts / raw', f'<= {TARGET_MEMKV_RATIO}x')} |"
    )
    rows.append(
        f"| numpy.copy of 100 MB (memcpy) | {mem['mb_per_s']:,.0f} MB/s | "
        f"up {bulk['ratios']['upload_vs_numpy_copy']:.2f}x, "
        f"down {bulk['ratios']['download_vs_numpy_copy']:.2f}x of it | | | | |"
    )
    rows += _remote_data.summary_rows(results["remote_data"], goal)
    head = (
        f"undertow {m['undertow']} ({m['undertow_commit']}), {m['date_utc']}: "
        f"{m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, "
        f"pyzmq {m['pyzmq']} / libzmq {m['libzmq']}, Pyro5 {m['Pyro5']}, rpyc {m['rpyc']}, "
        f"ray {m.get('ray', 'not installed')}"
        f"{' (--quick)' if results['config']['quick'] else ''}; load average "
        f"{m['loadavg_1_5_15_at_start'][0]} at start; all traffic on 127.0.0.1, "
        "each server in its own process; MB = 10^6 bytes."
    )
    return head + "\n\n" + "\n".join(rows)


# -- main ----------------------------------------------------------------------------------------


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _server_exits(servers: dict[str, ServerProcess]) -> dict[str, Any]:
    return {
        name: {
            "returncode": s.returncode,
            "seconds_from_sigterm_to_exit_at_most": round(s.stop_seconds or 0.0, 3),
        }
        for name, s in servers.items()
    }


def run(plan: Plan, quick: bool) -> dict[str, Any]:
    """Run every measurement and return the results (without the summary)."""
    peers = peers_available()
    kinds = [
        "raw-rep",
        "raw-router",
        "raw-tcp",
        "undertow",
        "undertow-zmq",
        "undertow#up",
        "undertow#down",
        "undertow-tcp#up",
        "undertow-tcp#down",
        "undertow-shm#up",
        "undertow-shm#down",
        "undertow#signed",
        "undertow-http",
        "memkv",
        *_remote_data.KINDS,
    ]
    kinds += [name for name in SERVER_PEERS if peers[name]]
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine_info(peers),
        "config": {"quick": quick, "window": WINDOW, "payload_bytes": BULK_BYTES, **vars(plan)},
    }
    with running(kinds) as servers:
        results["startup_s"] = round(time.perf_counter() - started, 3)
        clients = connect_all(servers)
        try:
            print("measuring latency ...", file=sys.stderr, flush=True)
            results["latency"] = measure_latency(clients, plan)
            print("measuring throughput ...", file=sys.stderr, flush=True)
            results["throughput"] = measure_throughput(clients, plan)
        finally:
            clients.close()
        print("measuring the memkv service ...", file=sys.stderr, flush=True)
        results["memkv"] = measure_memkv(servers, plan)
        print("measuring bulk transfers ...", file=sys.stderr, flush=True)
        results["bulk"] = measure_bulk(servers, plan)
        print("measuring remote data (1 GB arrays) ...", file=sys.stderr, flush=True)
        results["remote_data"] = _remote_data.measure_remote_data(
            {name: s.address for name, s in servers.items()},
            calls=plan.slice_calls,
            rounds=plan.slice_rounds,
            warmup=plan.latency_warmup,
            runs=plan.fetch_runs,
        )
    results["server_exits"] = _server_exits(servers)
    for section in ("latency", "throughput"):
        results[section]["peers"] = {
            name: "measured" if peers[name] else "not installed" for name in SERVER_PEERS
        }
    results["targets"] = targets(results)
    results["all_targets_pass"] = all(t["pass"] for t in results["targets"])
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["machine"]["loadavg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, write the JSON and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    # the memkv service registers in a registry of this run's own, which its client searches
    with tempfile.TemporaryDirectory(prefix="undertow-bench-") as home:
        os.environ["UNDERTOW_HOME"] = home
        os.environ.pop("UNDERTOW_BACKEND", None)
        results = run(Plan.make(args.quick), args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(f"\nwritten to {args.out} in {results['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
