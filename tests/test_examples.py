"""The scripts in examples/ run: each server starts, its client succeeds, the server stops."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiproc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 60.0


def _read_first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints, waiting at most ``timeout`` seconds for it."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            pytest.fail(f"the process printed nothing within {timeout:g} s")
    return proc.stdout.readline()


def _run(script: Path, *args: str) -> list[str]:
    """Run an example script to completion; its stdout lines."""
    result = subprocess.run(
        [sys.executable, "-u", str(script), *args],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout.splitlines()


def _run_with_server(example: str) -> list[str]:
    """Start examples/<example>/server.py, run its client against it, then SIGTERM it.

    Returns the client's stdout lines; fails unless the server announces its address, the
    client succeeds and the server exits 0 within STOP_TIMEOUT of SIGTERM.
    """
    folder = EXAMPLES / example
    server = subprocess.Popen(
        [sys.executable, "-u", str(folder / "server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_first_line(server, READY_TIMEOUT)
        assert line.startswith("undertow: serving "), f"unexpected first line {line!r}"
        address = line.split()[-1]
        assert address.startswith("tcp://127.0.0.1:")
        out = _run(folder / "client.py", address)
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the {example} server ignored SIGTERM for {STOP_TIMEOUT:g} s")
        _, err = server.communicate()
        assert code == 0, f"the {example} server exited with {code}:\n{err}"
        return out
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_quickstart() -> None:
    out = _run_with_server("quickstart")
    for expected in (
        "add(2, 3) = 5",
        "add(x: float, y: float = 1.0) -> float: Add two numbers.",
        "epoch 1/3: loss=0.500",
        "epoch 3/3: loss=0.125",
        "final loss: 0.125",
        "caught ZeroDivisionError: division by zero",
        "squares: [0, 1, 4, 9, 16]",
        "with a deadline: 49",
    ):
        assert expected in out
    # the remote traceback names the function that raised
    assert any("in divide" in line for line in out)
    # the live output comes before the result it precedes
    assert out.index("epoch 3/3: loss=0.125") < out.index("final loss: 0.125")
    # output=False silenced the second train() call
    assert "epoch 1/1: loss=0.500" not in out


def test_async_and_streams() -> None:
    out = _run_with_server("async_and_streams")
    for expected in (
        "fetched item-1",
        "counting down from 3",
        "tick 2",
        "sync countdown: [2, 1]",
    ):
        assert expected in out
    assert [line for line in out if line.startswith("countdown:")] == [
        "countdown: 3",
        "countdown: 2",
        "countdown: 1",
    ]
    assert any(line.startswith("fetched 10 items concurrently") for line in out)


def test_lowlevel() -> None:
    out = _run(EXAMPLES / "lowlevel" / "main.py")
    assert out[0].startswith("listening on tcp://127.0.0.1:")
    assert out[1:] == [
        "add: 3",
        "slow_double: [0, 2, 4, 6, 8]",
        "caught TypeError: add() missing 1 required positional argument: 'y'",
        "closed",
    ]


def test_security(tmp_path, monkeypatch) -> None:
    tokens = tmp_path / "tokens"
    for name in ("alice", "bob"):
        made = subprocess.run(
            [sys.executable, "-m", "undertow.cli", "token", "new", name, "--append", str(tokens)],
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            check=True,
        )
        assert made.stdout.startswith(f"{name}.")
    assert oct(tokens.stat().st_mode)[-3:] == "600"
    monkeypatch.setenv("UNDERTOW_TOKENS", str(tokens))
    out = _run_with_server("security")
    assert out[:2] == ["bob sees lab: 100", "bob moves 5: 95"]
    assert out[2].startswith("bob moves 50: denied: 'bob' may not call transfer()")
    assert out[3:] == [
        "bob resets: denied",
        "bob runs python: denied",
        "alice moves 50: 45",
        "alice resets: reset",
        "alice runs python: 12",
        "a stranger: refused",
    ]


def test_http() -> None:
    server = subprocess.Popen(
        [sys.executable, "-u", str(EXAMPLES / "http" / "server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _read_first_line(server, READY_TIMEOUT)
        assert first.startswith("undertow: serving ")
        assert server.stdout is not None
        second = server.stdout.readline()  # printed with the first, so it is buffered already
        assert "over HTTP on http://127.0.0.1:" in second
        out = _run(EXAMPLES / "http" / "client.py", second.split()[-1])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
        server.communicate()
    assert out == [
        "add(2, 3) = 5",
        "help: add(x: float, y: float = 1.0) -> float: Add two numbers.",
        "counting 3",
        "counting 2",
        "counting 1",
        "items: [3, 2, 1]",
        "future: 42",
    ]


def test_jobs() -> None:
    out = _run(EXAMPLES / "jobs" / "jobs.py")
    assert out == [
        "queued: 10 jobs",
        "resizing cat.png to 200 px",
        "resize: cat-200.png",
        "it printed: resizing cat.png to 200 px",
        "doubled: 42",
        "squares: [0, 1, 4, 9, 16, 25, 36, 49]",
        "state: done",
    ]


def test_jobs_on_a_cluster() -> None:
    out = _run(EXAMPLES / "jobs" / "cluster.py")
    assert out == [
        "started: 2 workers",
        "scoring 'the quick brown fox'",
        "score: 4",
        "resizing dog.png to 64 px",
        "resize: dog-64.png",
        "waited: 10 done, 0 pending",
        "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "slice: ['beta', 'gamma']",
        "longest: alpha",
        "rows 3-5: [9, 16, 25]",
        f"total: {sum(i * i for i in range(100_000)) % 1000}",
        "stopped",
    ]
