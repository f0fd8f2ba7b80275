"""The dashboard in a real browser (headless chromium through Playwright) and over plain
HTTP: the page loads clean, follows a job and a worker live, and shows nothing to anyone
without the token; the Host check, the CSRF check and the headers keep other sites out;
no pointer secret is ever sent."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from undertow.dashboard import Dashboard, serve
from undertow.data import DataRecord, Location
from undertow.errors import ConfigError
from undertow.queue import JobQueue
from undertow.storage import JobRecord, open_backend

from ._dashboard import WorkerProcess, launch_browser
from ._waiting import wait_until

pytestmark = [pytest.mark.timeout(90)]

TOKEN = "t0ken-for-the-dashboard-tests"
SECRET = "pointer-secret-that-must-never-be-sent"
WAIT_MS = 20_000
#: the workers' lease, which is their heartbeat TTL (they beat every third of it)
LEASE = 4.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def backend_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'cluster.db'}"


@pytest.fixture
def dashboard(backend_url: str) -> Iterator[Dashboard]:
    with serve(backend_url, port=0, token=TOKEN, interval=0.2) as handle:
        yield handle


@pytest.fixture
def worker(backend_url: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(backend_url, tmp_path, lease=LEASE)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page that records every console error and uncaught exception."""
    context = browser.new_context()
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    try:
        yield page
    finally:
        context.close()


@pytest.mark.multiproc
def test_a_job_submitted_now_appears_and_finishes_on_the_open_page(
    dashboard, page, worker, backend_url, tmp_path
):
    from playwright.sync_api import expect

    page.goto(dashboard.url)
    assert "token=" not in page.url  # exchanged for a cookie, and out of the address bar
    expect(page.locator("#status")).to_contain_text("live", timeout=WAIT_MS)
    expect(page.locator(f'tr[data-worker="{worker.name}"] .health')).to_have_text("healthy")
    release = tmp_path / "release"
    with JobQueue(backend_url, token=False) as jobs:
        held = jobs.submit("hold", str(release))
        runs = page.locator(f'tr[data-worker="{worker.name}"] .runs')
        expect(runs).to_have_text("hold", timeout=WAIT_MS)  # what the worker runs, live
        release.touch()
        assert held.result(timeout=30) == "held"
        expect(runs).to_have_text("", timeout=WAIT_MS)
        job = jobs.submit("double", 21)
        assert job.result(timeout=30) == 42
    page.click('nav a[data-view="jobs"]')
    state = page.locator(f'tr[data-job="{job.id}"] .state')
    expect(state).to_have_text("done", timeout=WAIT_MS)
    page.locator(f'tr[data-job="{job.id}"]').click()
    expect(page.locator("#job-output")).to_contain_text("doubling 21", timeout=WAIT_MS)
    expect(page.locator("#job-explain")).to_contain_text("done")
    expect(page.locator('tr[data-queue="default"] .depth')).to_have_text("0")
    assert page.problems == []


@pytest.mark.multiproc
def test_a_killed_worker_turns_unhealthy_within_its_ttl(dashboard, page, worker):
    from playwright.sync_api import expect

    page.goto(dashboard.url)
    health = page.locator(f'tr[data-worker="{worker.name}"] .health')
    expect(health).to_have_text("healthy", timeout=WAIT_MS)
    worker.kill()
    killed = time.monotonic()
    expect(health).to_have_text("unhealthy", timeout=LEASE * 1000)
    assert time.monotonic() - killed < LEASE
    assert page.problems == []


def test_a_wrong_token_sees_nothing(dashboard, page, backend_url):
    seed(backend_url)
    page.goto(dashboard.address + "/?token=not-the-token")
    assert page.locator("form input[name=token]").is_visible()
    assert page.locator("#jobs").count() == 0
    with httpx.Client(base_url=dashboard.address) as http:
        first = http.get("/?token=wrong-wrong-wrong")
        assert first.status_code == 401
        assert "dashboard-test-owner" not in first.text
        assert "s3cret" not in first.text
        for path in ("/api/snapshot", "/api/events", "/api/jobs", "/api/data"):
            for headers in ({}, {"authorization": "Bearer wrong-wrong-wrong"}):
                answer = http.get(path, headers=headers)
                assert answer.status_code == 401, path
                assert "dashboard-test-owner" not in answer.text
    forged = {"undertow_dashboard_" + str(dashboard.port): "0" * 64}
    with httpx.Client(base_url=dashboard.address, cookies=forged) as http:
        assert http.get("/api/snapshot").status_code == 401


