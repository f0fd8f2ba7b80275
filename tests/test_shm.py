"""Large frames through shared memory over a plain Unix socket: the values arrive whole and
writable, nothing is left behind when either side is killed, and a peer passing bad
descriptors loses its connection and leaks none."""

from __future__ import annotations

import array
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import undertow
from undertow.transport._plain_wire import GREETING
from undertow.transport._shm import FD_BIT, KEPT_BIT

from ._waiting import wait_until

pytestmark = [
    pytest.mark.usefixtures("undertow_home"),
    pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux only"),
]

WAIT = 20.0


@pytest.fixture(autouse=True)
def shared_memory_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """On whatever the kernel's huge-page setting (unset, it is on only where shared memory
    gets huge pages); the processes the tests start inherit it."""
    monkeypatch.setenv("UNDERTOW_SHM", "1")


def test_unset_it_is_on_where_shared_memory_gets_huge_pages(monkeypatch):
    from undertow.transport import _shm

    assert _shm.shmem_huge_pages("always within_size advise [never] deny force\n") is False
    assert _shm.shmem_huge_pages("[always] within_size advise never deny force\n") is True
    assert _shm.shmem_huge_pages("always [within_size] advise never deny force\n") is True
    assert _shm.shmem_huge_pages("always within_size [advise] never deny force\n") is False
    monkeypatch.delenv("UNDERTOW_SHM")
    for huge in (True, False):
        monkeypatch.setattr(_shm, "_HUGE", huge)
        assert _shm.sending() is huge
    monkeypatch.setenv("UNDERTOW_SHM", "off")
    assert _shm.sending() is False


SIZE = 8 << 20  # 8 MiB: well over the 1 MiB from which frames go through memory


def in_memory(value: Any) -> bool:
    """True if numpy array ``value``'s bytes are in a shared-memory frame mapped here (a
    memfd of undertow's, in this process's memory map)."""
    address = int(value.__array_interface__["data"][0])
    for line in Path("/proc/self/maps").read_text().splitlines():
        if "memfd:undertow-frame" in line:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                return True
    return False


