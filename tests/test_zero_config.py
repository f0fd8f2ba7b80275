"""Zero-config authentication for one user on one machine: a server that serves pickle with no
tokens given accepts its user's own token, which that user's clients find by themselves."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import undertow
from undertow.security import parse_token, user_token


def compute_value_json(x: int) -> dict[str, int]:
    return {"double": 2 * x}


def compute_value_python(fn: Callable[[int], Any], x: int) -> Any:
    return fn(x)


@pytest.fixture
def kitchen_sink(serve: Callable[[undertow.Server], str]) -> str:
    """The configuration of the KitchenSink design document, as written there (our codec
    names), served on loopback with no token set up anywhere."""
    server = undertow.Server()
    server.config(
        {
            "*_json": {
                "input_serialization": "json",
                "output_serialization": "json",
                "return_pointer": False,
            },
            "*_python": {
                "input_serialization": "pickle",
                "output_serialization": "pickle",
                "return_pointer": True,
            },
        }
    )
    server.register("compute_value_json", compute_value_json)
    server.register("compute_value_python", compute_value_python)
    return serve(server)


def test_the_kitchen_sink_configuration_runs_with_nothing_set_up(kitchen_sink: str):
    assert "UNDERTOW_TOKEN" not in os.environ
    with undertow.connect(kitchen_sink) as client:
        assert client.compute_value_json(21) == {"double": 42}
        ptr = client.compute_value_python(lambda x: [x] * 3, 7)  # a notebook lambda
        assert isinstance(ptr, undertow.Pointer)
        assert ptr.fetch() == [7, 7, 7]
        assert client._token == user_token(create=False)


async def test_the_async_client_finds_the_user_token_too(kitchen_sink: str):
    async with undertow.AsyncClient(kitchen_sink) as client:
        ptr = await client.compute_value_python(lambda x: x + 1, 41)
        assert ptr.type_name == "int"


def test_over_http_the_same_user_is_recognised_too():
    server = undertow.Server()
    server.config({"*_python": {"input_serialization": "pickle", "return_pointer": True}})
    server.register("keep_python", lambda x: x)
    server.register("plain", lambda x: x)
    server.start(http_port=0)
    try:
        with undertow.connect(server.http_address) as client:
            ptr = client.keep_python([1, 2])
            assert isinstance(ptr, undertow.Pointer)
            assert ptr.fetch() == [1, 2]  # the pointer uses the identity it came with
        with undertow.connect(server.http_address, token=False) as anonymous:
            assert anonymous.plain(3) == 3
            with pytest.raises(undertow.AuthenticationError, match="pickle"):
                anonymous.keep_python(3)
    finally:
        server.stop()


def test_a_caller_without_the_user_token_reaches_only_what_takes_no_pickle(kitchen_sink: str):
    with undertow.connect(kitchen_sink, token=False) as client:
        assert client.compute_value_json(1) == {"double": 2}
        with pytest.raises(undertow.AuthenticationError, match="pickle"):
            client.compute_value_python(abs, -1)


def test_a_server_without_pickle_asks_for_no_signature(serve: Callable[[undertow.Server], str]):
    server = undertow.Server()
    server.register("compute_value_json", compute_value_json)
    with undertow.connect(serve(server)) as client:
        assert client.compute_value_json(2) == {"double": 4}
        assert client._token is None  # nothing signed: no cost where nothing needs it
    assert user_token(create=False) is None  # and no token was made


def test_a_token_given_explicitly_is_not_replaced(kitchen_sink: str):
    other = undertow.security.new_token("alice")
    with pytest.raises(undertow.UndertowError):
        undertow.connect(kitchen_sink, token=other, timeout=5).compute_value_json(1)


@pytest.fixture
def other_users_home() -> Iterator[Path]:
    """An undertow home for the user nobody (outside pytest's private temporary tree)."""
    home = Path(tempfile.mkdtemp(prefix="undertow-nobody-"))
    os.chown(home, 65534, 65534)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(os.getuid() != 0, reason="acting as another user needs root (CI is root)")
def test_another_user_of_the_machine_is_refused_pickle(
    kitchen_sink: str, other_users_home: Path, undertow_home: Path
):
    # nobody with a home of its own: an anonymous caller
    found = _as_nobody(kitchen_sink, other_users_home)
    assert found == {"json": {"double": 6}, "python": "AuthenticationError"}
    # nobody pointed at our home: it can read nothing there, and says so
    found = _as_nobody(kitchen_sink, undertow_home)
    assert found["connect"] == "ConfigError"
    assert "Permission denied" in found["message"]
    assert parse_token(user_token(create=False) or "")[0] != "nobody"


_NOBODY = """
import json, os, pwd, sys
import undertow, undertow.rpc._conn_zmq, undertow.wire._codec, cloudpickle  # loaded as root
address = sys.argv[1]
user = pwd.getpwnam("nobody")
os.setgroups([]); os.setgid(user.pw_gid); os.setuid(user.pw_uid)
found = {}
try:
    client = undertow.connect(address, timeout=10)
except undertow.UndertowError as exc:
    found = {"connect": type(exc).__name__, "message": str(exc)}
else:
    with client:
        found["json"] = client.compute_value_json(3)
        try:
            client.compute_value_python(abs, -1)
            found["python"] = "served"
        except undertow.UndertowError as exc:
            found["python"] = type(exc).__name__
print(json.dumps(found))
"""


def _as_nobody(address: str, home: Path) -> Any:
    env = dict(os.environ, UNDERTOW_HOME=str(home))
    out = subprocess.run(
        [sys.executable, "-c", _NOBODY, address],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_bare_host_and_port_address_is_this_machine_too(kitchen_sink: str):
    bare = kitchen_sink.removeprefix("tcp://")
    with undertow.connect(bare) as client:
        assert client.compute_value_python(abs, -4).fetch() == 4


def test_a_pickle_function_registered_while_serving_beyond_loopback_is_refused():
    server = undertow.Server(insecure=True)
    server.register("plain", compute_value_json)
    server.start("tcp://0.0.0.0:0")  # insecure: no tokens, on every interface
    try:
        server.register("late_python", compute_value_python)
        with pytest.raises(undertow.ConfigError, match="late_python"):
            server.config({"*_python": {"input_serialization": "pickle"}})
        assert not server.authenticates
        assert sorted(server.describe()) == ["late_python", "plain"]
        assert server.describe()["late_python"]["input_serialization"] == "msgpack"
    finally:
        server.stop()


class _Impostor(http.server.BaseHTTPRequestHandler):
    """An HTTP server of another user that claims to take ours: it cannot prove it."""

    seen: ClassVar[list[str | None]] = []
    user = ""

    def do_GET(self) -> None:
        _Impostor.seen.append(self.headers.get("Authorization"))
        body = json.dumps(
            {"server": "x", "functions": [], "authenticates": True, "user": self.user}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_user_token_is_never_sent_to_a_server_that_cannot_prove_it_holds_it(caplog):
    _Impostor.user = parse_token(user_token() or "")[0]
    _Impostor.seen = []
    impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=impostor.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"http://127.0.0.1:{impostor.server_address[1]}"
        with undertow.connect(address, timeout=10) as client:
            assert client._token is None
        assert _Impostor.seen
        assert all(header is None for header in _Impostor.seen)
        assert "did not prove it holds it" in caplog.text
    finally:
        impostor.shutdown()
        impostor.server_close()
        thread.join(10)
