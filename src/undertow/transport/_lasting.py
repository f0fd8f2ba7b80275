"""Lasting values: large arrays a data store keeps in shared memory, which same-host peers map
instead of receiving a copy, and ask again without a round trip while their server keeps them.

A data store with shared memory on keeps each large numpy array in a memfd of its own
(:func:`shared_copy`: one copy, then sealed so that it can neither shrink nor grow nor be
mapped writable again) and works on a read-only mapping of it, a :class:`SharedValue`. When
such memory is a frame of a message over a Unix socket, its descriptor goes as it is
(``_plain_wire.pack_shared``, marked ``KEPT_BIT``) and the receiver maps it read-only, once:
:data:`mapped` keeps the mappings by the memfd's (device, inode), so the next fetch of the
same value is a view of memory already mapped, as Ray's object store hands out.

After the value, on a page of its own, the memfd holds a *status*: a mark, the pid of the
process that keeps the value, and whether it still does. That process alone has it mapped
writable (mapped before the seals, which then forbid any new writable mapping) and clears it
when the value leaves its memory (deleted, spilled to disk, let go of). A peer that fetched
the value reads it (:meth:`SharedValue.live`) to know whether asking again would give the
same memory: a pointer fetched once is then fetched again with no round trip at all
(``data/_pointer.py``), while the keeper is alive and keeps it.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import mmap
import os
import pickle
import resource
import struct
import threading
import weakref
from typing import Any

from undertow.errors import UndertowError
from undertow.transport._shm import check_sealed

__all__ = ["MAPPED_LIMIT", "SharedValue", "map_kept", "mapped", "shared_copy", "shared_of"]

#: bytes of lasting values a process keeps mapped after their views are gone
MAPPED_LIMIT = 1 << 30
_PAGE = mmap.PAGESIZE
#: no new writable mapping (Linux 5.1): the keeper's own status mapping stays writable
_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x10)
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
#: the status page: a mark, the keeper's pid, 1 while it keeps the value
_STATUS = struct.Struct("=8sqB")
_MARK = b"UTWkept1"
_LIVE_AT = _STATUS.size - 1


def _status_at(size: int) -> int:
    """Where the status page of a value of ``size`` bytes starts: the next page boundary."""
    return -(-size // _PAGE) * _PAGE


class SharedValue(mmap.mmap):
    """A mapping of a lasting value's memfd: the value's ``nbytes`` bytes, then its status page
    (at ``status_at``; -1: none, never asked again directly). The keeper maps it writable and
    keeps the descriptor (``fd``) to pass it on; a peer maps it read-only and keeps none
    (``fd`` is -1: passed back, the value is copied). Made by :func:`shared_copy` (the keeper)
    or :func:`map_kept` (a peer); :meth:`view` is the value."""

    fd: int
    #: (device, inode) of the memfd: the same value, wherever its descriptor came from
    identity: tuple[int, int]
    #: the value's bytes (the mapping goes on with its status page)
    nbytes: int
    status_at: int
    #: True in the process that keeps the value (its status is writable there)
    keeper: bool

    def view(self) -> memoryview:
        """The value's bytes (read-only in a peer)."""
        return memoryview(self)[: self.nbytes]

    def live(self) -> bool:
        """Whether the value's keeper is alive and still keeps it, so that asking for it
        again would hand out this very memory."""
        if self.status_at < 0:
            return False
        mark, pid, live = _STATUS.unpack_from(self, self.status_at)
        if mark != _MARK or live != 1:
            return False
        try:
            os.kill(pid, 0)  # a process of ours (same user): no signal, only whether it lives
        except OSError:
            return False
        return True

    def retire(self) -> None:
        """(The keeper) The value leaves this process's memory: peers ask again from now."""
        if self.keeper and self.status_at >= 0 and not self.closed:
            self[self.status_at + _LIVE_AT] = 0

    def __del__(self) -> None:  # before the memory is unmapped: the keeper lets go of it
        with contextlib.suppress(AttributeError, ValueError):  # half made, or closed
            self.retire()


