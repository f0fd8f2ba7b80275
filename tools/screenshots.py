"""Screenshots of the dashboard's main views for docs/dashboard.md (docs/images/), taken
from a small live cluster on this machine: a notebook cluster (workers and a data server),
one service with a few functions, jobs (some failing) and data objects.

The load is made up with ``random`` (hence ``noqa: S311``: nothing here is a secret).

Run:  python tools/screenshots.py [OUTPUT_DIR]     (needs chromium and Playwright: the dev
extra, and Debian's chromium at /usr/bin/chromium or $UNDERTOW_CHROMIUM)
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import undertow
from undertow.dashboard import serve

CHROMIUM = os.environ.get("UNDERTOW_CHROMIUM", "/usr/bin/chromium")
#: seconds of live load before the pictures, so that the plots have a history
WARM_UP = 20.0

SERVICE = """
import random, time
from undertow.service import Expose

@Expose(name="imaging")
class Imaging:
    @Expose()
    def thumbnail(self, size):
        time.sleep(random.uniform(0.002, 0.012))
        return size // 4

    @Expose()
    def histogram(self, bins):
        time.sleep(random.uniform(0.010, 0.030))
        return [0] * bins
"""


def start_service(backend: str, workdir: Path) -> subprocess.Popen[bytes]:
    """``undertow serve`` of a small service, registered in the cluster's registry."""
    (workdir / "imaging_service.py").write_text(SERVICE)
    undertow_cli = str(Path(sys.executable).parent / "undertow")
    env = {**os.environ, "UNDERTOW_BACKEND": backend}
    env.pop("UNDERTOW_TOKEN", None)
    return subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
        [undertow_cli, "serve", "imaging_service.py"],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def load(cluster: Any, stop: threading.Event) -> None:
    """Calls, jobs and data, at a steady pace, until ``stop``."""
    imaging = None
    while not stop.is_set():
        if imaging is None:
            try:
                imaging = cluster.connect("imaging", token=False)
            except undertow.UndertowError:
                stop.wait(0.5)
                continue
        for _ in range(5):
            imaging.thumbnail(random.randint(64, 4096))  # noqa: S311
        imaging.histogram(16)
        if random.random() < 0.5:  # noqa: S311
            seconds, fail = random.uniform(0.1, 1.5), random.random() < 0.1  # noqa: S311
            cluster.submit(_work, seconds, fail=fail)
        stop.wait(0.1)


def _work(seconds: float, fail: bool = False) -> float:
    print(f"working for {seconds:.2f} s")
    time.sleep(seconds)
    if fail:
        raise ValueError("the input image is truncated")
    print("done")
    return seconds


def shoot(url: str, out: Path, loader: threading.Thread, stop: threading.Event) -> None:
    """The four views, at 1280 x 800, once the page watched the load for WARM_UP seconds
    (the plots draw what the page saw: the dashboard reads the cluster while it is open)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("live", timeout=20_000)
        deadline = time.monotonic() + WARM_UP
        while time.monotonic() < deadline and loader.is_alive():
            stop.wait(1.0)
        page.screenshot(path=str(out / "dashboard-overview.png"))
        page.click('nav a[data-view="jobs"]')
        failed = page.locator("#jobs tbody tr:has(.state-failed)")
        (failed if failed.count() else page.locator("#jobs tbody tr.clickable")).first.click()
        expect(page.locator("#job-explain")).not_to_be_empty(timeout=20_000)
        page.screenshot(path=str(out / "dashboard-jobs.png"))
        page.click('nav a[data-view="data"]')
        page.screenshot(path=str(out / "dashboard-data.png"))
        page.click('nav a[data-view="functions"]')
        page.screenshot(path=str(out / "dashboard-functions.png"))
        browser.close()


def main() -> None:
    """Start the cluster and the load, take the pictures, stop everything."""
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, undertow.Cluster(workers=2) as cluster:
        service = start_service(cluster.backend, Path(tmp))
        stop = threading.Event()
        loader = threading.Thread(target=load, args=(cluster, stop), daemon=True)
        try:
            for i in range(12):
                cluster.put(
                    bytes(random.randint(1, 4) << 20),  # noqa: S311
                    tags=["raw", f"batch-{i % 3}"],
                )
            loader.start()
            with serve(cluster.backend, port=0, interval=0.5) as dashboard:
                shoot(dashboard.url, out, loader, stop)
        finally:
            stop.set()
            loader.join(30)
            service.terminate()
            service.wait(30)
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
