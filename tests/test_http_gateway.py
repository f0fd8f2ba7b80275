"""A call over HTTP passes the checks of a call over ZeroMQ, though its arguments reach the
function decoded once and its result leaves as a Python value, encoded once."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

import undertow
from undertow.data import _dataserver
from undertow.rpc import _gateway
from undertow.security import TokenAuth
from undertow.wire import MsgpackCodec

WAIT = 10.0
ALICE = "alice.Ak3xV9mQ2rT7yU1iO5pL8sD4fG6hJ0zC"
MSGPACK = "application/msgpack"


class Touch:
    """Unpickling it creates a file: proof that a pickle was opened."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (str(self.path), "w"))


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Any]:
    """Start a server with HTTP (port 0); an httpx client of it; both closed afterwards."""
    opened: list[tuple[undertow.Server, httpx.Client]] = []

    def start(server: undertow.Server) -> httpx.Client:
        server.start(http_port=0)
        client = httpx.Client(base_url=server.http_address, timeout=WAIT)
        opened.append((server, client))
        return client

    yield start
    for server, client in opened:
        client.close()
        server.stop()


@pytest.mark.parametrize("auth", [{}, {"auth": TokenAuth([ALICE]), "allow_anonymous": True}])
def test_an_anonymous_pickle_to_a_data_function_is_refused_with_401(web, tmp_path, auth) -> None:
    server = undertow.Server(name="data", data_dir=tmp_path / "data", **auth)
    client = web(server)
    evil = pickle.dumps(([Touch(tmp_path / "pwned"), []], {}))
    for name in ("_data_fetch", "_data_put"):
        answer = client.post(
            f"/call/{name}", content=evil, headers={"Content-Type": "application/python-pickle"}
        )
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "auth"
        assert answer.json()["error"]["type"].endswith(".AuthenticationError")
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert not (tmp_path / "pwned").exists()


def test_a_function_whose_codec_carries_no_arrays_cannot_return_one_over_http_either(
    web, tmp_path
) -> None:
    server = undertow.Server(name="arrays", data_dir=tmp_path / "data")
    server.register("plain", lambda: np.arange(3))
    server.register("as_numpy", lambda: np.arange(3))
    server.register("stream", lambda: (np.arange(i) for i in range(2)))
    server.config({"as_numpy": {"output_serialization": "numpy"}})
    client = web(server)
    with undertow.connect(server.address, timeout=WAIT) as zmq:
        with pytest.raises(undertow.SerializationError):
            zmq.plain()
    for accept in ("application/json", MSGPACK):
        answer = client.post("/call/plain", json={}, headers={"Accept": accept})
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "serialization"
        assert "output_serialization" in answer.json()["error"]["message"]
    streamed = client.post("/call/stream", json={}, headers={"Accept": "application/x-ndjson"})
    assert json.loads(streamed.text.splitlines()[0])["error"]["code"] == "serialization"
    # a codec that carries arrays: they come as lists
    assert client.post("/call/as_numpy", json={}).json() == [0, 1, 2]


