"""The ``undertow`` command as a new user meets it: run as a process of its own against real
servers in processes of their own."""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._processes import ChildServer, ServedProcess

pytestmark = pytest.mark.multiproc

CLI = [sys.executable, "-m", "undertow.cli"]
CLI_TIMEOUT = 60.0
CLI_SOURCES = Path(__file__).resolve().parent.parent / "src" / "undertow" / "cli"

PLAIN = """
import sys
import undertow

server = undertow.Server(name="plain")

@server.register
def train(epochs: int = 3) -> dict:
    \"\"\"Pretend to train, printing each epoch.

    More words that --list leaves out.
    \"\"\"
    for epoch in range(1, epochs + 1):
        print(f"epoch {epoch}", flush=True)
    return {"epochs": epochs}

@server.register
def countdown(n: int):
    yield from range(n, 0, -1)

server.serve_forever(address=sys.argv[1], http_port=int(sys.argv[2]) if sys.argv[2:] else None)
"""

SERVICE = """
from undertow.service import Expose

@Expose()
class Greeter:
    @Expose()
    def hello(self, name):
        return f"hello {name}"
"""


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[ChildServer]:
    """A plain undertow.Server (not a registered service) on tcp port 0, also serving HTTP:
    its addresses are ``tcp://...`` and ``http://...``."""
    server = ChildServer(PLAIN, tmp_path, ("tcp://127.0.0.1:0", "0"), lines=2)
    yield server
    server.stop()


# -- undertow call ADDRESS FUNCTION ------------------------------------------------------------


def test_call_reaches_a_plain_server_by_its_tcp_address(plain):
    address = plain.addresses[0]
    assert address.startswith("tcp://127.0.0.1:")  # an address with dots in it
    done = run("call", address, "train", "epochs=2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["epoch 1", "epoch 2", '{"epochs":2}']


def test_call_reaches_a_plain_server_by_its_http_address(plain):
    address = plain.addresses[1]
    assert address.startswith("http://127.0.0.1:")
    done = run("call", address, "train", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == '{"epochs":2}'
    assert "epoch 2" in done.stdout


def test_call_reaches_a_plain_server_by_its_ipc_address(tmp_path):
    # a short directory of its own: a socket path may not be longer than about 100 bytes
    with tempfile.TemporaryDirectory(prefix="ut-") as short:
        server = ChildServer(PLAIN, tmp_path, (f"ipc://{short}/plain",))
        try:
            assert server.address == f"ipc://{short}/plain"
            done = run("call", server.address, "countdown", "3")
        finally:
            server.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["3", "2", "1"]  # a generator's items, one a line


def test_call_lists_a_plain_servers_functions(plain):
    listed = run("call", plain.addresses[0], "--list")
    assert listed.returncode == 0, listed.stderr
    first, *functions = listed.stdout.splitlines()
    assert plain.addresses[0] in first
    assert "'plain'" in first
    assert functions == [
        "  countdown(n: int)",
        "  train(epochs: int = 3) -> dict  -- Pretend to train, printing each epoch.",
    ]


def test_call_of_an_address_without_a_function_says_how_to_list_them(plain):
    done = run("call", plain.addresses[0])
    assert done.returncode == 1
    assert f"undertow call {plain.addresses[0]} --list" in done.stderr


def test_call_of_neither_an_address_nor_a_method_names_both_forms():
    done = run("call", "nothing", "--wait", "0.1")
    assert done.returncode == 1
    assert "'nothing' is neither an address" in done.stderr
    assert "tcp://HOST:PORT" in done.stderr


def test_call_still_reaches_a_registered_service_and_lists_its_methods(tmp_path):
    (tmp_path / "greeter.py").write_text(SERVICE)
    service = ServedProcess([sys.executable, "-m", "undertow.service", "greeter.py"], cwd=tmp_path)
    try:
        done = run("call", "Greeter.hello", "you", cwd=tmp_path)
        listed = run("call", "Greeter", "--list", cwd=tmp_path)
        status = run("status", cwd=tmp_path)
    finally:
        service.stop()
    assert (done.returncode, done.stdout) == (0, '"hello you"\n'), done.stderr
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1:] == ["  hello(name)"]
    # the table stays a table; the hint about plain servers goes to stderr
    assert status.stdout.splitlines()[2].split()[0] == "Greeter"
    assert "undertow call tcp://HOST:PORT --list" in status.stderr


# -- help and status ------------------------------------------------------------------------------


def test_call_help_shows_each_example_on_its_own_line():
    shown = run("call", "--help")
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    for example in (
        "undertow call tcp://127.0.0.1:5555 train epochs=2",
        "undertow call http://127.0.0.1:8080 divide 1 3",
        "undertow call MemKeyValue.put key=a value=3",
        "undertow call MemKeyValue.get a",
        "undertow call tcp://127.0.0.1:5555 --list",
    ):
        assert example in lines


def test_status_with_nothing_registered_says_how_to_see_a_plain_server():
    shown = run("status")
    assert shown.returncode == 0, shown.stderr
    assert "no live services" in shown.stdout
    assert "plain undertow.Server is not registered" in shown.stdout
    assert "undertow call tcp://HOST:PORT --list" in shown.stdout


# -- size -----------------------------------------------------------------------------------------


def test_the_cli_modules_and_functions_stay_within_the_size_limits():
    for path in sorted(CLI_SOURCES.glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 500, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                assert length <= 50, f"{path.name}: {node.name}() has {length} lines"