def test_the_token_once_becomes_a_strict_cookie(dashboard):
    with httpx.Client(base_url=dashboard.address) as http:
        answer = http.get(f"/?token={TOKEN}")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert TOKEN.lower() not in cookie  # an HMAC of it, not the token
        assert http.get("/api/snapshot").json()["ready"] is True


def test_another_host_name_is_refused(dashboard):
    with httpx.Client(base_url=dashboard.address) as http:
        for host in ("evil.example", f"evil.example:{dashboard.port}", "127.0.0.1.evil.example"):
            answer = http.get(f"/?token={TOKEN}", headers={"host": host})
            assert answer.status_code == 400, host
            assert "set-cookie" not in answer.headers
        assert http.get("/", headers={"host": f"localhost:{dashboard.port}"}).status_code == 200


def test_the_login_form_needs_this_origin_and_its_csrf_value(dashboard):
    with httpx.Client(base_url=dashboard.address) as http:
        form_page = http.get("/")
        csrf = form_page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        body = urllib.parse.urlencode({"csrf": csrf, "token": TOKEN})
        posted = {"content-type": "application/x-www-form-urlencoded"}
        evil = http.post(
            "/login", content=body, headers={**posted, "origin": "http://evil.example"}
        )
        assert evil.status_code == 403
        assert (
            "set-cookie" not in evil.headers
            or "undertow_dashboard_csrf" in evil.headers["set-cookie"]
        )
        no_origin = http.post("/login", content=body, headers=posted)
        assert no_origin.status_code == 403
        origin = {**posted, "origin": dashboard.address}
        forged = urllib.parse.urlencode({"csrf": "forged", "token": TOKEN})
        refused = http.post("/login", content=forged, headers=origin)
        assert refused.status_code == 403
        csrf = refused.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]  # a new one
        body = urllib.parse.urlencode({"csrf": csrf, "token": TOKEN})
        other_site = {**origin, "sec-fetch-site": "cross-site"}
        assert http.post("/login", content=body, headers=other_site).status_code == 403
        huge = body + "&pad=" + "x" * 100_000
        assert http.post("/login", content=huge, headers=origin).status_code == 413
        good = http.post("/login", content=body, headers=origin)
        assert good.status_code == 303
        assert http.get("/api/snapshot").status_code == 200


def test_the_browser_login_form_works(dashboard, page):
    from playwright.sync_api import expect

    page.goto(dashboard.address)
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    expect(page.locator("#status")).to_contain_text("live", timeout=WAIT_MS)
    assert page.problems == []


def test_every_answer_carries_the_security_headers(dashboard):
    with httpx.Client(base_url=dashboard.address) as http:
        answers = [
            http.get("/"),
            http.get("/api/snapshot"),
            http.get("/static/app.js"),
            http.get("/", headers={"host": "evil.example"}),
            http.get("/api/snapshot", headers={"authorization": f"Bearer {TOKEN}"}),
        ]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        login_form = 'name="csrf"' in answer.text  # its POST must carry a real Origin
        referrer = "same-origin" if login_form else "no-referrer"
        assert answer.headers["referrer-policy"] == referrer


def test_no_pointer_secret_is_ever_sent(dashboard, backend_url):
    key, job_id = seed(backend_url)
    bodies = []
    auth = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=dashboard.address, headers=auth) as http:
        assert wait_until(lambda: http.get("/api/snapshot").json()["data"], 20)
        snapshot = http.get("/api/snapshot").json()
        assert [d["key"] for d in snapshot["data"]] == [key]
        for path in ("/", "/api/snapshot", "/api/jobs", f"/api/jobs/{job_id}", "/api/data",
                     "/api/data?tag=raw", "/static/app.js", "/static/plot.js"):  # fmt: skip
            answer = http.get(path)
            assert answer.status_code == 200, path
            bodies.append(answer.text)
        with http.stream("GET", "/api/events") as events:
            for line in events.iter_lines():
                if line.startswith("data:"):
                    bodies.append(line)
                    break
    assert any(key in body for body in bodies)
    for body in bodies:
        assert SECRET not in body
        assert TOKEN not in body


