"""Benchmark servers, one per process: ``python -m bench._servers KIND`` from the repo root.

Every kind binds a free port on 127.0.0.1 and prints one line ending in `` on ADDRESS``
(flushed) once it accepts connections; the parent reads that line as its readiness handshake.
Each server then runs until SIGTERM. A watchdog thread also ends the process if its parent
goes away, so an interrupted benchmark never leaves a server behind.

Kinds:
    raw-rep     ZeroMQ REP socket that echoes each message (latency floor).
    raw-router  ZeroMQ ROUTER socket: ``echo``, ``up`` (tiny reply) and ``down`` (big reply).
    raw-tcp     a plain TCP socket, one connection at a time: ``U`` + 8-byte size (the bytes
                follow; answered with the count) and ``D`` + 8-byte size (answered with that
                many bytes): the bulk floor of a plain socket.
    undertow    undertow.Server with echo, total, make, total_signed and rss; callers
                without the token are served (all but total_signed, which takes pickle);
                sync clients make blocking calls over its plain socket (the default).
    pyro5       Pyro5 daemon exposing an object with an ``echo`` method (optional peer).
    rpyc        RPyC ThreadedServer with ``exposed_echo`` (optional peer).
    undertow-zmq  the same without its plain socket: every call over ZeroMQ
    undertow-tcp  the same with a plain socket on TCP only (no local Unix socket, so no
                shared memory): bulk with shared memory off
    undertow-shm  the same with large answers through shared memory over its local socket
                (``UNDERTOW_SHM=1``, whatever the kernel's huge-page setting)
    undertow-http  undertow.Server with echo, blob_len and blob, also served over HTTP; the
                address printed is the HTTP one.
    memkv       the MemKeyValue service of examples/memkv/memkv.py (the design document's
                example, unchanged), served and registered as ``python -m undertow.service``
                does, in the registry of ``$UNDERTOW_HOME``.
    undertow-data        undertow.Server whose ``make(rows, columns)`` leaves its array on the
                server (return_pointer); a 4 GiB memory limit, so 1 GB stays in memory.
    undertow-data-spill  the same with a memory limit of 0: every value spilled to disk.
"""

from __future__ import annotations

import functools
import importlib
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: The undertow server's one user: signed calls and pickle need it.
TOKEN = "bench.Kb2xV9mQ2rT7yU1iO5pL8sD4fG6hJ0zCwE3rT5y"  # noqa: S105 - a loopback bench's secret
#: Kinds this module can serve.
KINDS = (
    "raw-rep",
    "raw-router",
    "raw-tcp",
    "undertow",
    "undertow-zmq",
    "undertow-tcp",
    "undertow-shm",
    "undertow-http",
    "pyro5",
    "rpyc",
    "memkv",
    "undertow-data",
    "undertow-data-spill",
)
#: Commands of the raw ROUTER server, first frame after the peer id.
CMD_ECHO, CMD_UP, CMD_DOWN = b"echo", b"up", b"down"


def announce(kind: str, address: str) -> None:
    """Print the readiness line the parent waits for."""
    print(f"bench: serving {kind} on {address}", flush=True)


def _watch_parent(parent: int) -> None:
    """End this process soon after the benchmark that started it has gone."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="bench-watchdog", daemon=True).start()


def recv_frames(sock: Any) -> list[Any]:
    """Receive one multipart message without pyzmq's ``recv_multipart`` helper.

    The helper asks ``RCVMORE`` through ``getsockopt`` for every frame, which costs a few
    microseconds each: enough to make a raw floor look 25% slower than it is. A frame
    received without copying knows whether more follow.
    """
    frame = sock.recv(copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(copy=False)
        frames.append(frame)
    return frames


def send_frames(sock: Any, frames: list[Any]) -> None:
    """Send one multipart message frame by frame; small frames copied, large ones not."""
    import zmq

    last = len(frames) - 1
    for i, frame in enumerate(frames):
        small = isinstance(frame, bytes) and len(frame) < 65536
        sock.send(frame, zmq.SNDMORE if i < last else 0, copy=small)


def peak_rss_kib() -> int:
    """This process's peak resident set size so far, in KiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``, not ``ru_maxrss``: a child started
    with (v)fork and exec inherits in ``ru_maxrss`` the peak of its parent's memory at the time,
    so a benchmark that already held a 100 MB array would hide the server's own growth.
    Elsewhere ``ru_maxrss`` is the fallback (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# -- raw ZeroMQ floors ---------------------------------------------------------------------------


def serve_raw_rep() -> None:
    """Echo every message on a REP socket."""
    import zmq

    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.REP)
    sock.bind("tcp://127.0.0.1:*")
    announce("raw-rep", sock.getsockopt_string(zmq.LAST_ENDPOINT))
    while True:
        sock.send(sock.recv())


