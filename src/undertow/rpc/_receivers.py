"""Threads that take turns reading a server's socket and run what they read.

A thread hand-off costs 25-50 µs on a small machine, a third of a loopback round trip, so
the function server avoids it on the common path: the thread that receives a call runs it
itself (*inline*) and then goes back to receiving. Other callers must not wait behind a slow
call, so:

* when the function has been slow before, the receiver first hands the receive role to an
  idle thread (one wake-up, off the critical path);
* otherwise it runs the call inline without waking anyone, and one idle thread, the
  *sentinel*, checks every ``slow_after`` seconds whether an inline call has been running
  longer than that; if so it takes the receive role over and remembers the function as slow.

A slow call therefore holds up other callers for at most about twice ``slow_after`` once,
and not at all after that. One thread always stays free to receive: when every other thread
is busy, calls wait in a backlog, which bounds the functions running at once to
``threads - 1``.

The coordination state lives in :class:`_State` (no I/O); :class:`ReceiverPool` is the
threaded shell around it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from undertow.transport import ServerSocket

__all__ = ["Job", "ReceiverPool", "Slots"]

#: After this many seconds without an inline call the sentinel stops polling.
_IDLE_AFTER = 1.0

log = logging.getLogger(__name__)

#: What a dispatcher returns for work to run in a pool thread: (key, function). The key
#: (a function name) is what the pool learns "slow" about.
Job = tuple[str, Callable[[], None]]
Dispatch = Callable[..., Job | None]  # (peer, frames[, identity]): what the socket gave


class _State:
    """Who receives, who is idle, what waits; guarded by the pool's condition."""

    def __init__(self) -> None:
        self.receiving = False
        self.idle = 0
        self.sentinel = False
        self.sentinel_deep = False
        self.last_inline = 0.0
        self.inline_since: float | None = None
        self.inline_key = ""
        self.inline_owner = 0  # the thread running the inline call
        self.backlog: deque[Job] = deque()
        self.slow: set[str] = set()
        self.stopping = False


