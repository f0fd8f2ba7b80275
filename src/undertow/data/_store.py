"""Where a node keeps the data its servers leave behind: in memory, spilled to disk past a limit.

Objects are immutable once put; each has a key (a UUID), a secret (the capability a pointer
to it carries), a size, a type name, tags, an owner, the identities it is shared with and a
creation time. While memory lasts they stay as they are; past ``memory_limit`` bytes the
least recently used ones are written to ``<directory>/<owner>/<key>`` (a numpy array as
``.npy``, read back memory-mapped, so a slice of a 10 GB array reads only its own pages;
anything else as a pickle) with their description beside them in ``<key>.json``. Spilled
objects survive a restart of the store; objects only in memory do not. Deletion is explicit.

The directories are the server's own (mode 0700, files 0600): the pickles in them are
undertow's own writing, never a peer's.
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

from undertow.data._records import is_data_key
from undertow.errors import ConfigError, DataNotFound
from undertow.transport import SHM_ABOVE, shared_copy, shared_of

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
    #: identities besides the owner that may use it (when the server authenticates)
    shared: tuple[str, ...] = ()

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


def _retire(obj: Any) -> None:
    """``obj`` leaves the store's memory: if it is a value in shared memory this process
    keeps, peers that mapped it are told to ask again (they get it from disk, or not at all)."""
    if _numpy(obj) is not None:
        shared = shared_of(obj)
        if shared is not None:
            shared.retire()


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


class DataStore:
    """Immutable objects by key, in memory up to ``memory_limit`` bytes, spilled beyond.

    Thread-safe. Spilled objects go to ``directory/<owner>`` (made 0700); ``user`` is the
    owner of objects put without one (default: the account running the process).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        user: str | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        shared_memory: bool = False,
    ) -> None:
        valid = isinstance(memory_limit, int) and not isinstance(memory_limit, bool)  # type: ignore[redundant-expr]
        if not valid or memory_limit < 0:
            raise ConfigError(
                f"memory_limit must be a number of bytes (0 or more), not {memory_limit!r}"
            )
        self.user = _owner_name(user or _current_user())
        self.directory = Path(directory).expanduser()
        self._made: set[str] = set()  # owners whose directory exists
        self._home(self.user)  # fails now, not at the first spill, if it cannot be made
        self.memory_limit = memory_limit
        #: keep large numpy arrays in shared memory, which same-host peers map, not copy
        self.shared_memory = shared_memory
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

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # -- the objects ------------------------------------------------------------------------

    def put(self, obj: Any, *, tags: Iterable[str] = (), owner: str | None = None) -> Entry:
        """Keep ``obj`` (it must not change afterwards); its entry, with a new key and secret."""
        entry = Entry(
            key=uuid.uuid4().hex,
            secret=secrets.token_urlsafe(16),
            size=_size(obj),
            type_name=_type_name(obj),
            created=time.time(),
            owner=_owner_name(owner or self.user),
            tags=_tags(tags),
        )
        obj = self._placed(obj)
        with self._lock:
            return self._keep(entry, obj)

    def adopt(
        self,
        obj: Any,
        *,
        key: str,
        secret: str,
        owner: str,
        tags: Iterable[str] = (),
        shared: Iterable[str] = (),
        created: float | None = None,
    ) -> tuple[Entry, bool]:
        """Keep ``obj`` under the key and secret it has elsewhere (a copy of a value another
        store keeps), with that value's owner, tags and sharing. The entry, and whether it
        is new: a key kept already is left as it is (False)."""
        if not isinstance(key, str) or not is_data_key(key):  # type: ignore[redundant-expr]
            raise ConfigError(f"a copy's key must be 32 lowercase hex digits, not {key!r:.80}")
        if not isinstance(secret, str) or not secret:  # type: ignore[redundant-expr]
            raise ConfigError("a copy's secret must be a non-empty string")
        if created is not None and not isinstance(created, int | float):
            raise ConfigError(f"a copy's creation time is a number, not {created!r:.80}")
        entry = Entry(
            key=key,
            secret=secret,
            size=_size(obj),
            type_name=_type_name(obj),
            created=time.time() if created is None else float(created),
            owner=_owner_name(owner),
            tags=_tags(tags),
            shared=tuple(dict.fromkeys(_owner_name(i) for i in shared)),
        )
        if key in self._entries:
            return self._entries[key], False
        obj = self._placed(obj)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                return found, False
            return self._keep(entry, obj), True

    def _placed(self, obj: Any) -> Any:
        """``obj``, or a read-only copy of it in shared memory where a same-host peer can map
        it (a numpy array of :data:`SHM_ABOVE` bytes or more, with ``shared_memory`` on and
        not in shared memory already): the one copy Ray's object store makes too."""
        np = _numpy(obj) if self.shared_memory else None
        if np is None or type(obj) is not np.ndarray or shared_of(obj) is not None:
            return obj  # not an array, or a subclass (a masked array's mask would be lost)
        if not SHM_ABOVE <= obj.nbytes <= self.memory_limit:
            return obj  # small, or spilled at once
        arr = obj if obj.flags.c_contiguous else np.ascontiguousarray(obj)
        shared = shared_copy(arr.reshape(-1).view(np.uint8))
        if shared is None:  # this process keeps as many as it may: private memory, then
            return obj
        placed = np.frombuffer(shared.view(), dtype=arr.dtype).reshape(arr.shape)
        placed.flags.writeable = False  # a value does not change once kept
        return placed

    def _keep(self, entry: Entry, obj: Any) -> Entry:
        """Keep ``obj`` under ``entry`` (the lock held): in memory, or on disk if it is
        larger than the whole limit."""
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

    def share(self, key: str, identities: Iterable[str]) -> Entry:
        """Let ``identities`` use ``key`` too; its updated entry."""
        names = tuple(_owner_name(i) for i in identities)
        with self._lock:
            entry = self.entry(key)
            entry = dataclasses.replace(entry, shared=tuple(dict.fromkeys(entry.shared + names)))
            if entry.where == "disk":
                self._describe(entry)
            self._entries[key] = entry
        return entry

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
                _retire(self._memory.pop(key))
                self.memory_used -= entry.size
        for path in self._files(entry):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return True

    def stats(self) -> dict[str, int]:
        """Bytes and objects kept in memory and spilled to disk."""
        with self._lock:
            on_disk = [e.size for e in self._entries.values() if e.where == "disk"]
            return {
                "bytes_memory": self.memory_used,
                "bytes_disk": sum(on_disk),
                "objects_memory": len(self._memory),
                "objects_disk": len(on_disk),
            }

    def retire_all(self) -> None:
        """Mark every value this store keeps in shared memory as no longer to be viewed
        directly by peers (its server stopped): they ask again, and the values stay here."""
        with self._lock:
            for obj in self._memory.values():
                _retire(obj)

    # -- spilling ------------------------------------------------------------------------------

    def _spill_past_limit(self, keep: str) -> None:
        """Write the least recently used objects to disk until memory is within the limit."""
        while self.memory_used > self.memory_limit:
            key = next((k for k in self._memory if k != keep), None)
            if key is None:
                return
            obj = self._memory.pop(key)
            _retire(obj)
            self.memory_used -= self._entries[key].size
            self._entries[key] = self._write(self._entries[key], obj)

    def _home(self, owner: str) -> Path:
        """The owner's directory, made (0700) on first use."""
        home = self.directory / owner
        if owner not in self._made:
            try:
                home.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot use {home} for data: {exc.strerror}") from exc
            self._made.add(owner)
        return home

    def _files(self, entry: Entry) -> list[Path]:
        home = self.directory / entry.owner
        return [home / f"{entry.key}{suffix}" for suffix in (".npy", ".pickle", ".json")]

    def _write(self, entry: Entry, obj: Any) -> Entry:
        """Write ``obj`` and its description; the description last, so that a crash between
        the two leaves no entry that points at a missing file."""
        np = _numpy(obj)
        data = self._home(entry.owner) / f"{entry.key}{'.npy' if np is not None else '.pickle'}"
        with _atomic(data) as file:
            if np is not None:
                np.save(file, obj, allow_pickle=False)
            else:
                pickle.dump(obj, file, protocol=5)
        spilled = dataclasses.replace(entry, where="disk")
        self._describe(spilled)
        return spilled

    def _describe(self, entry: Entry) -> None:
        with _atomic(self._home(entry.owner) / f"{entry.key}.json") as file:
            file.write(json.dumps(dataclasses.asdict(entry)).encode())

    def _read(self, entry: Entry) -> Any:
        npy, pickled, _ = self._files(entry)
        try:
            if npy.exists():
                np = importlib.import_module("numpy")
                return np.load(npy, mmap_mode="r", allow_pickle=False)
            with open(pickled, "rb") as file:
                return pickle.load(file)  # noqa: S301 - the store's own file, in a 0700 directory
        except FileNotFoundError:
            raise DataNotFound(
                f"object {entry.key!r} was spilled to {npy.parent}, but its file is gone",
                key=entry.key,
            ) from None

    def _recover(self) -> None:
        """Find the objects spilled before a restart."""
        for meta in self.directory.glob("*/*.json"):
            try:
                described = json.loads(meta.read_text())
                for field in ("tags", "shared"):
                    described[field] = tuple(described.get(field, ()))
                entry = Entry(**described)
            except (OSError, ValueError, TypeError):
                continue  # a description that cannot be read is skipped, not fatal
            if meta.parent.name == entry.owner and any(p.exists() for p in self._files(entry)[:2]):
                self._entries[entry.key] = entry


def _tags(tags: Iterable[str]) -> tuple[str, ...]:
    """``tags``, checked to be non-empty strings."""
    found = tuple(tags)
    if not all(isinstance(t, str) and t for t in found):  # type: ignore[redundant-expr]
        raise ConfigError(f"tags must be non-empty strings, not {found!r}")
    return found


def _owner_name(name: str) -> str:
    """``name``, checked to be usable as a directory name."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):  # type: ignore[redundant-expr]
        raise ConfigError(f"owner {name!r} cannot name a directory")
    return name


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
