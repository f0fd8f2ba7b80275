"""Where a worker runs its jobs (``Worker(mode=...)``, ``undertow worker --mode``).

- ``thread`` (the default): in threads of the worker process (``_runner.JobThreads``); the
  fastest, but jobs share the process, its GIL, and whatever one of them does to it.
- ``process``: each slot runs its jobs, one after another, in a child process of its own,
  started once and replaced when it dies. CPU-bound Python runs in parallel, and a job that
  crashes its interpreter fails alone.
- ``fork``: each job runs in a child forked from the worker for it, which exits when the job
  ends: nothing a job does to its process reaches the next one (POSIX only).

In the last two the worker never unpickles a job's payload: the child checks its signature
and then unpickles it (``_child.py``); what the job prints reaches its output as it prints
it. A child that dies before its job ended fails that attempt with JobFailed ("the process
running job ... died with signal 9 (SIGKILL)"), which is retried if the job's policy says
so, and the slot goes on with a new child. A job the worker must stop (cancelled, or its lease
lost) is stopped for real: its child is killed with its process group.

"process" children start from multiprocessing's *forkserver* (*spawn* where there is none,
on Windows). Not a plain fork: the worker has threads, an event loop and open connections,
which a fork would copy into each child mid-use. The fork server is a clean single-threaded
process that imported undertow once, so a child, and each replacement of a dead one, starts
in milliseconds instead of the third of a second an interpreter and its imports take here; and
the server itself reports a child's end (``Process.sentinel``), which is seen even when
processes the job forked keep its pipe open. As with any spawned process, the program's main
module is imported again in each child (a script needs ``if __name__ == "__main__":``); the
worker's functions and authenticator are pickled once (functions of importable modules by
reference, others by value); each child takes the worker's environment; and what a job leaves
in its process (module state, threads) is there for the next jobs of its slot.

"fork" children are forked from the worker itself, as a job queue's "work horse" classically
is: the job sees the worker's modules and functions as they are, nothing is pickled. A fork
copies a threaded process: the child has only the forking thread, and locks that other
threads held stay held (the interpreter's own and logging's are reset); Python 3.12 warns of
this. Each fork and exit costs the kernel the worker's page tables and the pages the two
copy on write (2-10 ms for a 50 MB worker on the 2-core machines here), so this mode runs
tens to a few hundred jobs a second.

In both, what a job writes to ``sys.stdout``/``sys.stderr`` is its output; what reaches the
file descriptors directly (C code, subprocesses) goes to the worker's own. A child leads a
process group of its own, so a Ctrl-C at the worker's terminal drains the worker without
interrupting jobs; a service manager that signals every process of the service (systemd's
default ``KillMode=control-group``) should signal the worker alone (``KillMode=mixed``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from undertow.errors import FunctionNotFound, JobFailed, UndertowError
from undertow.queue._child import encode_setup
from undertow.queue._payload import BY_NAME, open_payload
from undertow.queue._procs import (
    STOP_TIMEOUT,
    ChildProc,
    Ended,
    ForkChild,
    ProcessChild,
    process_context,
)
from undertow.queue._runner import (
    Admit,
    JobThreads,
    Keep,
    Outcome,
    Refuse,
    RetryPolicy,
    Slots,
    SlotThreads,
    Task,
    refusal,
    stopped,
)
from undertow.security import Authenticator
from undertow.wire import encode_error, error_info

__all__ = ["MODES", "ChildSlots", "check_mode", "start_slots"]

log = logging.getLogger(__name__)

MODES = ("thread", "process", "fork")


def check_mode(mode: str) -> str:
    """``mode`` if this platform can run it, else ValueError naming the choices."""
    if mode not in MODES:
        raise ValueError(
            f"mode={mode!r}: use 'thread' (jobs in the worker's threads), 'process' (a process "
            "per slot) or 'fork' (a process forked for each job)"
        )
    if mode == "fork" and not hasattr(os, "fork"):
        raise ValueError(f"mode='fork' needs os.fork, which {sys.platform} lacks: use 'process'")
    return mode


def start_slots(
    mode: str,
    count: int,
    *,
    functions: Mapping[str, Callable[..., Any]],
    lookup: Callable[[str], Callable[..., Any]],
    auth: Authenticator | None,
    retry: RetryPolicy,
    retry_max: float,
    refuse: Refuse,
    wake: Callable[[], None],
    admit: Admit | None = None,
    keep: Keep | None = None,
) -> Slots:
    """The worker's ``count`` slots in ``mode`` (see :func:`check_mode`), started; ``admit``
    is asked before each job runs (thread mode only), ``keep`` leaves results asked as
    pointers on a data server."""
    if mode == "thread":
        return JobThreads(
            count,
            lookup=lookup,
            auth=auth,
            retry=retry,
            refuse=refuse,
            wake=wake,
            admit=admit,
            keep=keep,
        )
    if admit is not None:
        raise ValueError(f"mode={mode!r} takes no admission rule (admit=): use mode='thread'")
    children: list[ChildProc]
    if mode == "process":
        setup = encode_setup(functions, auth, retry_max, keep)  # SerializationError says what
        context = process_context()
        starting = threading.Lock()
        children = [ProcessChild(i, context, setup, starting) for i in range(count)]
    else:
        liveness = os.pipe()
        children = [ForkChild(lookup, auth, retry, liveness, keep) for _ in range(count)]
    return ChildSlots(children, lookup=lookup, auth=auth, retry=retry, refuse=refuse, wake=wake)


class ChildSlots(SlotThreads):
    """Slots whose jobs run in child processes (``process`` and ``fork`` modes): a thread
    per slot sends each job to its child and relays what comes back."""

    def __init__(
        self,
        children: list[ChildProc],
        *,
        lookup: Callable[[str], Callable[..., Any]],
        auth: Authenticator | None,
        retry: RetryPolicy,
        refuse: Refuse,
        wake: Callable[[], None],
    ) -> None:
        super().__init__(len(children), refuse=refuse, wake=wake)
        self._children = children
        self._lookup, self._auth, self._retry = lookup, auth, retry
        self._start()

    def __repr__(self) -> str:
        pids = [c.pid for c in self._children]
        return f"<ChildSlots {type(self._children[0]).__name__} running={pids}>"

    def _serve(self, slot: int) -> None:
        child = self._children[slot]
        child.open()
        try:
            super()._serve(slot)
        finally:
            child.close()

    def _run(self, task: Task, slot: int) -> Outcome:
        record = task.record
        if self._refuse(record.id):
            return stopped(record.id)
        if record.codec == BY_NAME:  # an unknown name fails here, without a process
            try:
                self._lookup(record.function)
            except FunctionNotFound as exc:
                return encode_error(refusal(exc)), None
        ended = self._children[slot].run(task)
        if not isinstance(ended, Ended):
            return ended
        if ended.halted:
            return stopped(record.id)
        return self._crashed(task, ended)

    def _crashed(self, task: Task, ended: Ended) -> Outcome:
        """The outcome of an attempt whose process died: JobFailed, retried if the job's
        policy retries it (read from the payload, its signature checked, never unpickled)."""
        record = task.record
        exc = JobFailed(
            f"the process running job {record.id} (pid {ended.pid}) {ended.how}",
            job_id=record.id,
        )
        log.warning("%s (%s)", exc, record.function)
        error = encode_error(error_info(exc))
        try:
            call, _ = open_payload(
                record.id, record.function, record.codec, record.payload, self._auth
            )
        except UndertowError:
            return error, None
        return error, self._retry(record, call, exc)

    def halt(self, job_id: str) -> None:
        """Kill the process running ``job_id`` (its attempt ends stopped)."""
        for child in self._children:
            child.halt(job_id)

    def stop(self) -> None:
        """Kill the jobs running (the worker would drop their outcomes), end the children
        and the threads; jobs not started stay unrun."""
        for child in self._children:
            child.shut()
        super().stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(deadline - time.monotonic(), 0.0))
        self._children[0].release()