def test_arguments_and_results_are_what_the_functions_codec_makes_of_them(web, tmp_path) -> None:
    server = undertow.Server(name="codecs", data_dir=tmp_path / "data")
    server.register("echo", lambda value: value)
    server.register("echo_json", lambda value: value)
    server.register("type_json", lambda value: type(value).__name__)
    server.config({"*_json": {"input_serialization": "json", "output_serialization": "json"}})
    client = web(server)
    msgpack = {"Content-Type": MSGPACK, "Accept": MSGPACK}

    def call(name: str, value: Any) -> Any:
        body = msgspec.msgpack.encode({"args": [value]})
        answer = client.post(f"/call/{name}", content=body, headers=msgpack)
        assert answer.status_code == 200, answer.text
        return msgspec.msgpack.decode(answer.content)

    with undertow.connect(server.address, timeout=WAIT) as zmq:
        # bytes through a json function become base64 text, over ZeroMQ and HTTP alike
        assert call("type_json", b"\x00\x01") == zmq.type_json(b"\x00\x01") == "str"
        assert call("echo_json", {1: b"x"}) == zmq.echo_json({1: b"x"}) == {"1": "eA=="}
        # a msgpack function keeps them
        assert call("echo", {1: b"x"}) == zmq.echo({1: b"x"}) == {1: b"x"}
    # a number msgpack cannot carry is refused as before, not handed to the function
    answer = client.post(
        "/call/echo",
        content=b'{"args": [%d]}' % 2**70,
        headers=msgpack | {"Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_request"
    assert client.post("/call/echo", json={"args": [2**63 - 1]}).json() == 2**63 - 1


def test_a_pointer_spelled_with_json_escapes_is_still_resolved(web, tmp_path) -> None:
    server = undertow.Server(name="escapes", data_dir=tmp_path / "data")
    server.register("make", lambda n: np.arange(n, dtype=np.float64))
    server.register("total", lambda a: float(np.asarray(a).sum()))
    server.config({"make": {"return_pointer": True}})
    client = web(server)
    form = client.post("/call/make", json={"args": [100]}).json()
    assert form["type"] == "undertow.pointer"
    body = json.dumps({"args": [form]}).replace("undertow.pointer", "undertow\\u002epointer")
    answer = client.post(
        "/call/total", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert answer.json() == float(np.arange(100).sum())


class _Untouchable(MsgpackCodec):
    """A msgpack codec that fails the test when anything is encoded or decoded with it."""

    def encode(self, value: Any) -> Any:
        raise AssertionError(f"encoded on the way: {value!r}")

    def decode(self, frames: Any) -> Any:
        raise AssertionError("decoded on the way")


def test_data_functions_over_http_take_and_give_values_without_encoding_them(
    web, tmp_path, monkeypatch
) -> None:
    bob = "bob.Bq8wE2rT6yU0iO4pA7sD1fG5hJ9kL3zX"
    server = undertow.Server(
        name="values", data_dir=tmp_path / "data", auth=TokenAuth([ALICE, bob])
    )
    server.register("make", lambda n: np.arange(n, dtype=np.float64))
    server.config({"make": {"return_pointer": True}})
    client = web(server)
    untouchable = _Untouchable()

    def no_codec(name: str) -> Any:
        raise AssertionError(f"the {name} codec was asked for")

    # every codec the data functions and the gateway could encode or decode with
    monkeypatch.setattr(_dataserver, "_NUMPY", untouchable)
    monkeypatch.setattr(_dataserver, "resolve_codec", no_codec)
    monkeypatch.setattr(_gateway, "_MSGPACK", untouchable)
    monkeypatch.setattr(_gateway, "resolve_codec", no_codec)
    alice = {"Authorization": f"Bearer {ALICE}"}

    def call(name: str, *args: Any, token: str = ALICE) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        answer = client.post(f"/call/_data_{name}", json={"args": list(args)}, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    form = call("put", [1, 2, 3], ["numbers"])
    key, secret = form["key"], form["secret_key"]
    assert call("fetch", key, secret) == [1, 2, 3]
    assert call("look", key, secret, "getitem", "", 1, [], {}, False) == [2, False]
    assert call("look", key, secret, "len", "", None, [], {}, False) == [3, False]
    kept = call("look", key, secret, "getitem", "", {"slice": [0, 2, None]}, [], {}, True)
    assert call("fetch", kept["key"], kept["secret_key"]) == [1, 2]
    # the owner's rules still hold: bob may use it once it is shared with him
    denied = client.post(
        "/call/_data_fetch", json=[key, secret], headers={"Authorization": f"Bearer {bob}"}
    )
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "denied")
    assert call("share", key, secret, ["bob"]) is None
    assert call("fetch", key, secret, token=bob) == [1, 2, 3]
    secret_header = {"X-Undertow-Secret": secret, "Accept": "application/json"}
    assert client.get(f"/data/{key}", headers=alice | secret_header).json() == [1, 2, 3]
    assert call("delete", key, secret) is True
    assert call("delete", key, secret) is False
    # an array kept by a function still comes down as .npy
    array = client.post("/call/make", json=[5], headers=alice).json()
    npy = client.get(
        f"/data/{array['key']}", headers=alice | {"X-Undertow-Secret": array["secret_key"]}
    )
    assert npy.headers["content-type"] == "application/x-npy"
    assert np.array_equal(np.load(io.BytesIO(npy.content)), np.arange(5, dtype=np.float64))
