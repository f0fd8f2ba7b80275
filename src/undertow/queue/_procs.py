"""The worker's side of its job processes ("process" and "fork" modes, ``_modes.py``):
starting them, handing each its job, relaying what it sends back (``_child.py`` is the other
side), noticing its death, killing it.

A child leads a process group of its own, so that a kill reaches whatever its job started.
Its death is seen on a descriptor that the kernel or the fork server makes ready when it
ends (multiprocessing's ``Process.sentinel`` from a fork server; a pidfd for a forked
child, where Linux has them), not only on its pipe, which processes the job forked may
keep open.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from undertow.queue._capture import Sink
from undertow.queue._child import decode_message, encode_task, run_forked, serve
from undertow.queue._runner import Keep, Outcome, RetryPolicy, Task
from undertow.security import Authenticator

__all__ = ["STOP_TIMEOUT", "ChildProc", "Ended", "ForkChild", "ProcessChild", "process_context"]

log = logging.getLogger(__name__)

#: seconds a child gets to exit when its slot stops
STOP_TIMEOUT = 5.0
#: the module the fork server imports once for all the children it forks
_PRELOAD = "undertow.queue._child"
#: forks one at a time: a child forked meanwhile would keep another child's pipe open
_FORKING = threading.Lock()


def process_context() -> BaseContext:
    """The multiprocessing context of "process" children: forkserver, else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # the preload list is the process's own (it matters only before the server starts): add
    # ours to any the program set
    from multiprocessing import forkserver

    preload = list(getattr(forkserver._forkserver, "_preload_modules", []))
    if _PRELOAD not in preload:
        context.set_forkserver_preload([*preload, _PRELOAD])
    return context


@dataclass(slots=True)
class Ended:
    """A job's process ended before it sent the job's outcome."""

    #: the worker killed it: the job was to stop
    halted: bool
    #: else how it ended, e.g. "died with signal 9 (SIGKILL)"
    how: str = ""
    pid: int | None = None


