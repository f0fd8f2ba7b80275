"""``undertow dashboard`` as a process (its readiness line, its refusals, a clean stop on
SIGTERM), the dashboard on the Redis backend, and the figures of a registered service."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

import undertow
from undertow.dashboard import serve
from undertow.data import DataRecord, Location
from undertow.storage import JobRecord, open_backend

from ._dashboard import UNDERTOW
from ._processes import ServedProcess, read_line
from ._waiting import wait_until

pytestmark = [pytest.mark.timeout(60)]

TOKEN = "t0ken-for-the-cli-tests"


@pytest.mark.multiproc
def test_the_command_prints_its_url_serves_and_stops_on_sigterm(tmp_path: Path):
    url = f"sqlite://{tmp_path / 'cluster.db'}"
    proc = subprocess.Popen(
        [*UNDERTOW, "dashboard", "--backend", url, "--port", "0", "--token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        line = read_line(proc, "undertow dashboard")
        found = re.fullmatch(
            r"undertow: dashboard at (http://127\.0\.0\.1:\d+)/\?token=(\S+)\s*", line
        )
        assert found is not None, line
        address, token = found.groups()
        assert token == TOKEN
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{address}/api/snapshot", headers=auth).json()["ready"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
    assert TOKEN.encode() not in err  # never logged
    assert b"Traceback" not in err


@pytest.mark.multiproc
def test_the_command_refuses_another_interface_without_expose(tmp_path: Path):
    done = subprocess.run(
        [*UNDERTOW, "dashboard", "--backend", f"sqlite://{tmp_path / 'c.db'}",
         "--host", "0.0.0.0", "--port", "0"],  # noqa: S104 - refused
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "--expose" in done.stderr
    assert "ssh -L" in done.stderr


def test_the_dashboard_reads_a_redis_backend(redis_url: str):
    keys = [uuid.uuid4().hex for _ in range(3)]
    job_id = uuid.uuid4().hex

    async def fill() -> None:
        backend = open_backend(redis_url)
        try:
            for i, key in enumerate(keys):
                await backend.record_data(
                    DataRecord(
                        key=key, secret="never-sent", type_name="bytes", size=i,
                        created=1000.0 + i, owner="bob", tags=["r"],
                        locations=[Location(protocol="zmq", host="node-2", port=5600)],
                    )
                )  # fmt: skip
            await backend.enqueue(JobRecord(id=job_id, queues=["redisq"], function="f"))
        finally:
            await backend.close()

    asyncio.run(fill())
    with serve(redis_url, port=0, token=TOKEN, interval=0.2) as dashboard:
        auth = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=dashboard.address, headers=auth) as http:
            assert wait_until(lambda: http.get("/api/snapshot").json()["jobs"], 20)
            snapshot = http.get("/api/snapshot").json()
            assert [j["id"] for j in snapshot["jobs"]] == [job_id]
            assert [q["name"] for q in snapshot["queues"]] == ["redisq"]
            assert [d["key"] for d in snapshot["data"]] == keys[::-1]
            first = http.get("/api/data?limit=2").json()
            rest = http.get(f"/api/data?limit=2&after={first['next']}").json()
            assert [d["key"] for d in first["data"] + rest["data"]] == keys[::-1]
            assert "never-sent" not in http.get("/api/data").text


SERVICE = """
from undertow.service import Expose

@Expose(name="Imaging")
class Imaging:
    @Expose()
    def thumbnail(self, size):
        return size // 4
"""


@pytest.mark.multiproc
def test_the_functions_of_a_registered_service_show_their_calls(tmp_path, monkeypatch):
    url = f"sqlite://{tmp_path / 'cluster.db'}"
    monkeypatch.setenv("UNDERTOW_BACKEND", url)
    (tmp_path / "imaging.py").write_text(SERVICE)
    service = ServedProcess([*UNDERTOW, "serve", "imaging.py"], cwd=tmp_path)
    try:
        with (
            undertow.connect("Imaging", backend=url) as imaging,
            serve(url, port=0, token=TOKEN, interval=0.2) as dashboard,
            httpx.Client(
                base_url=dashboard.address, headers={"authorization": f"Bearer {TOKEN}"}
            ) as http,
        ):
            for size in range(10):
                assert imaging.thumbnail(size * 4) == size

            def thumbnail_calls() -> int:
                functions = http.get("/api/snapshot").json()["functions"]
                return sum(f["calls"] for f in functions if f["name"] == "Imaging.thumbnail")

            assert wait_until(lambda: thumbnail_calls() >= 10, 20), thumbnail_calls()
            snapshot = http.get("/api/snapshot").json()
    finally:
        service.stop()
    assert [s["name"] for s in snapshot["services"]] == ["Imaging"]
    assert snapshot["services"][0]["instances"][0]["address"] == service.address
    assert [f["name"] for f in snapshot["functions"]] == ["Imaging.thumbnail"]  # no _stats


@pytest.mark.usefixtures("undertow_home")
def test_a_clusters_dashboard_link_starts_its_dashboard_and_stops_with_it() -> None:
    cluster = undertow.Cluster(workers=0, data=False)
    try:
        assert "cluster.dashboard_link" in cluster._repr_html_()  # displaying starts nothing
        link = cluster.dashboard_link
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=\S+", link), link
        assert cluster.dashboard_link == link  # one dashboard a cluster
        assert link in cluster._repr_html_()
        with httpx.Client(timeout=10, follow_redirects=True) as http:
            page = http.get(link)  # the token, swapped for a cookie
            assert page.status_code == 200
            assert "token=" not in str(page.url)
            cluster.submit("len", [1, 2])  # no worker: it waits on the cluster's queue
            api = link.split("?")[0] + "api/snapshot"
            assert wait_until(lambda: '"queued":1' in http.get(api).text.replace(" ", ""), 20)
    finally:
        cluster.close()
    with pytest.raises(httpx.HTTPError):  # stopped with the cluster
        httpx.get(link, timeout=5)
    with pytest.raises(undertow.ClusterError):
        _ = cluster.dashboard_link
