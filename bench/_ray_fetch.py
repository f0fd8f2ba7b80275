"""Ray's same-host fetch of the bulk payload, a peer row of ``bench.bench`` when ray is installed.

One local Ray serves the whole bulk section. It is started before any step is timed and shut
down when the section ends, whatever happens: ``ray.init(address="local", num_cpus=1,
num_gpus=0, include_dashboard=False, object_store_memory=1 GB, log_to_driver=False)``, every
process on 127.0.0.1 (the node address is checked), usage stats off, its session files in a
temporary directory that is removed afterwards.

A Ray task makes the float64 array (``np.ones``, as the undertow server's ``make`` does), so it
sits in Ray's shared-memory object store, and this process takes it with ``ray.get``:

* one object, ``ray_fetch``: ``ray.get`` of an object made once before timing (as the undertow
  and raw servers make their download payload once), run after run. Ray hands out a read-only,
  zero-copy view of its store, mapped into this process since the first ``ray.get`` (made at
  start, untimed).
* a fresh object each run, ``ray_fresh_fetch``: the step before it (``ray_fresh_make``, not a
  figure of its own) starts a new task and waits for it with ``ray.wait``, so only the
  ``ray.get`` of the new result is timed.

Either way the timed step reads one byte of each 4 KiB page of what it got, as the undertow
download step does. If Ray fails to start, or a task or ``ray.get`` fails or times out, the
reason is kept and the steps do nothing from then on, so the other bulk rows go on.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bench._common import check

#: Ray's object store: the object made once, a fresh one and one being freed fit with room
STORE_BYTES = 1_000_000_000
TIMEOUT = 60.0
#: the steps that ``RayFetch.steps`` gives, in the order they run; only the fetches are figures
STEPS = ("ray_fetch", "ray_fresh_make", "ray_fresh_fetch")
_LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report sent anywhere
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # processes Ray starts take the loopback address
}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:500]


def _read_pages(got: np.ndarray[Any, Any], nbytes: int) -> None:
    """Read one byte of each 4 KiB page, as the undertow download step does, and check it."""
    touched = int(got.view(np.uint8)[7::4096].sum())  # 0x3f, the top byte of each 1.0
    check((got.nbytes, float(got[-1]), touched > 0), (nbytes, 1.0, True))


class RayFetch:
    """A started local Ray with the object of the one-object step, or why there is none."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ray: Any = None
        self.task: Any = None
        self.kept: Any = None  # the object fetched run after run
        self.fresh: Any = None  # the object of the fresh-object step, between its two steps
        #: why there are no figures: where it failed ("start", "run", ...) and the error
        self.failure: dict[str, str] | None = None
        self.shutdown_error: str | None = None
        self.startup_s: float | None = None

    def fail(self, where: str, exc: BaseException) -> None:
        """Keep the first failure; the steps do nothing after it."""
        if self.failure is None:
            self.failure = {"where": where, "error": _describe(exc)}

    def start(self, ray: Any) -> None:
        """Check Ray's node address, start its worker, make the kept object and fetch it once."""
        self.ray = ray
        address = str(ray.util.get_node_ip_address())
        if address != "127.0.0.1":
            raise RuntimeError(f"Ray's node address is {address}, not 127.0.0.1")
        nbytes = self.nbytes

        def make() -> np.ndarray[Any, Any]:  # defined here so Ray sends it by value
            return np.ones(nbytes // 8)

        self.task = ray.remote(num_cpus=1)(make)
        self.kept = self._made()
        _read_pages(ray.get(self.kept, timeout=TIMEOUT), nbytes)

    def _made(self) -> Any:
        """A new object from the task, once the task has finished."""
        ref = self.task.remote()
        ready, _ = self.ray.wait([ref], num_returns=1, timeout=TIMEOUT)
        if not ready:
            raise TimeoutError(f"the Ray task did not finish in {TIMEOUT:.0f} s")
        return ref

    def _fetch_kept(self) -> object:
        got = self.ray.get(self.kept, timeout=TIMEOUT)
        _read_pages(got, self.nbytes)
        return got  # let go of after the clock stops

    def _make_fresh(self) -> object:
        self.fresh = self._made()
        return None

    def _fetch_fresh(self) -> object:
        ref, self.fresh = self.fresh, None
        got = self.ray.get(ref, timeout=TIMEOUT)
        _read_pages(got, self.nbytes)
        return ref, got  # both let go of after the clock stops, which frees the object

    def _guarded(self, step: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            if self.failure is not None:
                return None
            try:
                return step()
            except Exception as exc:
                self.fail("run", exc)
                return None

        return run

    def steps(self) -> dict[str, Callable[[], object]]:
        """The timed steps (none if Ray did not start); each does nothing after a failure."""
        if self.failure is not None:
            return {}
        bodies = (self._fetch_kept, self._make_fresh, self._fetch_fresh)
        return {name: self._guarded(body) for name, body in zip(STEPS, bodies, strict=True)}


@contextlib.contextmanager
def _local_only(ray: Any) -> Iterator[None]:
    """Keep every Ray process on the loopback address and usage stats off, for the session.

    On Linux Ray takes the address that routes outwards as its node address, even when given
    127.0.0.1, unless clusters are disabled: the flag is read when ray is imported, so it is
    set in the environment (for the processes Ray starts) and in the imported module.
    """
    constants: Any = importlib.import_module("ray._private.ray_constants")
    saved_env = {name: os.environ.get(name) for name in _LOCAL_ENV}
    saved_flag = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ.update(_LOCAL_ENV)
    if saved_flag is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved_flag is not None:
            constants.ENABLE_RAY_CLUSTER = saved_flag
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _shutdown(fetch: RayFetch, ray: Any) -> None:
    try:
        ray.shutdown()
    except Exception as exc:
        fetch.shutdown_error = _describe(exc)


@contextlib.contextmanager
def session(ray: Any, nbytes: int) -> Iterator[RayFetch]:
    """A local Ray (the imported ``ray`` module), ready for ``RayFetch.steps``, shut down and
    its files removed on exit. A failure to start is kept in ``RayFetch.failure``, not raised.
    """
    fetch = RayFetch(nbytes)
    on_sigterm = signal.getsignal(signal.SIGTERM)
    with contextlib.ExitStack() as stack:
        try:
            started = time.perf_counter()
            stack.enter_context(_local_only(ray))
            temp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="ray-", ignore_cleanup_errors=True)
            )
            # Ray puts in a SIGTERM handler of its own: the benchmark's is put back after init
            # (so SIGTERM unwinds through this shutdown) and once more at the end
            stack.callback(signal.signal, signal.SIGTERM, on_sigterm)
            stack.callback(_shutdown, fetch, ray)  # also after an init that failed half way
            ray.init(
                address="local",
                num_cpus=1,
                num_gpus=0,
                include_dashboard=False,
                object_store_memory=STORE_BYTES,
                log_to_driver=False,
                logging_level=logging.ERROR,
                _node_ip_address="127.0.0.1",
                _temp_dir=temp,
            )
            signal.signal(signal.SIGTERM, on_sigterm)
            fetch.start(ray)
            fetch.startup_s = round(time.perf_counter() - started, 2)
        except Exception as exc:
            fetch.fail("start", exc)
        yield fetch
