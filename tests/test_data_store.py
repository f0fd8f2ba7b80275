"""The data store on real files: objects in memory, spilled to disk past a limit, recovered
after a restart, deleted on request."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import numpy as np
import pytest

import undertow
from undertow.data import DataStore


def test_objects_come_back_as_they_were_put(tmp_path: Path) -> None:
    store = DataStore(tmp_path, user="ada")
    array = np.arange(12.0).reshape(3, 4)
    entries = [store.put(v, tags=["t"]) for v in ({"a": [1, 2]}, b"bytes", array)]
    assert store.get(entries[0].key) == {"a": [1, 2]}
    assert store.get(entries[1].key) == b"bytes"
    assert store.get(entries[2].key) is array  # in memory: the object itself
    assert entries[2].size == array.nbytes
    assert entries[2].type_name == "numpy.ndarray"
    assert entries[0].type_name == "dict"
    assert entries[0].tags == ("t",)
    assert entries[0].owner == "ada"
    assert len({e.key for e in entries}) == 3
    assert len({e.secret for e in entries}) == 3


def test_past_the_memory_limit_the_least_recently_used_go_to_disk(tmp_path: Path) -> None:
    store = DataStore(tmp_path, user="ada", memory_limit=3_000_000)
    first = store.put(np.ones(125_000))  # 1 MB each
    second = store.put(np.ones(125_000) * 2)
    store.get(first.key)  # used again: now the second is the least recently used
    third = store.put(np.ones(125_000) * 3)
    fourth = store.put(np.ones(125_000) * 4)
    assert store.memory_used <= store.memory_limit
    assert store.entry(second.key).where == "disk"
    assert {store.entry(k.key).where for k in (first, third, fourth)} == {"memory"}
    spilled = store.get(second.key)
    assert isinstance(spilled, np.memmap)  # read back mapped: a slice reads its own pages only
    assert float(spilled[10]) == 2.0
    files = sorted(p.name for p in (tmp_path / "ada").iterdir())
    assert files == [f"{second.key}.json", f"{second.key}.npy"]
    for path in (tmp_path / "ada").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ada").stat().st_mode) == 0o700


def test_an_object_larger_than_the_limit_goes_straight_to_disk(tmp_path: Path) -> None:
    store = DataStore(tmp_path, user="ada", memory_limit=1000)
    entry = store.put({"big": "x" * 5000})
    assert entry.where == "disk"
    assert store.memory_used == 0
    assert store.get(entry.key) == {"big": "x" * 5000}


def test_spilled_objects_survive_a_restart_and_memory_ones_do_not(tmp_path: Path) -> None:
    store = DataStore(tmp_path, user="ada", memory_limit=1000)
    kept = store.put(np.arange(1000), tags=["results"])
    lost = store.put("small")
    again = DataStore(tmp_path, user="ada", memory_limit=1000)
    entry = again.entry(kept.key)
    assert (entry.secret, entry.tags, entry.size) == (kept.secret, ("results",), kept.size)
    assert list(again.get(kept.key)[:3]) == [0, 1, 2]
    with pytest.raises(undertow.DataNotFound, match=lost.key) as info:
        again.get(lost.key)
    assert info.value.key == lost.key
    assert isinstance(info.value, LookupError)


def test_delete_is_explicit_and_removes_the_files(tmp_path: Path) -> None:
    store = DataStore(tmp_path, user="ada", memory_limit=10)
    entry = store.put([1, 2, 3])
    assert (tmp_path / "ada" / f"{entry.key}.pickle").exists()
    assert store.delete(entry.key)
    assert not store.delete(entry.key)
    assert list((tmp_path / "ada").iterdir()) == []
    with pytest.raises(undertow.DataNotFound):
        store.get(entry.key)
    assert DataStore(tmp_path, user="ada").entries() == []


def test_users_have_directories_of_their_own(tmp_path: Path) -> None:
    ada = DataStore(tmp_path, user="ada", memory_limit=0)
    bob = DataStore(tmp_path, user="bob", memory_limit=0)
    entry = ada.put("hers")
    with pytest.raises(undertow.DataNotFound):
        bob.get(entry.key)
    with pytest.raises(undertow.ConfigError, match="cannot name a directory"):
        DataStore(tmp_path, user="../escape")


def test_secrets_stay_out_of_reprs_and_listings(tmp_path: Path) -> None:
    store = DataStore(tmp_path, user="ada")
    entry = store.put("x")
    assert entry.secret not in repr(entry)
    assert entry.secret not in repr(store)
    assert "secret" not in entry.public()


def test_threads_putting_at_once_keep_the_accounting_right(tmp_path: Path) -> None:
    store = DataStore(tmp_path, user="ada", memory_limit=400_000)
    keys: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(20):
            entry = store.put(np.full(1000, n * 100 + i))
            with lock:
                keys.append(entry.key)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(keys) == 80
    in_memory = sum(e.size for e in store.entries() if e.where == "memory")
    assert store.memory_used == in_memory <= store.memory_limit
    assert all(store.get(k).shape == (1000,) for k in keys)