class Slots:
    """How many jobs may run at once across the pools that share this (a server's ZeroMQ and
    plain-socket pools share one: ``max_workers`` bounds the functions running, not each
    transport's share of them). A pool whose job finds no slot keeps it in its backlog; a
    slot given back wakes every pool with a backlog."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._lock = threading.Lock()
        self._pools: list[ReceiverPool] = []
        #: a take() found no slot since the last give(): some pool may have a job waiting
        #: (a pool takes and queues under its own lock, which _backlog_may_run waits for)
        self._wanted = False

    def take(self) -> bool:
        """Take a slot if one is free."""
        with self._lock:
            if self._free <= 0:
                self._wanted = True
                return False
            self._free -= 1
            return True

    def give(self) -> None:
        """Give a slot back; if a take() found none meanwhile, pools with waiting jobs look
        again (otherwise no pool can have one: the common case costs one lock)."""
        with self._lock:
            self._free += 1
            if not self._wanted:
                return
            self._wanted = False
            pools = list(self._pools)
        for pool in pools:
            pool._backlog_may_run()

    def join(self, pool: ReceiverPool) -> None:
        with self._lock:
            self._pools.append(pool)


class ReceiverPool:
    """``threads`` threads sharing one socket; at most ``threads - 1`` run jobs at once.

    Args:
        sock: the server's socket.
        dispatch: called in the receiving thread with each message as the socket gives it
            (peer id, frames; a plain-socket hub adds the identity of a signed connection);
            returns a job to run in a pool thread, or None when it handled (or forwarded) the
            message itself.
        threads: how many threads (at least 2).
        slow_after: seconds after which an inline call counts as slow.
        name: prefix of the threads' names.
        slots: shared with other pools, bounds the jobs running in all of them (default:
            ``threads - 1``, this pool's own).
    """

    def __init__(
        self,
        sock: ServerSocket,
        dispatch: Dispatch,
        *,
        threads: int,
        slow_after: float = 0.005,
        name: str = "undertow",
        slots: Slots | None = None,
    ) -> None:
        if threads < 2:
            raise ValueError(f"a receiver pool needs at least 2 threads, not {threads}")
        self._sock = sock
        self._dispatch = dispatch
        self._slow_after = slow_after
        self._state = _State()
        # ``with self._lock`` (a C lock) is cheaper than ``with self._cond`` on the hot path;
        # the condition shares that lock, so notify() and wait() work under either.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._busy: set[int] = set()
        #: the jobs this pool may run, shared with the pools of the server's other transports
        self.slots = Slots(threads - 1) if slots is None else slots
        self.slots.join(self)
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        """Start the threads."""
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving. Threads inside a job are not waited for: a Python thread cannot be
        interrupted, and their late replies are dropped with the socket."""
        with self._lock:
            self._state.stopping = True
            self._cond.notify_all()
        self._sock.wake()  # the receiving thread waits inside the socket
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident not in self._busy:
                thread.join(max(0.0, deadline - time.monotonic()))

    # -- the threads ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._next_turn()
            if job is None:
                return
            if job[1] is _RECEIVE:
                self._receive()
            else:
                self._run(job)
            # Drop the job before waiting again: it holds the call's arguments, which may be
            # a 100 MB array the caller expects to be freed once the call returns.
            job = None

    def _next_turn(self) -> Job | None:
        """Block until this thread has a job or the receive role; None means stop."""
        st = self._state
        with self._lock:
            while not st.stopping:
                if st.backlog and self.slots.take():
                    return st.backlog.popleft()
                if not st.receiving and st.inline_since is None:
                    # the role is free; while a quick call runs inline it is not: that
                    # thread takes it back, unless the sentinel finds the call overdue
                    self._take_role()
                    return ("", _RECEIVE)
                st.idle += 1
                sentinel = not st.sentinel
                try:
                    if sentinel:
                        # Watch inline calls while the server is busy; sleep deeply (and be
                        # woken by the next inline call) once it has been idle a while.
                        st.sentinel = True
                        busy = time.monotonic() - st.last_inline < _IDLE_AFTER
                        st.sentinel_deep = not busy
                        self._cond.wait(self._slow_after if busy else None)
                    else:
                        self._cond.wait()
                finally:
                    st.idle -= 1
                    if sentinel:
                        st.sentinel = st.sentinel_deep = False
                if sentinel and self._inline_overdue():
                    self._take_role()
                    return ("", _RECEIVE)
            return None

    def _inline_overdue(self) -> bool:
        st = self._state
        since = st.inline_since
        return since is not None and time.monotonic() - since > self._slow_after

    def _take_role(self) -> None:
        """Become the receiver (condition held); an inline call still running is now slow."""
        st = self._state
        if st.inline_since is not None:
            if time.monotonic() - st.inline_since > self._slow_after:
                st.slow.add(st.inline_key)
            st.inline_since = None
        st.receiving = True

    def _receive(self) -> None:
        """Receive until this thread hands the role over to run a job."""
        sock, st = self._sock, self._state
        sock.own()  # from now on the previous receiver's sends go through the relay
        while not st.stopping:
            received = sock.recv(1000)  # blocks inside ZeroMQ; stop() wakes it
            if received is None:
                continue
            try:
                job = self._dispatch(*received)
            except Exception:
                log.exception("error while dispatching a message; it was dropped")
                continue
            if job is not None:
                handed_over = self._run_received(job)
                job = received = None  # see _work: nothing of a finished call stays referenced
                if handed_over:
                    return

    def _run_received(self, job: Job) -> bool:
        """Run or queue a job the receiver got; True if this thread gave up the role."""
        st = self._state
        key = job[0]
        me = threading.get_ident()
        with self._lock:
            if st.idle == 0 or not self.slots.take():
                st.backlog.append(job)  # the last free thread keeps receiving
                return False
            st.receiving = False
            # Known-slow functions are handed over at once; anything else runs inline, even
            # with more input waiting (running quick calls back to back is fastest), and the
            # sentinel steps in if it turns out slow.
            inline = key not in st.slow
            started = time.monotonic()
            if inline:
                st.inline_since = st.last_inline = started
                st.inline_key, st.inline_owner = key, me
            # Wake an idle thread unless an awake sentinel is already watching: it takes the
            # role, or becomes the sentinel (the post is empty after a sentinel took the role).
            # A sentinel sleeping deeply (after an idle spell) must wake itself: it may wait
            # behind other idle threads, and one of those, woken instead, would go back to
            # sleep while the call blocks every caller behind it. Once an idle spell, so all.
            if st.sentinel_deep:
                self._cond.notify_all()
            elif not inline or not st.sentinel:
                self._cond.notify()
        self._run(job, me)
        with self._lock:
            if inline and st.inline_since is not None and st.inline_owner == me:
                # nobody took over: the call was quick; carry on receiving
                st.inline_since = None
                if not st.receiving:
                    st.receiving = True
                    return False
            elif key in st.slow and time.monotonic() - started < self._slow_after:
                st.slow.discard(key)  # it got quick again
        return True

    def _run(self, job: Job, me: int = 0) -> None:
        me = me or threading.get_ident()
        self._busy.add(me)
        try:
            job[1]()
        except Exception:  # jobs report their own errors; this is the last line of defence
            log.exception("a job for %r failed outside its own error handling", job[0])
        finally:
            self._busy.discard(me)
            self.slots.give()

    def _backlog_may_run(self) -> None:
        """A slot came free: an idle thread looks at the backlog again."""
        with self._lock:
            if self._state.backlog:
                self._cond.notify()


def _receive_marker() -> None:
    """Stands for "take the receive role" in :meth:`ReceiverPool._next_turn`."""


_RECEIVE = _receive_marker