def test_a_bad_page_request_is_answered_with_what_to_fix(dashboard):
    auth = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=dashboard.address, headers=auth) as http:
        assert "limit=0" in http.get("/api/jobs?limit=0").json()["error"]
        assert "not 32 lowercase hex" in http.get("/api/jobs?after=zzz").json()["error"]
        gone = uuid.uuid4().hex
        assert "first page" in http.get(f"/api/jobs?after={gone}").json()["error"]
        assert http.get(f"/api/jobs/{gone}").status_code == 404
        for path in ("/static/login.html", "/static/..%2f_app.py", "/static/%2e%2e/_app.py"):
            assert http.get(path).status_code == 404, path


def test_every_interface_with_expose_answers_by_this_machines_name():
    with serve(host="0.0.0.0", port=0, token=TOKEN, expose=True) as dashboard:  # noqa: S104
        assert socket.gethostname() in dashboard.address
        local = f"http://127.0.0.1:{dashboard.port}"
        with httpx.Client(base_url=local, headers={"authorization": f"Bearer {TOKEN}"}) as http:
            own = {"host": f"{socket.gethostname()}:{dashboard.port}"}
            assert http.get("/api/snapshot", headers=own).status_code == 200
            evil = {"host": f"evil.example:{dashboard.port}"}
            refused = http.get("/api/snapshot", headers=evil)
            assert refused.status_code == 400
            assert "--allow-host" in refused.text


def test_beyond_loopback_needs_expose():
    with pytest.raises(ConfigError, match="expose=True"):
        serve(host="0.0.0.0", port=0)  # noqa: S104
    with pytest.raises(ValueError, match="16 characters"):
        serve(port=0, token="short")


# -- helpers ----------------------------------------------------------------------------


def seed(backend_url: str) -> tuple[str, str]:
    """A catalog record whose secret is SECRET, and a job whose payload holds it too."""
    key, job_id = uuid.uuid4().hex, uuid.uuid4().hex

    async def write() -> None:
        backend = open_backend(backend_url)
        try:
            await backend.record_data(
                DataRecord(
                    key=key, secret=SECRET, type_name="numpy.ndarray", size=4096,
                    created=time.time(), owner="dashboard-test-owner", tags=["raw"],
                    locations=[Location(protocol="zmq", host="10.0.0.9", port=5600)],
                )
            )  # fmt: skip
            await backend.enqueue(
                JobRecord(id=job_id, queues=["default"], function="f", payload=SECRET.encode())
            )
        finally:
            await backend.close()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # (Playwright's loop is on this one)
        thread.submit(asyncio.run, write()).result(30)
    return key, job_id


def test_the_lists_page_in_the_browser(dashboard, page, backend_url):
    from playwright.sync_api import expect

    keys = fill_catalog(backend_url, 120)  # newest first on the page
    page.goto(dashboard.url)
    page.click('nav a[data-view="data"]')
    rows = page.locator("#data tbody tr")
    expect(rows).to_have_count(50, timeout=WAIT_MS)
    expect(rows.first).to_have_attribute("data-key", keys[0])
    page.click("#data-older")
    expect(page.locator("#data-mode")).to_have_text("page 2 (not live)")
    expect(rows.first).to_have_attribute("data-key", keys[50])
    page.click("#data-older")
    expect(rows).to_have_count(20)
    expect(rows.last).to_have_attribute("data-key", keys[-1])
    expect(page.locator("#data-older")).to_be_disabled()
    page.fill("#data-tag", "even")
    page.press("#data-tag", "Enter")
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-key", keys[1])  # the newest is odd
    page.click("#data-newest")
    expect(page.locator("#data-mode")).to_have_text("newest, live")
    assert page.problems == []


def fill_catalog(backend_url: str, count: int) -> list[str]:
    """``count`` catalog records, every other one tagged "even"; their keys, newest first."""
    keys = [uuid.uuid4().hex for _ in range(count)]

    async def write() -> None:
        backend = open_backend(backend_url)
        try:
            for i, key in enumerate(keys):
                await backend.record_data(
                    DataRecord(
                        key=key, secret=SECRET, type_name="bytes", size=i, created=1000.0 + i,
                        owner="o", tags=["even" if i % 2 == 0 else "odd"],
                        locations=[Location(protocol="zmq", host="node-1", port=5600)],
                    )
                )  # fmt: skip
        finally:
            await backend.close()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # (Playwright's loop is on this one)
        thread.submit(asyncio.run, write()).result(60)
    return keys[::-1]