def make_server() -> undertow.Server:
    server = undertow.Server(name="shm")

    def make(n: int) -> Any:
        return np.ones(n // 8)

    def mapped(a: Any) -> list[Any]:
        return [in_memory(a), float(a.sum())]

    server.register("make", make)
    server.register("mapped", mapped)
    server.config(
        {"make": {"output_serialization": "numpy"}, "mapped": {"input_serialization": "numpy"}}
    )
    return server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    server = make_server()
    address = server.start("tcp://127.0.0.1:0", plain=f"unix://{tmp_path}/shm.sock")
    yield address
    server.stop()


def memfds(pid: int | str = "self") -> int:
    """Descriptors and mappings of memfds a process holds."""
    fds = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds += os.readlink(f"/proc/{pid}/fd/{name}").startswith("/memfd:")
        except OSError:
            continue  # closed meanwhile
    maps = Path(f"/proc/{pid}/maps").read_text().count("/memfd:undertow-frame")
    return fds + maps


def test_large_values_travel_through_shared_memory_both_ways(served):
    with undertow.connect(served, timeout=WAIT) as client:
        got = client.make(SIZE)
        assert got.nbytes == SIZE
        assert float(got[-1]) == 1.0
        assert in_memory(got)  # a view of the memory the server wrote, no socket copy
        got[0] = 5.0  # writable, copy-on-write: the server's memory does not change
        assert float(client.make(SIZE)[0]) == 1.0
        arr = np.arange(SIZE // 8, dtype=np.float64)
        assert client.mapped(arr) == [True, float(arr.sum())]
        assert client.mapped(np.ones(1000)) == [False, 1000.0]  # small: in the stream
        del got
    assert wait_until(lambda: memfds() == 0, WAIT)  # nothing held once the values are gone


def test_undertow_shm_0_sends_everything_through_the_socket(served, monkeypatch):
    monkeypatch.setenv("UNDERTOW_SHM", "0")
    with undertow.connect(served, timeout=WAIT) as client:
        arr = np.ones(SIZE // 8)
        assert client.mapped(arr) == [False, float(arr.sum())]


_SERVER = """
import sys, numpy as np, undertow
server = undertow.Server(name="shm")

def make(n):
    return np.ones(n // 8)

def mapped(a):
    return float(a.sum())

server.register("make", make)
server.register("mapped", mapped)
server.config({"make": {"output_serialization": "numpy"},
               "mapped": {"input_serialization": "numpy"}})
print(server.start("tcp://127.0.0.1:0", plain=sys.argv[1]), flush=True)
sys.stdin.read()
"""

_CLIENT = """
import sys, numpy as np, undertow
client = undertow.connect(sys.argv[1], timeout=20)
arr = np.ones(8 << 17)
held = []
while True:  # until killed: values coming and going, some held
    held.append(client.make(8 << 20))
    client.mapped(arr)
    if len(held) > 3:
        held.pop(0)
    print("round", flush=True)
"""


def _python(code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(WAIT)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_a_client_killed_mid_transfer_leaves_nothing_in_the_server(tmp_path):
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    server = _python(_SERVER, f"unix://{tmp_path}/s.sock")
    try:
        assert server.stdout is not None
        address = server.stdout.readline().strip()
        for _ in range(2):  # killed at two different points of its rounds
            client = _python(_CLIENT, address)
            assert client.stdout is not None
            for _ in range(3):
                assert client.stdout.readline().startswith("round")
            client.send_signal(signal.SIGKILL)
            _stop(client)
        with undertow.connect(address, timeout=WAIT) as other:  # the server goes on
            assert other.make(SIZE).nbytes == SIZE
        # what it sent went with the dead clients (the last answer's descriptor is closed
        # just after it is sent, which the client may see first)
        assert wait_until(lambda: memfds(server.pid) == 0, WAIT)
    finally:
        _stop(server)
    if os.path.isdir("/dev/shm"):
        assert set(os.listdir("/dev/shm")) == shm_before  # no named segments, ever


def test_a_server_killed_mid_transfer_leaves_nothing_in_the_client(tmp_path):
    server = _python(_SERVER, f"unix://{tmp_path}/s.sock")
    try:
        assert server.stdout is not None
        address = server.stdout.readline().strip()
        client = undertow.connect(address, timeout=WAIT)
        held = client.make(SIZE)
        assert in_memory(held)
        server.send_signal(signal.SIGKILL)
        _stop(server)
        with pytest.raises(undertow.UndertowError):
            client.make(SIZE)  # the connection is gone
        assert float(held[-1]) == 1.0  # what arrived stays readable, the server gone
        del held
        client.close()
        assert wait_until(lambda: memfds() == 0, WAIT)
    finally:
        _stop(server)


# -- descriptors from a hostile peer -------------------------------------------------------


def _unix_raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.settimeout(WAIT)
    sock.sendall(GREETING)
    assert sock.recv(len(GREETING)) == GREETING
    return sock


def _head(size: int, marks: int = FD_BIT) -> bytes:
    """A message of one frame announced in shared memory (a lasting value's, with KEPT_BIT)."""
    return struct.pack(">IQ", 1, size | marks)


def _memfd(size: int, sealed: bool) -> int:
    fd = os.memfd_create("test", os.MFD_ALLOW_SEALING)
    os.write(fd, b"x" * size)
    if sealed:
        import fcntl

        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


@pytest.mark.parametrize(
    "attack",
    [
        "no descriptor",
        "a plain file",
        "not sealed",
        "wrong size",
        "a flood",
        "lasting, not sealed",
        "lasting, wrong size",
        "lasting, in the stream",
    ],
)
def test_bad_descriptors_close_the_connection_and_none_leak(tmp_path, attack):
    server = make_server()
    path = f"{tmp_path}/h.sock"
    server.start("tcp://127.0.0.1:0", plain=f"unix://{path}")
    try:
        before = len(os.listdir("/proc/self/fd"))
        sock = _unix_raw(path)
        fds: list[int] = []
        marks = FD_BIT | KEPT_BIT if attack.startswith("lasting") else FD_BIT
        if attack == "no descriptor":
            sock.sendall(_head(100))
        elif attack == "lasting, in the stream":  # marked lasting, yet not in memory
            sock.sendall(_head(100, KEPT_BIT) + b"x" * 100)
        else:
            if attack == "a plain file":
                fds = [os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)]
            elif attack == "a flood":
                fds = [_memfd(10, sealed=True) for _ in range(200)]
            else:
                fds = [_memfd(100, sealed=not attack.endswith("not sealed"))]
            announced = 50 if attack.endswith("wrong size") else 100
            sock.sendmsg(
                [_head(announced, marks)],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
            )
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""  # the server closed the connection
        sock.close()
        # every descriptor it was passed is closed again
        assert wait_until(lambda: len(os.listdir("/proc/self/fd")) <= before, WAIT)
        assert memfds() == 0
    finally:
        server.stop()


def test_clients_on_the_servers_host_use_its_local_socket_by_default():
    import stat

    server = make_server()
    address = server.start("tcp://127.0.0.1:0")  # plain="auto"
    try:
        local = server.local_address
        assert local.startswith(f"unix://{tempfile.gettempdir()}/undertow-{os.getuid()}/")
        path = Path(local[len("unix://") :])
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with undertow.connect(address, timeout=WAIT) as client:
            assert client._conn.plain.address == local
            assert in_memory(client.make(SIZE))
    finally:
        server.stop()
    assert not path.exists()


def test_a_local_socket_directory_that_is_not_ours_is_not_used(tmp_path, monkeypatch):
    from undertow.transport import local_address

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = tmp_path / f"undertow-{os.getuid()}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)  # open to others: someone could swap the socket under us
    assert local_address("s") is None
    folder.chmod(0o700)
    assert (local_address("s") or "").startswith(f"unix://{folder}/s-")
    folder.rmdir()
    folder.symlink_to(tmp_path)  # a link (to a directory of ours, even): not used
    assert local_address("s") is None


def test_without_shared_memory_clients_keep_to_tcp(monkeypatch):
    monkeypatch.setenv("UNDERTOW_SHM", "0")
    server = make_server()
    address = server.start("tcp://127.0.0.1:0")
    try:
        assert server.local_address  # served all the same, for clients that use memory
        with undertow.connect(address, timeout=WAIT) as client:
            assert client._conn.plain.address == server.plain_address
            assert client.make(SIZE).nbytes == SIZE
    finally:
        server.stop()


def test_sockets_of_servers_that_died_are_swept_when_another_starts(tmp_path, monkeypatch):
    from undertow.transport import local_address

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = tmp_path / f"undertow-{os.getuid()}"
    first = local_address("s")
    assert first is not None
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(gone.stdout)  # a process that has exited
    stale = folder / f"old-{dead}-abcd1234.sock"
    mine = folder / f"live-{os.getpid()}-abcd1234.sock"
    notes = folder / f"notes-{dead}-abcd1234.sock.txt"
    for path in (stale, mine):
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.close()  # the file stays, as a killed server's does
    notes.write_text("not a socket")
    local_address("s")
    assert not stale.exists()  # its process is gone
    assert mine.exists()  # a live process's
    assert notes.exists()  # not a socket of ours
