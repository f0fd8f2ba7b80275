"""The data catalog as users meet it: ``undertow data serve`` and ``undertow serve`` in
processes of their own record what they keep in the registry (a SQLite file or a real
redis-server); ``undertow.catalog.find`` and ``undertow data ls`` list it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import undertow
from undertow.errors import ServiceNotFound

from ._processes import ServedProcess, data_node
from ._waiting import wait_until

pytestmark = pytest.mark.multiproc

WAIT = 30.0

SERVICE = """
import numpy as np
from undertow.service import Expose


@Expose(config={"table": {"return_pointer": True}})
class Lab:
    @Expose()
    def table(self, rows: int):
        return np.ones((rows, 3))
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "undertow.cli", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def test_values_put_on_a_data_node_are_found_by_tag_and_owner(url: str, tmp_path: Path) -> None:
    backend = url
    node = data_node(backend, tmp_path / "data", "--memory-limit", "1000")
    try:
        raw = undertow.put(np.arange(1000.0), tags=["raw", "2026"], backend=backend)
        other = undertow.put({"note": "x"}, tags=["raw"], backend=backend)
        assert raw.address == node.address

        def listed(n: int) -> bool:
            return len(undertow.catalog.find(tags=["raw"], backend=backend)) == n

        assert wait_until(lambda: listed(2), WAIT)  # the catalog is written after the answer
        both = undertow.catalog.find(tags=["raw"], backend=backend)
        assert [r.key for r in both] == [raw.key, other.key]  # oldest first
        (found,) = undertow.catalog.find(tags=["raw", "2026"], backend=backend)
        assert (found.type_name, found.size) == ("numpy.ndarray", 8000)
        assert [loc.url for loc in found.locations] == [node.address]
        assert found.pointer()[0:3].tolist() == [0.0, 1.0, 2.0]  # usable as it is
        assert undertow.catalog.find(tags=["raw"], owner=found.owner, backend=backend)
        assert not undertow.catalog.find(tags=["raw"], owner="nobody", backend=backend)
        assert undertow.catalog.find(type_name="dict", backend=backend)[0].key == other.key

        table = _cli("data", "ls", "--backend", backend, "--tag", "raw")
        assert table.returncode == 0, table.stderr
        assert raw.key in table.stdout
        assert "numpy.ndarray" in table.stdout
        assert "8,000" in table.stdout
        listing = _cli("data", "ls", "--backend", backend, "--json")
        rows = json.loads(listing.stdout)["data"]
        assert {row["key"] for row in rows} == {raw.key, other.key}
        for secret in (raw.to_json()["secret_key"], other.to_json()["secret_key"]):
            assert secret not in table.stdout + listing.stdout

        with undertow.connect("data", backend=backend) as data:
            assert data.stats()["objects"] == 2
        assert other.delete()
        assert wait_until(lambda: listed(1), WAIT)
    finally:
        node.stop()
    # spilled (past the 1000-byte limit): still listed after the node stopped
    assert [r.key for r in undertow.catalog.find(backend=backend)] == [raw.key]


def test_what_a_service_keeps_is_listed_until_it_is_lost(tmp_path: Path) -> None:
    backend = f"sqlite:///{tmp_path / 'cluster.db'}"
    (tmp_path / "lab.py").write_text(SERVICE)
    service = ServedProcess(
        [sys.executable, "-m", "undertow.cli", "serve", "lab.py", "--backend", backend],
        cwd=tmp_path,
    )
    try:
        with undertow.connect("Lab", backend=backend) as lab:
            ptr = lab.table(5)
        assert wait_until(lambda: bool(undertow.catalog.find(backend=backend)), WAIT)
        (record,) = undertow.catalog.find(backend=backend)
        assert record.key == ptr.key
        assert record.pointer().shape == (5, 3)
    finally:
        service.stop()
    # only in memory: gone with the process, so it leaves the catalog with it
    assert undertow.catalog.find(backend=backend) == []


def test_put_without_a_data_server_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(ServiceNotFound, match="undertow data serve"):
        undertow.put(1, backend=f"sqlite:///{tmp_path / 'empty.db'}")
