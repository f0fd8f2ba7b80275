"""A real redis-server for the tests, on a free port, with nothing kept on disk."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

from ._processes import free_port

READY = "Ready to accept connections"
START_TIMEOUT = 20.0


def _wait_ready(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """Read the server's log until it is ready (returns "") or exits (returns the log)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    log = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while READY.encode() not in log:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("redis-server did not get ready:\n" + log.decode())
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536)  # unbuffered: select() sees every byte not yet read
            if not chunk:  # exited, e.g. the port was taken meanwhile
                return log.decode() or "(no output)"
            log += chunk
    return ""


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start redis-server on a free port and yield its URL (``redis://127.0.0.1:PORT``).

    Readiness is the server's own log line. A port taken between choosing it and binding it
    makes the server exit, and another port is tried.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; run .ci/system-deps")
    log = ""
    for _ in range(5):
        workdir = tempfile.mkdtemp(prefix="undertow-redis-")  # its files (an AOF if asked)
        port = free_port()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", workdir]
        proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.stdout
        assert out is not None
        drain = threading.Thread(target=out.read, daemon=True)
        try:
            log = _wait_ready(proc, time.monotonic() + START_TIMEOUT)
            if not log:
                drain.start()  # keep reading its log so that it never blocks on a full pipe
                yield f"redis://127.0.0.1:{port}"
                return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(START_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if drain.is_alive():
                drain.join(START_TIMEOUT)  # it reads to the end of the log, then returns
            out.close()
            shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError("redis-server did not start:\n" + log)
