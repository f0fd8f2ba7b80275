"""undertow broker: a redis-server for the job queue, durable by default (a real server)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from undertow.queue import JobQueue
from undertow.storage import open_backend

from ._processes import free_port
from ._redis import _wait_ready

pytestmark = pytest.mark.timeout(60)


def test_the_broker_keeps_an_append_only_file_synced_on_every_write(tmp_path: Path):
    port = free_port()
    command = [sys.executable, "-m", "undertow.cli", "broker", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--dir", str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert _wait_ready(proc, time.monotonic() + 30) == ""
        url = f"redis://127.0.0.1:{port}/0"

        async def durability() -> str | None:
            backend = open_backend(url)
            try:
                return await backend.durability()
            finally:
                await backend.close()

        assert asyncio.run(durability()) is None  # nothing to warn about
        with JobQueue(url, token=False) as queue:
            job = queue.submit("anything")
        config = tmp_path / "b" / "redis.conf"
        assert "appendfsync always" in config.read_text()
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert job.id.encode() in b"".join(
            p.read_bytes() for p in (tmp_path / "b").rglob("*.aof") if p.is_file()
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        if proc.stdout:
            proc.stdout.close()


def test_beyond_loopback_it_needs_a_password_kept_private(tmp_path: Path):
    from undertow.cli._broker import broker_config

    config, url = broker_config(tmp_path, bind="0.0.0.0", port=7000, fsync="always")  # noqa: S104
    password = (tmp_path / "password").read_text().strip()
    assert f"requirepass {password}" in config.read_text()
    assert url == "redis://:****@0.0.0.0:7000/0"
    assert password not in url
    for path in (config, tmp_path / "password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, _ = broker_config(tmp_path, bind="0.0.0.0", port=7000, fsync="always")  # noqa: S104
    assert (tmp_path / "password").read_text().strip() == password  # made once
    assert os.path.samefile(again, config)
