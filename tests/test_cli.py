"""The ``undertow`` command as a new user meets it: run as a process of its own against real
servers in processes of their own."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from undertow.security import new_token

from ._processes import ChildServer, ServedProcess, free_port

pytestmark = pytest.mark.multiproc

CLI = [sys.executable, "-m", "undertow.cli"]
CLI_TIMEOUT = 60.0
CLI_SOURCES = Path(__file__).resolve().parent.parent / "src" / "undertow" / "cli"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

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


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command with ``args``; ``env`` adds to (or, with "", removes from) the
    environment."""
    environ = dict(os.environ)
    for name, value in (env or {}).items():
        if value:
            environ[name] = value
        else:
            environ.pop(name, None)
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
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


# -- undertow config ------------------------------------------------------------------------------


@pytest.fixture
def config_toml(undertow_home: Path) -> Path:
    """The settings file of the test's undertow home (which child processes inherit)."""
    path = undertow_home / "config.toml"
    path.write_text("[host]\nport = 7001\nttl = 4\n\n[server]\nmax_workers = 3\n")
    path.chmod(0o600)
    return path


def shown(stdout: str) -> dict[tuple[str, str], tuple[str, str]]:
    """``undertow config show``'s lines as {(section, name): (value, source)}."""
    rows: dict[tuple[str, str], tuple[str, str]] = {}
    section = ""
    for line in stdout.splitlines()[1:]:
        if line.startswith("["):
            section = line.strip("[]")
        elif line.strip():
            name, value, source = line.split(maxsplit=2)
            rows[section, name] = (value, source)
    return rows


def test_config_show_says_each_value_and_where_it_came_from(config_toml):
    token = new_token("ada")
    env = {"UNDERTOW_HOST": "10.1.2.3", "UNDERTOW_TOKEN": token, "UNDERTOW_PORT": ""}
    done = run("config", "show", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"settings file: {config_toml}"
    rows = shown(done.stdout)
    assert rows["host", "port"] == ("7001", f"[host] in {config_toml}")
    assert rows["host", "ttl"] == ("4.0", f"[host] in {config_toml}")
    assert rows["server", "max_workers"] == ("3", f"[server] in {config_toml}")
    assert rows["host", "host"] == ('"10.1.2.3"', "$UNDERTOW_HOST")
    assert rows["host", "token"] == ("***", "$UNDERTOW_TOKEN")  # the loader reads the variable
    assert rows["host", "backend"] == ("unset", "default")
    assert rows["host", "insecure"] == ("false", "default")
    assert rows["server", "replay_window"] == ("60.0", "default")
    assert token.partition(".")[2] not in done.stdout + done.stderr
    # the sections, each setting once, in the dataclasses' order
    assert [line for line in done.stdout.splitlines() if line.startswith("[")] == [
        "[host]",
        "[server]",
    ]
    assert list(rows)[:2] == [("host", "host"), ("host", "port")]


def test_config_show_json_is_one_array_of_rows(config_toml):
    token = new_token("ada")
    done = run("config", "show", "--json", env={"UNDERTOW_TOKEN": token, "UNDERTOW_PORT": "7002"})
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list)
    by_name = {(row["section"], row["name"]): row for row in rows}
    assert by_name["host", "port"] == {
        "section": "host",
        "name": "port",
        "value": 7002,
        "source": "$UNDERTOW_PORT",
        "env": "UNDERTOW_PORT",
        "doc": "the port of the first service (0: a free one; others take free ones)",
    }
    assert by_name["host", "ttl"]["value"] == 4.0
    assert by_name["host", "ttl"]["source"] == f"[host] in {config_toml}"
    assert (by_name["host", "token"]["value"], by_name["host", "token"]["source"]) == (
        "***",
        "$UNDERTOW_TOKEN",
    )
    assert by_name["host", "backend"]["value"] is None
    assert by_name["server", "name"]["env"] == ""  # no variable sets it
    assert token.partition(".")[2] not in done.stdout


def test_config_show_reports_a_bad_value_by_name_without_a_traceback(config_toml):
    done = run("config", "show", env={"UNDERTOW_PORT": "eighty"})
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == (
        "Error: port must be a whole number, not 'eighty' (from $UNDERTOW_PORT)"
    )
    config_toml.write_text("[host]\nprot = 7000\n")
    done = run("config", "show", env={"UNDERTOW_PORT": ""})
    assert done.returncode == 1
    assert f"Error: [host] in {config_toml} has an unknown setting 'prot'" in done.stderr
    assert "Traceback" not in done.stderr


def test_config_path_prints_the_settings_file(undertow_home, config_toml):
    done = run("config", "path")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{config_toml}\n", "")
    config_toml.unlink()
    done = run("config", "path")
    assert (done.returncode, done.stdout) == (0, f"{undertow_home / 'config.toml'}\n")
    assert "does not exist yet" in done.stderr
    shown_without = run("config", "show", env={"UNDERTOW_PORT": ""})
    assert shown_without.returncode == 0, shown_without.stderr
    assert shown_without.stdout.splitlines()[0].endswith("config.toml (no such file)")
    assert shown(shown_without.stdout)["host", "port"] == ("0", "default")


# -- undertow serve takes its settings from the environment and the file ------------------------


def test_serve_takes_its_port_from_the_environment(monkeypatch):
    port = free_port()
    monkeypatch.setenv("UNDERTOW_PORT", str(port))
    service = ServedProcess([*CLI, "serve", str(EXAMPLES / "memkv" / "memkv.py")])
    try:
        assert service.address == f"tcp://127.0.0.1:{port}"
    finally:
        service.stop()


def test_serve_takes_its_port_from_the_file_and_its_token_from_the_environment(
    tmp_path, undertow_home, monkeypatch
):
    port = free_port()
    (undertow_home / "config.toml").write_text(f"[host]\nport = {port}\n")
    monkeypatch.delenv("UNDERTOW_PORT", raising=False)
    monkeypatch.setenv("UNDERTOW_TOKEN", new_token("ada"))
    (tmp_path / "greeter.py").write_text(SERVICE)
    service = ServedProcess([*CLI, "serve", "greeter.py"], cwd=tmp_path)
    try:
        assert service.address == f"tcp://127.0.0.1:{port}"
        status = run("status", "--json", cwd=tmp_path)
        called = run("call", "Greeter.hello", "you", cwd=tmp_path)
        refused = run("call", "Greeter.hello", "you", cwd=tmp_path, env={"UNDERTOW_TOKEN": ""})
    finally:
        service.stop()
    assert [i["security"] for i in json.loads(status.stdout)["instances"]] == ["tokens"]
    assert (called.returncode, called.stdout) == (0, '"hello you"\n'), called.stderr
    assert refused.returncode == 1
    assert "AuthenticationError" in refused.stderr


def test_serve_help_shows_the_defaults_and_where_options_not_given_come_from():
    shown_help = run("serve", "--help")
    assert shown_help.returncode == 0, shown_help.stderr
    text = " ".join(shown_help.stdout.split())
    assert "Interface to bind (default: 127.0.0.1)." in text
    assert "Port (default: 0, a free one)." in text
    assert "(default: 1073741824, 1 GiB)" in text
    assert "An option not given comes from $UNDERTOW_<OPTION>" in text


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