def serve_raw_router() -> None:
    """Serve echo, upload and download requests on a ROUTER socket, without copies."""
    import zmq

    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.bind("tcp://127.0.0.1:*")
    announce("raw-router", sock.getsockopt_string(zmq.LAST_ENDPOINT))
    blobs: dict[int, bytearray] = {}
    while True:
        frames = recv_frames(sock)
        peer, cmd, rest = frames[0].bytes, frames[1].bytes, frames[2:]
        if cmd == CMD_ECHO:
            send_frames(sock, [peer, *(f.bytes for f in rest)])
        elif cmd == CMD_UP:
            send_frames(sock, [peer, str(len(rest[0])).encode()])
        elif cmd == CMD_DOWN:
            size = int(rest[0].bytes)
            blob = blobs.get(size)
            if blob is None:  # made once, so the floor measures the transport alone
                blob = blobs[size] = bytearray(b"\1" * size)
            send_frames(sock, [peer, blob])


def serve_raw_tcp() -> None:
    """Serve bulk uploads and downloads on a plain TCP socket, reading into one buffer."""
    import socket
    import struct

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    announce("raw-tcp", f"tcp://127.0.0.1:{listener.getsockname()[1]}")
    blobs: dict[int, bytearray] = {}  # by size: download blobs and upload buffers, made once
    head = memoryview(bytearray(9))
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while _recv_exactly(conn, head):
                cmd, (size,) = bytes(head[:1]), struct.unpack(">Q", head[1:])
                blob = blobs.get(size)
                if blob is None:  # made once: the floor measures the transfer alone
                    blob = blobs[size] = bytearray(b"\1" * size)
                if cmd == b"U":
                    if not _recv_exactly(conn, memoryview(blob)):
                        break
                    conn.sendall(struct.pack(">Q", size))
                else:
                    conn.sendall(blob)


def _recv_exactly(conn: Any, view: memoryview) -> bool:
    """Fill ``view`` from ``conn``; False if the peer closed first."""
    got, size = 0, len(view)
    while got < size:
        n = conn.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


# -- undertow ------------------------------------------------------------------------------------


