"""Waiting for a quick answer without going to sleep first (the plain sockets' waits)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

__all__ = ["DEFAULT_SPIN_US", "SPIN_ENV", "Spinner", "spin_budget"]

T = TypeVar("T")

#: microseconds a thread waiting for an answer looks for it without sleeping, first
#: (``UNDERTOW_SPIN_US``; 0: never): see :class:`_Spin`
SPIN_ENV = "UNDERTOW_SPIN_US"
DEFAULT_SPIN_US = 300


class _Spin:
    """Waiting for a quick answer without going to sleep first.

    A thread that blocks in ``poll`` lets its CPU go idle; on a virtual machine an idle
    virtual CPU is halted, and waking it for the answer costs more than a loopback round
    trip (50 µs a wake-up measured on the 2-core test machine, where a raw TCP echo takes
    130 µs blocking and 28 µs when the client looks for the answer without sleeping). So a
    client thread waiting for an answer first polls without waiting for up to ``budget``
    seconds, then sleeps in ``poll`` as before. That costs CPU only while it spins, and it
    spins only where it pays:

    * at most one thread of a process spins at a time (others sleep at once: several
      spinning threads would fight for the GIL and for the CPU the server needs);
    * never on a machine with one CPU (the server would wait for the spinner's time slice);
    * a socket whose last answer came later than the budget stops spinning, and tries again
      every :attr:`RETRY` waits (a server of slow functions costs one spin in eight).
    """

    RETRY = 8

    def __init__(self, setting: str | None, cpus: int | None) -> None:
        #: seconds a wait may spin (0: never)
        self.budget = spin_budget(setting, cpus)
        #: a thread of this process is spinning now
        self.busy = False
        #: spins begun in this process (for tests and curious users)
        self.spins = 0


def spin_budget(setting: str | None, cpus: int | None) -> float:
    """Seconds of spinning before a wait sleeps, from :data:`SPIN_ENV`'s value (microseconds,
    at most 10,000) and the CPU count; 0 on one CPU or when the setting is 0."""
    if setting is None or not setting.strip():
        micros = float(DEFAULT_SPIN_US)
    else:
        try:
            micros = float(setting)
        except ValueError:
            warnings.warn(
                f"{SPIN_ENV}={setting!r} is not a number of microseconds: spinning "
                f"{DEFAULT_SPIN_US} µs (0 turns it off)",
                stacklevel=2,
            )
            micros = float(DEFAULT_SPIN_US)
    if (cpus or 1) < 2 or not micros > 0:
        return 0.0
    return min(micros, 10_000.0) / 1e6


_spin = _Spin(os.environ.get(SPIN_ENV), os.cpu_count())


class Spinner:
    """One socket's side of :class:`_Spin`: how many of its waits since one ended within the
    budget (a client's connection, a server's hub)."""

    __slots__ = ("misses",)

    def __init__(self) -> None:
        self.misses = 0

    def look(self, poll: Callable[[], T]) -> T | None:
        """Call ``poll`` (a look that does not wait) until it returns something true or the
        spin budget is spent; what it returned, or None when this wait should sleep."""
        spin = _spin
        if not spin.budget or spin.busy:
            return None
        misses = self.misses
        if misses and misses % spin.RETRY:
            self.misses = misses + 1
            return None
        spin.busy = True  # one spinner a process (a race lets two spin once: harmless)
        spin.spins += 1
        try:
            clock = time.perf_counter
            end = clock() + spin.budget
            while clock() < end:
                found = poll()
                if found:
                    self.misses = 0
                    return found
        finally:
            spin.busy = False
        self.misses = misses + 1
        return None
