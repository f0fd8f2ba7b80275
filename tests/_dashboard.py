"""What the dashboard tests share: the browser, a worker process, a dashboard on a backend."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._processes import read_line

#: Debian's chromium (.ci/system-deps installs it); Playwright drives it, nothing downloaded
CHROMIUM = os.environ.get("UNDERTOW_CHROMIUM", "/usr/bin/chromium")
UNDERTOW = [str(Path(sys.executable).parent / "undertow")]

JOBS_MODULE = """
import threading
from pathlib import Path

def double(x):
    print("doubling", x)
    return x * 2

def hold(release):
    idle, turns = threading.Event(), 0
    while not Path(release).exists() and turns < 3000:   # 30 s at most
        idle.wait(0.01)
        turns += 1
    return "held"
"""


def launch_browser() -> Iterator[Any]:
    """A headless chromium driven by Playwright, or a skip saying what is missing."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(
            f"no chromium at {CHROMIUM} (apt-get install chromium, or set UNDERTOW_CHROMIUM)"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


class WorkerProcess:
    """``undertow worker`` on ``backend`` with a short lease (its heartbeat TTL), ready once
    it printed its first line."""

    def __init__(self, backend: str, workdir: Path, lease: float) -> None:
        (workdir / "jobfns.py").write_text(JOBS_MODULE)
        self.log = workdir / "worker.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*UNDERTOW, "worker", "--backend", backend, "--module", "jobfns",
                 "--lease", str(lease)],
                cwd=workdir, stdout=subprocess.PIPE, stderr=log,
            )  # fmt: skip
        line = read_line(self.proc, "the worker", self.log)
        assert line.startswith("undertow: worker "), line
        #: the worker's name, as the store and the page show it
        self.name = line.split()[2]

    def kill(self) -> None:
        """SIGKILL: no goodbye, no last beat."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
