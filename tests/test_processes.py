"""Servers in real child processes: clean stops, restarts, output and warnings."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

import undertow

from ._processes import free_port

pytestmark = pytest.mark.multiproc

WAIT = 15.0

SERVER = """
import os, sys, threading, warnings
import undertow

server = undertow.Server(name="child")

@server.register
def pid() -> int:
    return os.getpid()

@server.register
def hang(seconds: float) -> None:
    print("started", flush=True)
    threading.Event().wait(seconds)

@server.register
def count(n: int):
    yield from range(n)

@server.register
def warn() -> str:
    warnings.warn("careful now", UserWarning)
    print("after the warning")
    return "warned"

server.serve_forever("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_stops_cleanly_on_signals(child, sig):
    server = child(SERVER)
    with undertow.connect(server.address, timeout=WAIT) as client:
        assert client.pid() == server.proc.pid
    server.proc.send_signal(sig)
    assert server.proc.wait(WAIT) == 0


def test_a_server_restart_is_survived(child):
    first = child(SERVER)
    port = first.address.rsplit(":", 1)[1]
    with undertow.connect(first.address, timeout=WAIT) as client:
        assert client.pid() == first.proc.pid
        assert first.stop() == 0
        second = child(SERVER, port)
        assert second.address == first.address
        assert client.pid() == second.proc.pid


def test_warnings_reach_the_caller_on_stderr(child):
    server = child(SERVER)
    chunks: list[tuple[str, str]] = []
    with undertow.connect(
        server.address, timeout=WAIT, output=lambda s, t: chunks.append((s, t))
    ) as c:
        assert c.warn() == "warned"
    stderr = "".join(t for s, t in chunks if s == "stderr")
    assert "UserWarning: careful now" in stderr
    assert ("stdout", "after the warning\n") in chunks


def test_the_demo_runs_and_leaves_no_process_behind():
    exe = os.path.join(os.path.dirname(sys.executable), "undertow")
    proc = subprocess.run([exe, "demo"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for part in (
        "Discovery",
        "train(epochs: int = 3, lr: float = 0.1)",
        "[remote] epoch 3/3",
        "caught ZeroDivisionError",
        "got 1",
        "equal=True",
        "undertow demo: done",
    ):
        assert part in out
    assert "a warning on stderr" in proc.stderr
    child_pid = int(re.search(r"child process (\d+)", out).group(1))  # type: ignore[union-attr]
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


def test_background_server_in_a_thread_reports_its_address():
    server = undertow.Server(name="bg")
    server.register("ping", lambda: "pong")
    with server:
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", server.address)
        with undertow.connect(server.address, timeout=WAIT) as client:
            assert client.ping() == "pong"
    assert not any(t.name.startswith("undertow-server-bg") for t in threading.enumerate())


def test_a_stopped_server_can_serve_again():
    server = undertow.Server(name="again")
    server.register("ping", lambda: "pong")
    for _ in range(2):
        address = server.start()
        try:
            with undertow.connect(address, timeout=WAIT) as client:
                assert client.ping() == "pong"
        finally:
            server.stop()


INTERRUPTED = """
import asyncio, os, signal, threading
import undertow

started, cancelled = threading.Event(), threading.Event()
server = undertow.Server(name="ctrl-c")

@server.register
async def forever() -> None:
    started.set()
    try:
        await asyncio.Event().wait()
    finally:
        cancelled.set()

address = server.start()

def interrupt() -> None:
    if started.wait(10):
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupt, daemon=True).start()
with undertow.connect(address, timeout=30) as client:
    try:
        client.forever()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
print("remote call cancelled" if cancelled.wait(10) else "remote call still running", flush=True)
server.stop()
"""


def test_ctrl_c_during_a_call_cancels_the_remote_call(tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["interrupted", "remote call cancelled"]


# -- connect_wait: clients that must know at once when the server is gone ------------------------


def _dead_address() -> str:
    return f"tcp://127.0.0.1:{free_port()}"  # nothing listens there


def test_with_connect_wait_a_call_to_no_server_fails_at_once_unsent():
    started = time.monotonic()
    with pytest.raises(undertow.NotConnected, match="not sent"):
        undertow.connect(_dead_address(), timeout=WAIT, connect_wait=0.3)
    assert time.monotonic() - started < 0.3 + 2.0  # its connect_wait, not the call's deadline


def test_with_connect_wait_a_call_whose_server_dies_fails_at_once(child):
    server = child(SERVER)

    def kill_when_started(stream: str, text: str) -> None:
        if "started" in text:
            server.proc.kill()  # the call is running on the server now

    # a long connect_wait: the loss must be told at once, not after waiting for a connection
    with undertow.connect(
        server.address, timeout=WAIT, connect_wait=5.0, output=kill_when_started
    ) as client:
        started = time.monotonic()
        with pytest.raises(undertow.ConnectionLost, match=r"hang.*may or may not"):
            client.hang(60)
        assert time.monotonic() - started < 2.0  # within a slice or so of the drop
        with pytest.raises(undertow.NotConnected):  # and the next call is not sent at all
            client.pid()


def test_with_connect_wait_a_future_whose_server_dies_fails_at_once(child):
    server = child(SERVER)
    killed = threading.Event()

    def kill_when_started(stream: str, text: str) -> None:
        if "started" in text:
            server.proc.kill()
            killed.set()

    with undertow.connect(
        server.address, timeout=WAIT, connect_wait=5.0, output=kill_when_started
    ) as client:
        future = client.hang.submit(60)
        assert killed.wait(WAIT)  # the call runs on the server, which is then killed
        started = time.monotonic()
        with pytest.raises(undertow.ConnectionLost):
            future.result(WAIT)
        assert time.monotonic() - started < 2.0


def test_the_async_client_takes_connect_wait_too(child):
    import asyncio

    server = child(SERVER)

    def kill_when_started(stream: str, text: str) -> None:
        if "started" in text:
            server.proc.kill()

    async def main() -> None:
        with pytest.raises(undertow.NotConnected):
            await undertow.connect_async(_dead_address(), timeout=WAIT, connect_wait=0.3)
        async with undertow.AsyncClient(
            server.address, timeout=WAIT, connect_wait=0.3, output=kill_when_started
        ) as client:
            assert await client.pid() == server.proc.pid
            assert [i async for i in client.count(3)] == [0, 1, 2]  # a stream, sent when read
            with pytest.raises(undertow.ConnectionLost):
                await client.hang(60)
            with pytest.raises(undertow.NotConnected):
                await client.pid()

    asyncio.run(main())
