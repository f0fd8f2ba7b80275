"""Child processes of the job-queue benchmark: workers and the redis-server, each ready by a
line it prints, paused and resumed as a group, and all stopped at the end whatever happens.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
#: lines of a child's output kept to explain a failure
TAIL_LINES = 40


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago (redis-server cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A process in a session of its own (a Ctrl-C reaches only the benchmark, which stops it),
    its stdout and stderr read by a thread that keeps the last lines."""

    def __init__(
        self, name: str, args: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            list(args),
            cwd=REPO,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._reader: threading.Thread | None = None
        self.paused = False

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.proc.pid} rc={self.proc.poll()}>"

    def wait_ready(self, pattern: bytes, deadline: float) -> re.Match[bytes]:
        """Read the output until a line matches ``pattern``; then keep reading it in a thread
        (a full pipe would block the child). RuntimeError if it exits or the deadline passes."""
        out = self.proc.stdout
        assert out is not None
        fd, seen, regex = out.fileno(), b"", re.compile(pattern)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while (match := regex.search(seen)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name} did not get ready: {self._said(seen)}")
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 65536)  # unbuffered: select() sees every byte not read
                if not chunk:
                    code = self.proc.wait(STOP_TIMEOUT)
                    raise RuntimeError(f"{self.name} exited ({code}): {self._said(seen)}")
                seen += chunk
        self.tail.extend(seen.decode(errors="replace").splitlines())
        self._reader = threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True)
        self._reader.start()
        return match

    @staticmethod
    def _said(seen: bytes) -> str:
        lines = seen.decode(errors="replace").splitlines()[-TAIL_LINES:]
        return "\n".join(lines) or "(no output)"

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        with contextlib.suppress(OSError, ValueError):
            for line in iter(out.readline, b""):
                self.tail.append(line.decode(errors="replace").rstrip())

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child and whatever it started (its process group)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        self.signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)
        self.paused = False

    def stop(self) -> int:
        """SIGTERM (resumed first if paused), SIGKILL after STOP_TIMEOUT; the exit status."""
        if self.paused:
            self.resume()
        self.signal_group(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            code = self.proc.wait(STOP_TIMEOUT)
        self.signal_group(signal.SIGKILL)  # any child it left behind in its group
        if self._reader is not None:
            self._reader.join(1.0)
        if self.proc.stdout is not None and not (self._reader and self._reader.is_alive()):
            self.proc.stdout.close()
        return code


class Children:
    """Every child of the run: ``stop_all`` (in ``finally``) ends those still running."""

    def __init__(self) -> None:
        self._running: list[Child] = []

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        ready: bytes,
        env: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Child:
        """Start a child and wait for its readiness line (``ready``, a regex)."""
        child = Child(name, args, env=env)
        self._running.append(child)
        child.wait_ready(ready, deadline or time.monotonic() + READY_TIMEOUT)
        return child

    def stop(self, child: Child) -> int:
        if child in self._running:
            self._running.remove(child)
        return child.stop()

    def stop_all(self) -> None:
        while self._running:
            child = self._running.pop()
            with contextlib.suppress(Exception):
                child.stop()


@contextlib.contextmanager
def redis_server(children: Children, workdir: Path) -> Iterator[str]:
    """A redis-server of our own on a free port of 127.0.0.1, its files in ``workdir``; its
    URL. Durable as Redis recommends: an append-only file synced every second. A port taken
    meanwhile makes the server exit, and another is tried."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    last: Exception | None = None
    for _ in range(5):
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(workdir)]
        try:
            child = children.start("redis-server", args, ready=rb"Ready to accept connections")
        except RuntimeError as exc:
            last = exc
            continue
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            children.stop(child)
        return
    raise RuntimeError(f"redis-server did not start: {last}")


def rss_bytes(pid: int | None = None) -> int:
    """The resident set size of a process (default: this one), from /proc."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/.../status")
