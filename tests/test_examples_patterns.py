"""The examples in examples/patterns/ run: their servers start and register, each client
succeeds and prints what it should, and every server stops on SIGTERM with status 0."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._processes import ServedProcess

pytestmark = [pytest.mark.multiproc, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "patterns"
CLIENT_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

Launch = Callable[..., ServedProcess]


@pytest.fixture
def launch() -> Iterator[Launch]:
    """Start servers of the examples (ready once they print their ``serving`` lines); any
    still running after the test is killed."""
    started: list[ServedProcess] = []

    def start(*args: str, lines: int = 1) -> ServedProcess:
        proc = ServedProcess([sys.executable, "-u", *args], lines=lines)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGKILL)


def _client(script: Path) -> tuple[list[str], str]:
    """Run a client to its end; its stdout lines and its stderr."""
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout.splitlines(), result.stderr


def _terminate(*servers: ServedProcess) -> list[tuple[str, str]]:
    """SIGTERM ``servers`` (all at once: a worker may finish a long poll before it exits),
    each of which must exit 0 within STOP_TIMEOUT; what each printed after its ready lines,
    and its stderr."""
    for server in servers:
        server.proc.send_signal(signal.SIGTERM)
    said = []
    for server in servers:
        try:
            out, err = server.proc.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.stop(signal.SIGKILL)
            pytest.fail(f"{server.proc.args!r} ignored SIGTERM for {STOP_TIMEOUT:g} s")
        text = err.decode(errors="replace")
        code = server.proc.returncode
        assert code == 0, f"{server.proc.args!r} exited with {code}:\n{text}"
        assert "Traceback" not in text, text
        said.append((out.decode(errors="replace"), text))
    return said


@pytest.mark.parametrize("how", ["script", "module"])
def test_standalone(launch: Launch, how: str) -> None:
    folder = EXAMPLES / "standalone"
    server_file = str(folder / "server.py")
    args = [server_file] if how == "script" else ["-m", "undertow.service", server_file]
    server = launch(*args)
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", server.address)
    out, err = _client(folder / "client.py")
    assert out == [
        "Client got: you sent me a message",
        "Streamed: ['you sent me one', 'you sent me two', 'you sent me three']",
        "input 0 failed: TypeError",
        "input 1: you sent me five",
    ]
    # the plain call's log line came to the caller; the streamed ones stayed on the server
    assert "my_server WARNING foo got 'a message'" in err
    [(_, server_err)] = _terminate(server)
    for logged in ("'one'", "'two'", "'three'", "4", "'five'"):
        assert f"foo got {logged}" in server_err
    assert "'a message'" not in server_err


def test_pipeline(launch: Launch) -> None:
    folder = EXAMPLES / "pipeline"
    stages = launch("-m", "undertow.service", str(folder / "stages.py"), lines=3)
    assert len(set(stages.addresses)) == 3
    out, _ = _client(folder / "client.py")
    assert len(out) == 6, out
    for line in out[:3]:
        assert re.fullmatch(r"Client got: baz\(bar\(foo\(message \d+\)\)\)", line), line
    assert out[3] == "answers: 200, messages answered: 200 of 200"
    overtaking = re.fullmatch(r"out of order: (\d+) answers came right after .*", out[4])
    assert overtaking is not None, out[4]
    assert int(overtaking[1]) > 0  # the point of the example: later messages overtake
    assert out[5] == (
        "In order: ['baz(bar(foo(message 0)))', 'baz(bar(foo(message 1)))', "
        "'baz(bar(foo(message 2)))']"
    )
    _terminate(stages)


def test_master_and_two_workers(launch: Launch) -> None:
    folder = EXAMPLES / "master"
    master = launch(str(folder / "master.py"))
    workers = [launch(str(folder / "worker.py")) for _ in range(2)]
    out, err = _client(folder / "client.py")
    assert out[:3] == [
        "cached: ['rates']",
        "orders: 1000, total: 427371.75 USD",
        "same as computed locally: True",
    ]
    taken = [re.fullmatch(r"worker \S+ took (\d+) orders", line) for line in out[3:]]
    assert 1 <= len(taken) <= 2, out
    assert sum(int(m[1]) for m in taken if m is not None) == 1000, out
    assert "1000/1000" in err  # the progress bar, on stderr
    answered = []
    for worker_out, _ in _terminate(*workers):
        found = re.search(r"worker: stopped after (\d+) orders", worker_out)
        assert found is not None, worker_out
        answered.append(int(found[1]))
    assert sum(answered) == 1000
    _terminate(master)