class _Kept:
    """How many values this process keeps in shared memory, each holding two descriptors
    (its own and its mapping's): at most ``limit``, past which values stay in private memory
    (a process may open 1,024 descriptors in all on many systems)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.count -= 1


kept = _Kept(max(16, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 8))


def _let_go(value_fd: int, counted: _Kept) -> None:
    """(The keeper's value, let go of) its descriptor closed; it counts no more."""
    os.close(value_fd)
    counted.give()


def shared_copy(buffer: Any) -> SharedValue | None:
    """A copy of ``buffer``'s bytes (C-contiguous) in a new memfd with a status page saying
    this process keeps it, sealed against shrinking, growing and any new writable mapping:
    memory a data store keeps a large value in, which same-host peers then map instead of
    receiving a copy. None when this process keeps as many as :data:`kept` allows."""
    view = memoryview(buffer).cast("B")
    size = len(view)
    if size == 0:
        raise ValueError("an empty buffer has no shared memory")
    counted = kept
    if not counted.take():
        return None
    fd = os.memfd_create("undertow-value", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        at = _status_at(size)
        os.ftruncate(fd, at + _PAGE)
        value = SharedValue(fd, at + _PAGE, flags=mmap.MAP_SHARED)
        value[:size] = view  # one copy; os.write would copy once more into the kernel
        value[at : at + _STATUS.size] = _STATUS.pack(_MARK, os.getpid(), 1)
        try:  # no writable mapping but this one from now on (Linux 5.1)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS | _FUTURE_WRITE | fcntl.F_SEAL_SEAL)
        except OSError:  # an older kernel: sealed against writing, read-only, no status
            value.close()
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            value = SharedValue(fd, at + _PAGE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            at = -1
    except BaseException:
        os.close(fd)
        counted.give()
        raise
    stat = os.fstat(fd)
    value.fd, value.identity, value.nbytes = fd, (stat.st_dev, stat.st_ino), size
    value.status_at, value.keeper = at, at >= 0
    weakref.finalize(value, _let_go, fd, counted)
    return value


def shared_of(frame: Any) -> SharedValue | None:
    """The :class:`SharedValue` whose whole memory ``frame`` is (a memoryview of it, a numpy
    array or a view of one on it, a pickle buffer of one), else None."""
    try:
        nbytes = memoryview(frame).nbytes
    except TypeError:
        return None
    obj = frame
    for _ in range(8):  # an array's bases, memoryviews' objects: a short chain
        if isinstance(obj, SharedValue):
            return obj if obj.nbytes == nbytes else None
        if isinstance(obj, pickle.PickleBuffer):
            obj = memoryview(obj)
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
        if obj is None:
            return None
    return None


class _Mapped:
    """Lasting values mapped in this process, the most recently used last, kept up to
    ``limit`` bytes and ``count`` values (mapped, not copied: while the keeper keeps the
    value, its pages are the keeper's own; past that, the mapping holds them until it is let
    go of)."""

    def __init__(self, limit: int, count: int = 64) -> None:
        self.limit = limit
        #: at most this many (each holds a descriptor, its mapping's)
        self.count = count
        self._values: collections.OrderedDict[tuple[int, int], SharedValue] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, fd: int, size: int) -> SharedValue:
        """The mapping of lasting value ``fd`` of ``size`` bytes (``fd`` is closed here if
        the value is mapped already, else the mapping owns it); raises
        :class:`UndertowError` unless ``fd`` is a memfd sealed against shrinking, growing
        and writing, of ``size`` bytes or of those and a status page."""
        seals = check_sealed(fd, _SEALS)
        if not seals & (fcntl.F_SEAL_WRITE | _FUTURE_WRITE):
            raise UndertowError("a lasting value that is not sealed against writing")
        stat = os.fstat(fd)
        actual, at = stat.st_size, _status_at(size)
        if size == 0 or actual not in (size, at + _PAGE):
            raise UndertowError(f"a lasting value of {actual:,} bytes announced {size:,}")
        identity = (stat.st_dev, stat.st_ino)
        with self._lock:  # mapping is quick: no two threads map one value twice
            value = self._values.get(identity)
            if value is not None:
                self._values.move_to_end(identity)
                os.close(fd)
                return value
            try:  # the mapping holds the memfd from now on; a peer keeps no descriptor
                value = SharedValue(fd, actual, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            value.fd, value.identity, value.nbytes = -1, identity, size
            value.status_at, value.keeper = (at if actual > size else -1), False
            self._values[identity] = value
            self._bytes += size
            while len(self._values) > 1 and (
                self._bytes > self.limit or len(self._values) > self.count
            ):
                _, dropped = self._values.popitem(last=False)
                self._bytes -= dropped.nbytes
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._bytes = 0


mapped = _Mapped(MAPPED_LIMIT)


def map_kept(fd: int, size: int) -> memoryview:
    """A read-only view of lasting value ``fd`` (closed here in any case) of ``size`` bytes,
    mapped once per process while it stays in :data:`mapped`."""
    try:
        value = mapped.take(fd, size)
    except UndertowError:
        os.close(fd)  # refused before it was mapped or closed
        raise
    return value.view()
