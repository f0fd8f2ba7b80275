"""The child processes of a session cluster: started with a readiness handshake, watched,
stopped with a deadline, their logs kept in files of the session's directory.

Each child runs ``python -m undertow.cli._child COMMAND ...`` (``undertow COMMAND`` that stops
when its standard input, a pipe only this process writes to, reaches its end: see
``undertow/cli/_child.py``), so that the children of a notebook whose kernel was killed stop
too. A child is ready when it prints its line (a worker its name, a server its address).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from undertow.errors import ClusterError

__all__ = ["Child", "start_child", "stop_children"]

#: what each kind of child prints once it is ready, and what to take from the line
READY = {
    "worker": re.compile(r"^undertow: worker (\S+) on queues"),
    "data": re.compile(r"serving on (\S+)\s*$"),
    "dashboard": re.compile(r"^undertow: dashboard at (\S+)"),
}


@dataclass
class Child:
    """A started child: its kind, its process, what its ready line said (a worker's name,
    a server's address) and the file its output goes to."""

    kind: str
    process: subprocess.Popen[bytes]
    ready: str
    log: Path
    _copier: threading.Thread | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def start_child(
    kind: str,
    args: Sequence[str],
    *,
    python: str,
    env: Mapping[str, str],
    cwd: str,
    log: Path,
    timeout: float,
) -> Child:
    """Start ``undertow KIND-COMMAND ARGS`` (``args`` begins with the command) and wait until
    it says it is ready; ClusterError with its output if it exits or says nothing
    within ``timeout`` seconds."""
    command = [python, "-u", "-m", "undertow.cli._child", *args]
    sink = log.open("ab")
    try:
        process = subprocess.Popen(  # noqa: S603 - our own command, from our own arguments
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sink,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # a Ctrl-C in the notebook's terminal is not theirs
        )
    finally:
        sink.close()
    assert process.stdout is not None
    try:
        ready, seen = _await_ready(kind, process.stdout, time.monotonic() + timeout)
    except BaseException:
        _kill(process)
        raise
    if ready is None:
        exited = process.poll()
        _kill(process)
        output = seen.decode(errors="replace") + _tail(log)
        why = f"exited ({exited})" if exited is not None else f"did not start within {timeout:g} s"
        raise ClusterError(
            f"the {kind} process (undertow {' '.join(args)}) {why}; its output:\n"
            f"{output.strip() or '(none)'}"
        )
    copier = threading.Thread(target=_copy, args=(process.stdout, log), daemon=True)
    copier.start()
    return Child(kind, process, ready, log, copier)


def _await_ready(kind: str, stream: IO[bytes], deadline: float) -> tuple[str | None, bytes]:
    """What the ready line says, and every byte read so far; None if the child exits or
    says nothing ready before ``deadline``."""
    pattern = READY[kind]
    fd = stream.fileno()
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            for line in seen.decode(errors="replace").splitlines():
                found = pattern.search(line)
                if found:
                    return found.group(1), seen
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return None, seen
            chunk = os.read(fd, 65536)
            if not chunk:
                return None, seen
            seen += chunk


def _copy(stream: IO[bytes], log: Path) -> None:
    """Copy what a child prints after its ready line into its log file."""
    with stream, log.open("ab") as out:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            out.write(chunk)
            out.flush()


def _tail(log: Path, size: int = 4000) -> str:
    try:
        data = log.read_bytes()
    except OSError:
        return ""
    return data[-size:].decode(errors="replace")


def stop_children(children: Sequence[Child], timeout: float) -> None:
    """Stop the children as SIGTERM does (workers finish the jobs they hold), all at once;
    those still running after ``timeout`` seconds are killed."""
    for child in children:
        if child.alive:  # its watch sends it SIGTERM, once (it drains)
            _ask_to_stop(child.process)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            _kill(child.process)
        if child._copier is not None:
            child._copier.join(timeout)


def _ask_to_stop(process: subprocess.Popen[bytes]) -> None:
    """Tell the child's watch (``undertow/cli/_child.py``) to stop it with one SIGTERM."""
    if process.stdin is not None and not process.stdin.closed:
        with contextlib.suppress(OSError):
            process.stdin.write(b"stop\n")
            process.stdin.flush()
    _close_stdin(process)


def _close_stdin(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None and not process.stdin.closed:
        with contextlib.suppress(OSError):
            process.stdin.close()


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    _close_stdin(process)
    if process.stdout is not None:
        process.stdout.close()
