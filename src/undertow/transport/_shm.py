"""Large frames through shared memory between two processes of one host (Unix sockets).

A frame of :data:`SHM_ABOVE` bytes or more sent over a plain Unix-socket connection is
written into a memfd (anonymous memory, with no name in any file system), sealed so that
neither its size nor its content can change any more, and its descriptor is passed with the
message (``SCM_RIGHTS``); in the message's head that frame's length carries :data:`FD_BIT`
and its bytes are not in the stream. The receiver checks the seals and the size, maps the
memory copy-on-write and hands out a view of it. One copy in all (the sender's write) against
two through the kernel's socket buffers, and nothing to clean up: the memory lives exactly as
long as a descriptor or a mapping of it does, so a process killed at any point leaves nothing
behind (no file in ``/dev/shm``, no segment to unlink).

Only a Unix socket can carry descriptors, and a plain Unix socket's file is its user's alone
(mode 600): both ends are processes of one user on one host. Whether a process sends this
way: ``UNDERTOW_SHM=1`` always, ``0`` never, unset where the kernel gives shared memory huge
pages (without them, writing into a memfd is slower than the socket: see
:func:`shmem_huge_pages`). Frames that come in memory are always taken.

A frame whose bytes are a lasting value already (``_lasting.py``) goes as its own descriptor,
marked :data:`KEPT_BIT` as well.
"""

from __future__ import annotations

import array
import fcntl
import mmap
import os
import socket
from collections import deque
from pathlib import Path
from typing import Any

from undertow.errors import UndertowError

__all__ = [
    "FD_BIT",
    "KEPT_BIT",
    "SHM_ABOVE",
    "SHM_ENV",
    "check_sealed",
    "map_frame",
    "recv_into",
    "send_head",
    "sending",
    "shmem_huge_pages",
    "to_memfd",
]

#: a frame length with this bit set: the frame is in the next descriptor passed
FD_BIT = 1 << 63
#: with FD_BIT: the frame is a lasting value (a :class:`SharedValue`), to map read-only
KEPT_BIT = 1 << 62
#: frames of this many bytes or more go through shared memory
SHM_ABOVE = 1 << 20
#: descriptors that may wait on one connection before it counts as hostile
MAX_FDS = 64
SHM_ENV = "UNDERTOW_SHM"
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


def sending() -> bool:
    """Whether this process sends large frames through shared memory where it can:
    ``UNDERTOW_SHM`` ``1``/``on`` or ``0``/``off``; unset (``auto``), where shared memory
    gets huge pages (:func:`shmem_huge_pages`), which is when it beats the socket."""
    if not hasattr(os, "memfd_create"):
        return False
    setting = os.environ.get(SHM_ENV, "").strip().lower()
    if setting in ("0", "off", "false", "no"):
        return False
    if setting in ("1", "on", "true", "yes"):
        return True
    return _HUGE


def shmem_huge_pages(setting: str | None = None) -> bool:
    """Whether the kernel backs shared memory (a memfd) with huge pages on its own: the
    value chosen in ``/sys/kernel/mm/transparent_hugepage/shmem_enabled`` is ``always``,
    ``within_size`` or ``force``. Measured on the 2-core test machine, 100 MB written into a
    memfd: 9,706 MB/s with ``always``, 8,740 with ``within_size``, 2,217 with ``never``;
    the socket path fills its huge-page buffers at 2-3 GB/s, so without huge pages shared
    memory is the slower way for a value sent once."""
    if setting is None:
        try:
            setting = Path(_SHMEM_ENABLED).read_text()
        except OSError:
            return False
    chosen = setting[setting.find("[") + 1 : setting.find("]")] if "[" in setting else ""
    return chosen in ("always", "within_size", "force")


_SHMEM_ENABLED = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
_HUGE = shmem_huge_pages()


def to_memfd(frame: Any) -> tuple[int, int]:
    """``(descriptor, size)`` of a sealed memfd holding a copy of ``frame``."""
    view = memoryview(frame).cast("B")
    fd = os.memfd_create("undertow-frame", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        done, size = 0, len(view)
        while done < size:
            done += os.write(fd, view[done:])
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd, size


def map_frame(fd: int, size: int) -> memoryview:
    """A view of the ``size`` bytes in ``fd`` (closed here in any case), mapped
    copy-on-write; raises :class:`UndertowError` unless ``fd`` is a memfd sealed against
    any change (a peer could otherwise shrink it under the mapping) of exactly that size."""
    try:
        _check_sealed(fd, size)
        if size == 0:
            return memoryview(b"")
        # private: writing to the view copies the page (the sender's memory never changes);
        # not populated at once (measured: MAP_POPULATE on a writable private mapping copies
        # every page, 0.9 GB/s against 1.2 GB/s for the whole transfer without it)
        mapped = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    return memoryview(mapped)


def _check_sealed(fd: int, size: int) -> None:
    check_sealed(fd, _SEALS)
    actual = os.fstat(fd).st_size
    if actual != size:
        raise UndertowError(f"a shared-memory frame of {actual:,} bytes announced {size:,}")


def check_sealed(fd: int, seals: int) -> int:
    """The seals of memfd ``fd``; raises :class:`UndertowError` unless it is a memfd with
    at least ``seals``."""
    try:
        have = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        raise UndertowError("a shared-memory frame that is not a sealed memfd") from None
    if have & seals != seals:
        raise UndertowError("a shared-memory frame that is not sealed against change")
    return have


def recv_into(sock: socket.socket, buffer: Any, flags: int, fds: deque[int]) -> int:
    """``sock.recv_into(buffer)``, keeping the descriptors that come with the bytes in
    ``fds``; raises :class:`UndertowError` if some were cut off or too many wait."""
    n, ancillary, msg_flags, _ = sock.recvmsg_into([buffer], _ANCILLARY, flags)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(data[: len(data) - len(data) % got.itemsize])
            fds.extend(got)
    if msg_flags & socket.MSG_CTRUNC or len(fds) > MAX_FDS:
        raise UndertowError(f"more than {MAX_FDS} shared-memory frames at once")
    return n


def send_head(sock: socket.socket, head: Any, fds: list[int]) -> None:
    """Send ``head`` (the start of a message) with ``fds`` attached to its bytes."""
    passed = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    sent = sock.sendmsg([head], passed)
    if sent < len(head):  # interrupted partway: the descriptors went with the first bytes
        sock.sendall(memoryview(head)[sent:])


def close_all(fds: deque[int]) -> None:
    """Close descriptors nobody will take."""
    while fds:
        os.close(fds.popleft())
