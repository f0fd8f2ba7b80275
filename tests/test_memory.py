"""The process's malloc settings: large buffers freed together are reused, not faulted in
again (``_util/_memory.py``). Each case runs in a fresh interpreter: the settings are global
and set once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # musl and others do not know the name
        return False


pytestmark = pytest.mark.skipif(
    not _glibc(), reason="the malloc thresholds are glibc's: other C libraries have none to set"
)

#: frees 8 MiB at once, 20 times, after a first round; prints the page faults it took
CHURN = """
import resource, sys
if sys.argv[1] == "tune":
    from undertow._util import tune_malloc
    print(tune_malloc(), tune_malloc())
elif sys.argv[1] == "transport":
    from undertow.transport import context
    context()
def churn():
    for _ in range(20):
        held = [bytearray(2 << 20) for _ in range(4)]
        del held
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

#: 20 rounds of 4 x 2 MiB: 40,960 pages if every round is faulted in anew
ALL_FAULTED = 20 * 4 * 512


def run(mode: str, **env: str) -> list[str]:
    mine = ("MALLOC_", "UNDERTOW_MALLOC", "GLIBC_TUNABLES")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(mine)}
    done = subprocess.run(
        [sys.executable, "-c", CHURN, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


def test_glibc_left_alone_faults_in_every_round_of_large_buffers():
    # the reason for the settings: the default gives the heap back and faults it in again
    [faults] = run("none")
    assert int(faults) > ALL_FAULTED // 2


def test_tuned_malloc_reuses_the_buffers():
    applied, again, faults = run("tune")
    assert (applied, again) == ("True", "True")
    assert int(faults) < ALL_FAULTED // 20


def test_the_zmq_context_tunes_the_process():
    [faults] = run("transport")
    assert int(faults) < ALL_FAULTED // 20


@pytest.mark.parametrize(
    "env",
    [
        {"UNDERTOW_MALLOC": "system"},
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    ],
)
def test_the_users_own_settings_win(env):
    applied, _, faults = run("tune", **env)
    assert applied == "False"
    assert int(faults) > ALL_FAULTED // 2
