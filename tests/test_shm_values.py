"""Lasting values in shared memory: a data store keeps its large arrays in sealed memfds, a
client on the same host maps each once and fetches it again as a view of memory already
mapped (no copy, no new mapping), the view outlives the value's deletion and its server, and
a value passed back goes as its descriptor."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import undertow
from undertow.data import DataStore
from undertow.transport import _lasting as _shm
from undertow.transport._lasting import shared_copy, shared_of

from ._waiting import wait_until

pytestmark = [
    pytest.mark.usefixtures("undertow_home"),
    pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux only"),
    pytest.mark.timeout(60),
]

WAIT = 20.0
SIZE = 8 << 20  # over the 1 MiB from which values go into shared memory


@pytest.fixture(autouse=True)
def shared_memory_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Shared memory on (processes started inherit it), and no mapping kept from another test."""
    monkeypatch.setenv("UNDERTOW_SHM", "1")
    _shm.mapped.clear()
    yield
    _shm.mapped.clear()
    gc.collect()  # servers and stores in reference cycles let go of their values now


def address_of(arr: Any) -> int:
    return int(arr.__array_interface__["data"][0])


def value_mappings(pid: int | str = "self") -> int:
    """Lasting values (memfds named undertow-value) a process has mapped (each is mapped
    twice: the value, and its status page)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return len({line.split()[4] for line in lines if "/memfd:undertow-value" in line})


def holds(fd: int, value: _shm.SharedValue) -> bool:
    """Whether descriptor ``fd`` is open on ``value``'s memfd (a number closed may be reused)."""
    try:
        stat = os.fstat(fd)
    except OSError:
        return False
    return (stat.st_dev, stat.st_ino) == value.identity


# -- the store ----------------------------------------------------------------------------------