class ChildProc:
    """One slot's child process(es) and the job running there, as the slot's thread and
    the worker's loop (halts) both see them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.job_id: str | None = None
        self.pid: int | None = None
        self._halted = False
        self.closed = False

    def open(self) -> None:
        """Get ready for jobs (in the slot's thread)."""

    def close(self) -> None:
        """The slot's thread ends."""

    def release(self) -> None:
        """The slots stopped: free what the children shared."""

    def run(self, task: Task) -> Outcome | Ended:
        raise NotImplementedError

    def _begin(self, job_id: str, pid: int | None) -> bool:
        with self._lock:
            if self.closed:
                return False
            self.job_id, self.pid, self._halted = job_id, pid, False
            return True

    def _started(self, pid: int) -> None:
        with self._lock:
            self.pid = pid
            if self._halted:
                self._kill(pid)

    def _end(self) -> bool:
        """The job is over (however it ended); whether it was halted."""
        with self._lock:
            self.job_id = self.pid = None
            return self._halted

    def halt(self, job_id: str | None) -> None:
        """Kill the job's process if it runs ``job_id`` (None: whatever it runs)."""
        with self._lock:
            if self.job_id is None or job_id not in (None, self.job_id) or self._halted:
                return
            self._halted = True
            if self.pid is not None:
                self._kill(self.pid)

    def shut(self) -> None:
        """No job starts here any more; the one running is killed."""
        with self._lock:
            self.closed = True
        self.halt(None)

    def _kill(self, pid: int, *, group_only: bool = False) -> None:
        """SIGKILL to the child's process group (itself and what its job started), or to
        the child alone if it has none yet (on Windows: TerminateProcess). ``group_only``:
        a child that died, whose pid may be another's by now; its group, while anything of
        its job lives on, keeps the id reserved."""
        if os.name != "posix":
            if not group_only:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            if not group_only:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


class _Waiter:
    """Waits until a child's pipe can be read, or the child has ended: a poll object made
    once (a few µs a wait), else :func:`multiprocessing.connection.wait` (Windows)."""

    def __init__(self, conn: Connection, sentinel: int | None) -> None:
        self._conn, self._sentinel = conn, sentinel
        self._fd = conn.fileno()
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            self._poll.register(self._fd, select.POLLIN)
            if sentinel is not None:
                self._poll.register(sentinel, select.POLLIN)

    def readable(self) -> bool:
        """Whether the pipe has something to read (or its end); False: the child ended."""
        if self._poll is not None:
            return any(fd == self._fd for fd, _ in self._poll.poll())
        waiting: list[Any] = (
            [self._conn] if self._sentinel is None else [self._conn, self._sentinel]
        )
        return self._conn in wait(waiting)


def _pump(conn: Connection, waiter: _Waiter, sink: Sink) -> Outcome | None:
    """Relay a child's output to ``sink`` until it sends the job's outcome (returned), or
    until it has ended and nothing is left to read (None)."""
    while True:
        if not waiter.readable():
            return None
        try:
            message = decode_message(conn.recv_bytes())
        except (EOFError, OSError):
            return None
        if message[0] == "o":
            with sink:
                sys.stdout.write(message[1])
        elif message[0] == "r":
            return bytes(message[1])
        else:
            return bytes(message[1]), message[2]


def _how(code: int | None) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code is None:
        return "ended before the job did"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"died with signal {-code} ({name})"
    return f"exited with code {code} before the job ended"


class ProcessChild(ChildProc):
    """A long-lived child that runs its slot's jobs one after another (``process`` mode)."""

    def __init__(
        self, index: int, context: BaseContext, setup: list[bytes], starting: threading.Lock
    ) -> None:
        super().__init__()
        self._index, self._context, self._setup = index, context, setup
        #: starts, joins and polls of processes one at a time (multiprocessing's bookkeeping
        #: of children is not thread-safe)
        self._starting = starting
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._waiter: _Waiter | None = None

    def open(self) -> None:
        if self.closed:
            return
        try:
            self._spawn()
        except Exception:  # the next job tries again, and fails with the reason
            log.exception("cannot start the process of job slot %d", self._index)

    def _spawn(self) -> None:
        with self._starting:
            mine, theirs = self._context.Pipe()
            proc = self._context.Process(  # type: ignore[attr-defined]
                target=serve, args=(theirs, self._setup), name=f"undertow-job-{self._index}"
            )
            try:
                proc.start()
            finally:
                theirs.close()
        self._proc, self._conn = proc, mine
        self._waiter = _Waiter(mine, proc.sentinel)

    def run(self, task: Task) -> Outcome | Ended:
        if self._proc is None:
            try:
                self._spawn()
            except Exception as exc:  # reported as the job's failure, retried by its policy
                return Ended(False, f"could not be started: {exc}")
        proc, conn, waiter = self._proc, self._conn, self._waiter
        assert proc is not None
        assert conn is not None
        assert waiter is not None
        if not self._begin(task.record.id, proc.pid):
            return Ended(True)
        try:
            conn.send_bytes(encode_task(task.record))
            outcome = _pump(conn, waiter, task.sink)
        except OSError:  # its end of the pipe is gone: it died
            outcome = None
        halted = self._end()
        if outcome is not None and not halted:
            return outcome
        pid, code = proc.pid, self._reap()
        if pid is not None:  # what its job started dies with it
            self._kill(pid, group_only=True)
        self.open()  # a new child for the next job
        return Ended(halted, _how(code), pid)

    def _reap(self) -> int | None:
        """Wait for the child to end (killed if it lingers), free it; its exit code."""
        proc, conn = self._proc, self._conn
        assert proc is not None
        assert conn is not None
        self._proc = self._conn = self._waiter = None
        conn.close()
        if not wait([proc.sentinel], STOP_TIMEOUT) and proc.pid is not None:
            self._kill(proc.pid)
        with self._starting:
            proc.join()
            code = proc.exitcode
            proc.close()
        return code

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send_bytes(b"")  # the child returns, as it does at the pipe's end
            self._reap()


class ForkChild(ChildProc):
    """Forks a child from the worker for each job of its slot (``fork`` mode)."""

    def __init__(
        self,
        lookup: Callable[[str], Callable[..., Any]],
        auth: Authenticator | None,
        retry: RetryPolicy,
        liveness: tuple[int, int],
        keep: Keep | None = None,
    ) -> None:
        super().__init__()
        self._lookup, self._auth, self._retry, self._keep = lookup, auth, retry, keep
        #: a pipe whose write end only the worker keeps: its children see it close
        self._liveness = liveness
        #: children that sent their job's outcome, not yet reaped (they are exiting)
        self._exiting: list[int] = []

    def run(self, task: Task) -> Outcome | Ended:
        record = task.record
        self._reap(block=False)
        if not self._begin(record.id, None):
            return Ended(True)
        gone, alive = self._liveness
        with _FORKING:
            reader, writer = multiprocessing.Pipe(duplex=False)
            pid = os.fork()
            if pid == 0:  # the child: never returns
                run_forked(
                    record,
                    writer,
                    lookup=self._lookup,
                    auth=self._auth,
                    retry=self._retry,
                    parent_gone=gone,
                    close=(alive, reader.fileno()),
                    keep=self._keep,
                )
            writer.close()
        with contextlib.suppress(OSError):  # the child does it too; whichever is first
            os.setpgid(pid, pid)
        self._started(pid)
        outcome = self._relay(pid, reader, task.sink)
        halted = self._end()
        if outcome is not None and not halted:
            self._kill(pid)  # what the job started in its group goes with it (a fresh start)
            self._exiting.append(pid)  # reaped later: its exit takes a few ms of the kernel's
            return outcome
        self._kill(pid)  # dead (not reaped: the id is still its own) or halted: its group too
        return Ended(halted, _how(_wait_exit(pid)), pid)

    def _reap(self, *, block: bool) -> None:
        for pid in list(self._exiting):
            try:
                done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:  # reaped by someone else
                done = pid
            if done:
                self._exiting.remove(pid)

    def close(self) -> None:
        self._reap(block=True)

    def _relay(self, pid: int, reader: Connection, sink: Sink) -> Outcome | None:
        sentinel = _pidfd(pid)
        try:
            return _pump(reader, _Waiter(reader, sentinel), sink)
        finally:
            reader.close()
            if sentinel is not None:
                os.close(sentinel)

    def release(self) -> None:
        for fd in self._liveness:
            with contextlib.suppress(OSError):
                os.close(fd)


def _pidfd(pid: int) -> int | None:
    """A descriptor that is ready once ``pid`` ends (Linux 5.3+), else None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _wait_exit(pid: int) -> int | None:
    """Reap a forked child; its exit code (None if someone else reaped it)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)
