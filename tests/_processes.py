"""Servers in child processes, ready by handshake: each prints a line naming its address."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago, for a program that must be told
    its port (it may be taken meanwhile: callers that can, retry)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServedProcess:
    """A server in a child process, ready once it printed ``lines`` lines saying
    ``serving ... ADDRESS`` (the readiness handshake); their last words are its addresses."""

    def __init__(self, args: list[str], *, cwd: Path | None = None, lines: int = 1) -> None:
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = b""
        #: the lines that said it was ready
        self.lines = self._ready_lines(lines)
        self.addresses = [line.rsplit(" ", 1)[-1] for line in self.lines]
        self.address = self.addresses[0]

    def _ready_lines(self, n: int) -> list[str]:
        """The first ``n`` lines of stdout, read unbuffered: a buffered reader may hold a
        second line that select() then never reports."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        out = b""
        deadline = time.monotonic() + READY_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while out.count(b"\n") < n:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.stop(signal.SIGKILL)
                    pytest.fail(f"the server did not report ready within {READY_TIMEOUT:g} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    err = self.proc.stderr.read() if self.proc.stderr else b""
                    self.stop(signal.SIGKILL)
                    pytest.fail(f"the server did not start: {out!r}\n{err.decode()}")
                out += chunk
        lines = out.decode().splitlines()[:n]
        assert all("serving" in line for line in lines), lines
        return lines

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the process; one that ignores SIGTERM fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("the server ignored SIGTERM") from None
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            #: what the process wrote to stderr, once it has stopped
            self.stderr = self.proc.stderr.read()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


def data_node(backend: str, data_dir: Path, *options: str) -> ServedProcess:
    """``undertow data serve`` registered in ``backend``, keeping its values in ``data_dir``
    (``options``: more of its command line, e.g. ``--advertise HOST``)."""
    args = [sys.executable, "-m", "undertow.cli", "data", "serve", "--backend", backend]
    return ServedProcess([*args, "--data-dir", str(data_dir), *options])


def is_stopped(pid: int) -> bool:
    """True once every thread of process ``pid`` is stopped (by SIGSTOP): the signal is only
    pending until each thread is next scheduled, which a loaded machine can delay."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as stat:
            if stat.read().rpartition(")")[2].split()[0] != "T":
                return False
    return True


class ChildServer(ServedProcess):
    """A server script (its text) running in a child process."""

    def __init__(
        self, script: str, tmp_path: Path, args: tuple[str, ...] = (), *, lines: int = 1
    ) -> None:
        path = tmp_path / f"server_{os.getpid()}_{id(self)}.py"
        path.write_text(textwrap.dedent(script))
        super().__init__([sys.executable, "-u", str(path), *args], lines=lines)


def read_line(
    proc: subprocess.Popen[bytes],
    what: str = "the process",
    log: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> str:
    """The next line ``proc`` prints (its stdout read a byte at a time, so nothing past the
    line stays in a buffer), within ``timeout``; a failure kills it and shows ``log`` (its
    stderr, if it went to a file)."""
    assert proc.stdout is not None
    fd, out = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout

    def tail() -> str:  # (read when it failed: what it said up to then)
        return "" if log is None else "\n" + log.read_text(errors="replace")[-4000:]

    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not out.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                proc.kill()
                pytest.fail(f"no line from {what} within {timeout:g} s: {out!r}{tail()}")
            chunk = os.read(fd, 1)
            if not chunk:
                code = proc.wait()
                pytest.fail(f"{what} exited ({code}) before its line: {out!r}{tail()}")
            out += chunk
    return out.decode().rstrip("\n")
