"""The remote half of `undertow up`/`down` (undertow.deploy._agent), driven here as ssh
drives it: `python -m undertow.deploy._agent` with one JSON request on standard input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.multiproc, pytest.mark.timeout(60)]

#: a process that says it is ready, then ignores SIGTERM: only SIGKILL stops it
STUBBORN = (
    "import signal, sys, threading; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready to serve', flush=True); threading.Event().wait()"
)
#: one that stops at SIGTERM (the default action)
GENTLE = "import sys, threading; print('ready to serve', flush=True); threading.Event().wait()"


def agent(request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "undertow.deploy._agent"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def start(run: Path, **scripts: str) -> dict[str, Any]:
    procs = [
        {"name": name, "role": "serve", "args": [sys.executable, "-c", code], "ready": "ready"}
        for name, code in scripts.items()
    ]
    files = {"tokens": "ada.secret\n"}
    return agent(
        {"action": "start", "run": str(run), "files": files, "procs": procs, "timeout": 30}
    )


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_start_waits_for_readiness_and_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    run = tmp_path / "run"
    started = start(run, stubborn=STUBBORN, gentle=GENTLE)
    assert started["ok"], started
    assert [p["ready"] for p in started["procs"]] == ["ready to serve"] * 2
    pids = {p["name"]: p["pid"] for p in started["procs"]}
    assert all(running(pid) for pid in pids.values())
    assert oct((run / "tokens").stat().st_mode & 0o777) == "0o600"
    assert oct(run.stat().st_mode & 0o777) == "0o700"

    again = start(run, gentle=GENTLE)  # the same name, still running: refused
    assert again == {"ok": False, "error": "already running here: gentle"}

    request = {"action": "stop", "run": str(run), "timeout": 0.5, "secrets": ["tokens"]}
    stopped = agent({**request, "roles": None})
    assert stopped["ok"], stopped
    how = {p["name"]: p["how"] for p in stopped["stopped"]}
    assert how == {"stubborn": "SIGKILL", "gentle": "SIGTERM"}
    assert not any(running(pid) for pid in pids.values())
    assert not (run / "tokens").exists()  # the secrets go with the processes
    assert json.loads((run / "procs.json").read_text()) == []


def test_a_process_that_exits_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    started = start(tmp_path / "run", broken="import sys; sys.exit('no such module: jobs')")
    assert not started["ok"]
    (proc,) = started["procs"]
    assert proc["error"] == "exited (1)"
    assert "no such module: jobs" in proc["tail"]


def test_a_recorded_pid_now_of_another_process_is_not_signalled(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", GENTLE], stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None
        assert other.stdout.readline() == b"ready to serve\n"
        # a record of an earlier process whose pid `other` has now: another start time
        entry = {"name": "serve-0", "role": "serve", "pid": other.pid, "start": "1"}
        (run / "procs.json").write_text(json.dumps([entry]))
        stopped = agent({"action": "stop", "run": str(run), "roles": None, "timeout": 1})
        assert stopped["stopped"] == [{"name": "serve-0", "pid": other.pid, "how": "not running"}]
        assert other.poll() is None
    finally:
        other.kill()
        other.communicate(timeout=10)  # (and its pipe closed)
