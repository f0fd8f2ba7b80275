"""Where a node keeps the data its servers leave behind: in memory, spilled to disk past a limit.

Objects are immutable once put; each has a key (a UUID), a secret (the capability a pointer
to it carries), a size, a type name, tags, an owner and a creation time. While memory lasts
they stay as they are; past ``memory_limit`` bytes the least recently used ones are written
to ``<directory>/<user>/<key>`` (a numpy array as ``.npy``, read back memory-mapped, so a
slice of a 10 GB array reads only its own pages; anything else as a pickle) with their
description beside them in ``<key>.json``. Spilled objects survive a restart of the store;
objects only in memory do not. Deletion is explicit.

The directory is the user's own (mode 0700, files 0600): the pickles in it are undertow's
own writing, never a peer's.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import json
import os
import pickle
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from undertow.errors import ConfigError, DataNotFound

__all__ = ["DEFAULT_MEMORY_LIMIT", "DataStore", "Entry"]

#: bytes a store keeps in memory before it spills to disk
DEFAULT_MEMORY_LIMIT = 2**30


@dataclasses.dataclass(frozen=True)
class Entry:
    """What a store knows about one object."""

    key: str
    #: the capability: a pointer must carry it to use the object
    secret: str
    size: int
    type_name: str
    created: float
    owner: str
    tags: tuple[str, ...] = ()
    #: where it is now: "memory" or "disk"
    where: str = "memory"

    def public(self) -> dict[str, Any]:
        """The description without the secret (for listings and logs)."""
        described = dataclasses.asdict(self)
        del described["secret"]
        return described

    def __repr__(self) -> str:  # never the secret
        return (
            f"Entry({self.key}, {self.type_name}, {self.size:,} bytes, owner={self.owner!r}, "
            f"{self.where})"
        )


def _numpy(obj: Any) -> Any:
    """numpy, if ``obj`` is one of its arrays (numpy is optional)."""
    if type(obj).__module__ != "numpy":
        return None
    np = importlib.import_module("numpy")
    return np if isinstance(obj, np.ndarray) and not obj.dtype.hasobject else None


def _size(obj: Any) -> int:
    """Bytes the object takes, for the memory limit."""
    if _numpy(obj) is not None:
        return int(obj.nbytes)
    if isinstance(obj, bytes | bytearray | memoryview):
        return memoryview(obj).nbytes
    return len(pickle.dumps(obj, protocol=5))


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


class DataStore:
    """Immutable objects by key, in memory up to ``memory_limit`` bytes, spilled beyond.

    Thread-safe. ``directory``/``user`` is where spilled objects go (made 0700).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        user: str | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        valid = isinstance(memory_limit, int) and not isinstance(memory_limit, bool)  # type: ignore[redundant-expr]
        if not valid or memory_limit < 0:
            raise ConfigError(
                f"memory_limit must be a number of bytes (0 or more), not {memory_limit!r}"
            )
        self.user = user or _current_user()
        if not self.user or "/" in self.user or self.user in (".", ".."):
            raise ConfigError(f"user {self.user!r} cannot name a directory")
        self.directory = Path(directory).expanduser() / self.user
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {self.directory} for data: {exc.strerror}") from exc
        self.memory_limit = memory_limit
        self._lock = threading.RLock()
        self._entries: dict[str, Entry] = {}
        #: objects in memory, least recently used first
        self._memory: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.memory_used = 0
        self._recover()

    def __repr__(self) -> str:
        return (
            f"<DataStore {self.directory} [{len(self._entries)} objects, "
            f"{self.memory_used:,} of {self.memory_limit:,} bytes in memory]>"
        )

    # -- the objects ------------------------------------------------------------------------

    def put(self, obj: Any, *, tags: Iterable[str] = (), owner: str | None = None) -> Entry:
        """Keep ``obj`` (it must not change afterwards); its entry, with a new key and secret."""
        tags = tuple(tags)
        if not all(isinstance(t, str) and t for t in tags):  # type: ignore[redundant-expr]
            raise ConfigError(f"tags must be non-empty strings, not {tags!r}")
        entry = Entry(
            key=uuid.uuid4().hex,
            secret=secrets.token_urlsafe(16),
            size=_size(obj),
            type_name=_type_name(obj),
            created=time.time(),
            owner=owner or self.user,
            tags=tags,
        )
        with self._lock:
            if entry.size > self.memory_limit:  # would not fit even alone: straight to disk
                entry = self._write(entry, obj)
            else:
                self._memory[entry.key] = obj
                self.memory_used += entry.size
                self._spill_past_limit(keep=entry.key)
            self._entries[entry.key] = entry
        return self._entries[entry.key]

    def get(self, key: str) -> Any:
        """The object under ``key`` (a spilled numpy array comes back memory-mapped)."""
        with self._lock:
            entry = self.entry(key)
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        return self._read(entry)

    def entry(self, key: str) -> Entry:
        """What the store knows about ``key``; :class:`DataNotFound` if nothing."""
        found = self._entries.get(key)
        if found is None:
            raise DataNotFound(
                f"no object {key!r} in the data store at {self.directory} (deleted, never "
                "put, or lost with a restart while it was only in memory)",
                key=key,
            )
        return found

    def entries(self) -> list[Entry]:
        """Every entry, oldest first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.created)

    def delete(self, key: str) -> bool:
        """Forget ``key`` and remove its files; False if there was nothing to delete."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            if key in self._memory:
                del self._memory[key]
                self.memory_used -= entry.size
        for path in self._files(key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return True

    # -- spilling ------------------------------------------------------------------------------

    def _spill_past_limit(self, keep: str) -> None:
        """Write the least recently used objects to disk until memory is within the limit."""
        while self.memory_used > self.memory_limit:
            key = next((k for k in self._memory if k != keep), None)
            if key is None:
                return
            obj = self._memory.pop(key)
            self.memory_used -= self._entries[key].size
            self._entries[key] = self._write(self._entries[key], obj)

    def _files(self, key: str) -> list[Path]:
        return [self.directory / f"{key}{suffix}" for suffix in (".npy", ".pickle", ".json")]

    def _write(self, entry: Entry, obj: Any) -> Entry:
        """Write ``obj`` and its description; the description last, so that a crash between
        the two leaves no entry that points at a missing file."""
        np = _numpy(obj)
        data = self.directory / f"{entry.key}{'.npy' if np is not None else '.pickle'}"
        with _atomic(data) as file:
            if np is not None:
                np.save(file, obj, allow_pickle=False)
            else:
                pickle.dump(obj, file, protocol=5)
        spilled = dataclasses.replace(entry, where="disk")
        with _atomic(self.directory / f"{entry.key}.json") as file:
            file.write(json.dumps(dataclasses.asdict(spilled)).encode())
        return spilled

    def _read(self, entry: Entry) -> Any:
        npy = self.directory / f"{entry.key}.npy"
        try:
            if npy.exists():
                np = importlib.import_module("numpy")
                return np.load(npy, mmap_mode="r", allow_pickle=False)
            with open(self.directory / f"{entry.key}.pickle", "rb") as file:
                return pickle.load(file)  # noqa: S301 - the store's own file, in a 0700 directory
        except FileNotFoundError:
            raise DataNotFound(
                f"object {entry.key!r} was spilled to {self.directory}, but its file is gone",
                key=entry.key,
            ) from None

    def _recover(self) -> None:
        """Find the objects spilled before a restart."""
        for meta in self.directory.glob("*.json"):
            try:
                described = json.loads(meta.read_text())
                described["tags"] = tuple(described.get("tags", ()))
                entry = Entry(**described)
            except (OSError, ValueError, TypeError):
                continue  # a description that cannot be read is skipped, not fatal
            if any(p.exists() for p in self._files(entry.key)[:2]):
                self._entries[entry.key] = entry


def _current_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (ImportError, KeyError, OSError):
        return f"uid{os.getuid()}"


@contextlib.contextmanager
def _atomic(path: Path) -> Any:
    """A file written under a temporary name and renamed into place (mode 0600)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