def test_the_store_keeps_large_arrays_in_shared_memory_when_told(tmp_path):
    store = DataStore(tmp_path / "on", shared_memory=True)
    big = np.arange(SIZE // 8, dtype=np.float64)
    kept = store.get(store.put(big).key)
    assert shared_of(kept) is not None
    assert not kept.flags.writeable
    assert np.array_equal(kept, big)
    assert kept.dtype == big.dtype
    strided = np.arange(SIZE // 4, dtype=np.int32).reshape(-1, 4)[:, ::2]  # not contiguous
    got = store.get(store.put(strided).key)
    assert shared_of(got) is not None
    assert np.array_equal(got, strided)
    small = np.ones(100)
    assert store.get(store.put(small).key) is small  # small: kept as it is
    masked = np.ma.masked_array(np.ones(SIZE // 8), mask=False)
    assert store.get(store.put(masked).key) is masked  # a subclass keeps what it has
    already = store.get(store.put(kept).key)
    assert shared_of(already) is shared_of(kept)  # in shared memory already: no copy
    off = DataStore(tmp_path / "off")
    assert off.get(off.put(big).key) is big


def test_a_value_in_shared_memory_spills_and_comes_back(tmp_path):
    store = DataStore(tmp_path, shared_memory=True, memory_limit=SIZE + SIZE // 2)
    first = store.put(np.full(SIZE // 8, 3.0))
    store.put(np.full(SIZE // 8, 4.0))  # past the limit: the first one spills
    assert store.entry(first.key).where == "disk"
    assert float(store.get(first.key)[-1]) == 3.0


def test_the_mapped_values_are_bounded_and_each_is_mapped_once():
    made = [shared_copy(np.full(1 << 18, float(i))) for i in range(4)]  # 2 MiB each
    values = [value for value in made if value is not None]
    assert len(values) == 4

    def take(value: _shm.SharedValue, fd: int | None = None) -> _shm.SharedValue:
        return mapped.take(os.dup(value.fd) if fd is None else fd, value.nbytes)

    mapped = _shm._Mapped(limit=5 << 20, count=3)
    first = take(values[0])
    assert first.status_at >= 0  # with its status page
    assert first.live()  # kept by this process, alive
    fd = os.dup(values[0].fd)
    assert take(values[0], fd) is first  # the same mapping
    assert not holds(fd, values[0])  # and the descriptor it came with is closed
    take(values[1])
    take(values[2])  # 6 MiB: the oldest goes
    assert take(values[0]) is not first
    assert float(np.frombuffer(first.view())[0]) == 0.0  # what was handed out stays valid
    values[0].retire()
    assert not first.live()  # the keeper let go: peers ask again
    small = _shm._Mapped(limit=1 << 30, count=2)  # bound by count, not bytes
    taken = [small.take(os.dup(value.fd), value.nbytes) for value in values[1:]]
    assert small.take(os.dup(values[3].fd), values[3].nbytes) is taken[2]
    assert small.take(os.dup(values[1].fd), values[1].nbytes) is not taken[0]


# -- between processes ------------------------------------------------------------------------

_SERVER = """
import sys, numpy as np, undertow
from undertow.transport import shared_of
server = undertow.Server(name="values", memory_limit=int(sys.argv[2]))

def make(n):
    return np.arange(n // 8, dtype=np.float64)

def lasting(a):
    return [shared_of(a) is not None, float(a.sum())]

server.register("make", make)
server.register("lasting", lasting)
server.config({"make": {"return_pointer": True}, "lasting": {"input_serialization": "numpy"}})
print(server.start("tcp://127.0.0.1:0", plain=sys.argv[1]), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, f"unix://{tmp_path}/v.sock", str(3 * SIZE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        for stream in (proc.stdin, proc.stdout):
            assert stream is not None
            stream.close()


def test_a_kept_value_is_fetched_as_a_view_of_memory_mapped_once(server_process):
    _, address = server_process
    expected = np.arange(SIZE // 8, dtype=np.float64)
    with undertow.connect(address, timeout=WAIT) as client:
        ptr = client.make(SIZE)
        first = ptr.fetch()
        assert np.array_equal(first, expected)
        assert not first.flags.writeable  # the server's memory: read-only, as Ray's views
        assert value_mappings() == 1
        second = ptr.fetch()
        assert address_of(second) == address_of(first)  # no copy, no new mapping
        del first, second
        third = ptr.fetch()  # the views are gone; the mapping is kept for the next fetch
        assert value_mappings() == 1
        assert np.array_equal(third, expected)
        other = client.make(SIZE).fetch()
        assert address_of(other) != address_of(third)
        assert value_mappings() == 2
        with pytest.raises(ValueError, match="read-only"):
            other[0] = 1.0


def test_a_fetched_value_outlives_its_deletion_and_its_server(server_process):
    proc, address = server_process
    with undertow.connect(address, timeout=WAIT) as client:
        ptr = client.make(SIZE)
        got = ptr.fetch()
        assert ptr.delete() is True
        assert float(got[-1]) == SIZE // 8 - 1  # the mapping holds the pages
        proc.kill()
        proc.wait(WAIT)
        assert float(got.sum()) == float(np.arange(SIZE // 8, dtype=np.float64).sum())
    del got
    _shm.mapped.clear()
    assert wait_until(lambda: value_mappings() == 0, WAIT)  # nothing left once let go of


def value_descriptors() -> int:
    """Descriptors of lasting values this process holds open."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:undertow-value")
    return count


def test_a_peer_holds_one_descriptor_a_value_and_passing_it_back_copies(server_process):
    _, address = server_process
    with undertow.connect(address, timeout=WAIT) as client:
        got = client.make(SIZE).fetch()
        assert value_mappings() == 1
        assert value_descriptors() == 1  # the mapping's own (none kept to pass it on)
        assert client.lasting(got) == [False, float(got.sum())]  # sent as a copy
        fresh = np.ones(SIZE // 8)
        assert client.lasting(fresh) == [False, float(SIZE // 8)]


def test_the_values_a_process_keeps_in_shared_memory_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(_shm, "kept", _shm._Kept(limit=2))
    store = DataStore(tmp_path, shared_memory=True)
    arrays = [store.get(store.put(np.full(SIZE // 8, float(i))).key) for i in range(3)]
    assert [shared_of(a) is not None for a in arrays] == [True, True, False]
    assert store.delete(store.put(np.ones(1)).key)
    first = store.entries()[0].key
    store.delete(first)  # a value let go of gives its place back
    del arrays
    gc.collect()
    again = store.get(store.put(np.full(SIZE // 8, 9.0)).key)
    assert shared_of(again) is not None


def test_without_shared_memory_values_are_copied_and_writable(tmp_path, monkeypatch):
    monkeypatch.setenv("UNDERTOW_SHM", "0")
    server = undertow.Server(name="copies")
    server.register("make", lambda n: np.ones(n // 8))
    server.config({"make": {"return_pointer": True}})
    address = server.start("tcp://127.0.0.1:0", plain=f"unix://{tmp_path}/c.sock")
    try:
        with undertow.connect(address, timeout=WAIT) as client:
            got = client.make(SIZE).fetch()
            assert got.flags.writeable
            assert value_mappings() == 0
    finally:
        server.stop()


@contextlib.contextmanager
def stopped(proc: subprocess.Popen[str]) -> Iterator[None]:
    """The process frozen (SIGSTOP): it answers nothing until the block ends."""
    proc.send_signal(signal.SIGSTOP)

    def frozen() -> bool:  # the signal lands a moment later: until then it may still answer
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] == "T"

    assert wait_until(frozen, WAIT)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def test_a_pointer_fetched_again_asks_nobody_while_its_server_keeps_the_value(server_process):
    proc, address = server_process
    with undertow.connect(address, timeout=WAIT) as client:
        ptr = client.make(SIZE)
        first = ptr.fetch()
        with stopped(proc):  # a round trip would wait for the deadline and fail
            started = time.monotonic()
            again = ptr.fetch(timeout=5)
            assert time.monotonic() - started < 1.0
        assert address_of(again) == address_of(first)
        assert again is not first  # a view of its own
        assert not again.flags.writeable
        other = undertow.Pointer(ptr.to_json(), via=client)  # another pointer asks once
        with stopped(proc), pytest.raises(undertow.UndertowError):
            other.fetch(timeout=0.5)


def test_a_value_deleted_or_spilled_is_asked_for_again(server_process):
    _, address = server_process
    with undertow.connect(address, timeout=WAIT) as client:
        ptr, spilled = client.make(SIZE), client.make(SIZE)
        spilled.fetch()
        ptr.fetch()
        other = undertow.Pointer(ptr.to_json(), via=client)
        other.fetch()
        assert ptr.delete() is True
        with pytest.raises(undertow.DataNotFound):
            other.fetch()  # its server no longer keeps it: asked, and gone
        for _ in range(3):  # the limit is three values: the oldest go to disk
            client.make(SIZE)
        got = spilled.fetch()  # read back from disk
        assert shared_of(got) is None
        assert float(got[-1]) == SIZE // 8 - 1


def test_a_pointer_whose_server_died_or_stopped_does_not_answer_from_memory(tmp_path):
    server = undertow.Server(name="stops")
    server.register("make", lambda n: np.ones(n // 8))
    server.config({"make": {"return_pointer": True}})
    address = server.start("tcp://127.0.0.1:0", plain=f"unix://{tmp_path}/s.sock")
    with undertow.connect(address, timeout=WAIT) as client:
        ptr = client.make(SIZE)
        ptr.fetch()
        server.stop()
        with pytest.raises(undertow.UndertowError):
            ptr.fetch(timeout=0.5)


def test_a_pointer_whose_server_was_killed_does_not_answer_from_memory(server_process):
    proc, address = server_process
    with undertow.connect(address, timeout=WAIT) as client:
        ptr = client.make(SIZE)
        got = ptr.fetch()
        proc.kill()
        proc.wait(WAIT)
        with pytest.raises(undertow.UndertowError):
            ptr.fetch(timeout=0.5)
        assert float(got[-1]) == SIZE // 8 - 1  # what was fetched stays readable
