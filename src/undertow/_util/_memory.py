"""Large message buffers reused, not faulted in again: glibc's malloc settings for a process
that moves frames.

ZeroMQ's I/O thread allocates every frame it receives. glibc serves a request of 128 KiB or
more with a fresh ``mmap`` until the first such buffer is freed; from then on it raises its
threshold to that size and serves from the heap, but gives the top of a heap back to the
system as soon as twice that much is free there. A server that passes on batches of 1 MB
frames frees several at once, so the heap shrinks and grows again all the time: every page
of every frame is faulted in and zeroed anew, about a third more CPU than the copies through
TCP themselves.

:func:`tune_malloc` sets the two thresholds once, to where glibc's own adjustment would
take them after one 32 MiB buffer: buffers up to 32 MiB come from the heap, and free memory
at the top of a heap is given back once it exceeds 64 MiB. Only glibc on Linux has these
settings. It leaves malloc alone when the environment already says how to set it
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, glibc tunables) or when
``UNDERTOW_MALLOC=system``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

log = logging.getLogger(__name__)

#: requests of this size and more get a mapping of their own
MMAP_THRESHOLD = 32 << 20
#: free memory at the top of a heap beyond this goes back to the system
TRIM_THRESHOLD = 64 << 20
#: glibc's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: environment variables by which the user (or glibc) already decides
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_state: list[bool] = []  # [applied] once decided


def tune_malloc() -> bool:
    """Set glibc's thresholds for this process, once; True if they are undertow's now.

    Safe to call from any thread, any number of times; a no-op off glibc.
    """
    if _state:
        return _state[0]
    with _lock:
        if not _state:
            _state.append(_apply())
    return _state[0]


def _apply() -> bool:
    if os.environ.get("UNDERTOW_MALLOC", "").strip().lower() == "system":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False  # musl and others have no such settings
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # the trim threshold first: the mmap one alone would pin glibc's at its current value
    done = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    )
    if not done:
        log.debug("glibc refused undertow's malloc thresholds; its own are in use")
    return done