def serve_undertow(zmq_only: bool = False, tcp_only: bool = False, shm: bool = False) -> None:
    """Serve echo, total and size (numpy in), make (numpy out, one array per size), total_signed
    (pickle in, for signed callers) and rss; with ``zmq_only``, without the plain socket
    servers have by default (blocking calls then go over ZeroMQ too).

    ``rss()`` returns the peak RSS (KiB) recorded once the server is set up, before it serves
    any call, and the peak RSS now.
    """
    if shm:  # large answers through shared memory whatever the kernel's huge-page setting
        os.environ["UNDERTOW_SHM"] = "1"

    import numpy as np

    import undertow

    def echo(x: Any) -> Any:
        return x

    def total(a: Any) -> float:
        return float(a.sum())

    def size(a: Any) -> int:  # the transfer alone, as the raw TCP server answers its length
        return int(a.nbytes)

    made: dict[int, Any] = {}

    def make(n: int) -> Any:
        # made once per size, as the raw floor makes its blob once: the download figure is
        # the transfer's, not numpy's (the "numpy_ones" memory step shows what making costs)
        arr = made.get(n)
        if arr is None:
            arr = made[n] = np.ones(n // 8)
        return arr

    def rss() -> tuple[int, int]:
        return baseline, peak_rss_kib()

    server = undertow.Server(name="bench", token=TOKEN, allow_anonymous=True)
    server.register("echo", echo)
    server.register("total", total)
    server.register("size", size)
    server.register("total_signed", total)
    server.register("make", make)
    server.register("rss", rss)
    server.config(
        {
            "total": {"input_serialization": "numpy"},
            "size": {"input_serialization": "numpy"},
            "make": {"output_serialization": "numpy"},
            "total_signed": {"input_serialization": "pickle"},
        }
    )
    baseline = peak_rss_kib()
    if not zmq_only and not tcp_only:
        server.serve_forever("127.0.0.1", 0)
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # TCP only: no local Unix socket, so nothing goes through shared memory
    address = server.start(
        "tcp://127.0.0.1:0", plain="tcp+plain://127.0.0.1:0" if tcp_only else None
    )
    print(f"undertow: serving {server.name!r} on {address}", flush=True)
    stop.wait()
    server.stop()


def serve_undertow_data(memory_limit: int) -> None:
    """Serve make(rows, columns): a float64 array of 0, 1, 2, ... that stays on the server
    (return_pointer), in a data store of its own whose directory is removed on the way out."""
    import tempfile

    import numpy as np

    import undertow

    def make(rows: int, columns: int) -> Any:
        return np.arange(rows * columns, dtype=np.float64).reshape(rows, columns)

    with tempfile.TemporaryDirectory(prefix="undertow-bench-data-") as data_dir:
        server = undertow.Server("bench-data", data_dir=data_dir, memory_limit=memory_limit)
        server.register("make", make)
        server.config({"make": {"return_pointer": True}})
        server.serve_forever("127.0.0.1", 0)


# -- peers ---------------------------------------------------------------------------------------


class EchoObject:
    """The object both peers serve."""

    def echo(self, x: Any) -> Any:
        return x


def serve_pyro5() -> None:
    """Serve an echo object from a Pyro5 daemon (its default thread-pool server)."""
    api = importlib.import_module("Pyro5.api")
    api.expose(EchoObject)
    daemon = api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(EchoObject(), "bench.echo")
    announce("pyro5", str(uri))
    daemon.requestLoop()


def serve_rpyc() -> None:
    """Serve ``exposed_echo`` from an RPyC ThreadedServer."""
    rpyc = importlib.import_module("rpyc")
    servers = importlib.import_module("rpyc.utils.server")
    service: Any = rpyc.Service

    class EchoService(service):  # type: ignore[misc]  # rpyc ships no type hints
        def exposed_echo(self, x: Any) -> Any:
            return x

    server = servers.ThreadedServer(
        EchoService,
        hostname="127.0.0.1",
        port=0,
        protocol_config={"sync_request_timeout": 60},
    )
    announce("rpyc", f"tcp://127.0.0.1:{server.port}")
    server.start()


def serve_undertow_http() -> None:
    """Serve echo, blob_len (bytes in) and blob (bytes out, made once per size) over HTTP."""
    import signal

    import undertow

    blobs: dict[int, bytes] = {}

    def echo(x: Any) -> Any:
        return x

    def blob_len(data: bytes) -> int:
        return len(data)

    def blob(n: int) -> bytes:
        data = blobs.get(n)
        if data is None:
            data = blobs[n] = b"\1" * n
        return data

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # for sigwait, in every thread
    server = undertow.Server(name="bench-http")
    for fn in (echo, blob_len, blob):
        server.register(fn.__name__, fn)
    server.start(http_port=0)
    announce("undertow-http", server.http_address)
    signal.sigwait({signal.SIGTERM})  # the server runs in its thread until then
    server.stop()


def serve_memkv() -> None:
    """Serve the memkv example's service until SIGTERM, deregistering it on the way out."""
    import asyncio
    import signal
    from pathlib import Path

    from undertow.service import ServiceHost, collect

    example = Path(__file__).resolve().parent.parent / "examples" / "memkv" / "memkv.py"
    host = ServiceHost(collect([str(example)]), quiet=True)

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, host.stop)
        await host.serve(ready=lambda instances: announce("memkv", instances[0].address))

    asyncio.run(main())


SERVERS: dict[str, Callable[[], None]] = {
    "raw-rep": serve_raw_rep,
    "raw-router": serve_raw_router,
    "raw-tcp": serve_raw_tcp,
    "undertow": serve_undertow,
    "undertow-zmq": functools.partial(serve_undertow, zmq_only=True),
    "undertow-tcp": functools.partial(serve_undertow, tcp_only=True),
    "undertow-shm": functools.partial(serve_undertow, shm=True),
    "undertow-http": serve_undertow_http,
    "pyro5": serve_pyro5,
    "rpyc": serve_rpyc,
    "memkv": serve_memkv,
    "undertow-data": functools.partial(serve_undertow_data, 4 * 2**30),
    "undertow-data-spill": functools.partial(serve_undertow_data, 0),
}


def main(argv: list[str]) -> int:
    """Run the server named by ``argv[0]`` until SIGTERM."""
    if len(argv) != 1 or argv[0] not in SERVERS:
        print(f"usage: python -m bench._servers {{{','.join(KINDS)}}}", file=sys.stderr)
        return 2
    _watch_parent(os.getppid())
    SERVERS[argv[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
