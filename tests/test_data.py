"""Remote data on real processes: results left where they were computed, used through
pointers (sliced, passed on, fetched), with their secrets and owners checked."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import undertow
from undertow.errors import DataNotFound, PermissionDenied, SerializationError
from undertow.security import new_token

from ._processes import ChildServer, free_port
from ._relay import CountingRelay

WAIT = 30.0

NODE = """
    import sys
    import numpy as np
    import undertow

    args = dict(a.split("=", 1) for a in sys.argv[1:])
    server = undertow.Server(
        args.get("name", "node"),
        data_dir=args["data"],
        memory_limit=int(args.get("memory", 2**30)),
        token=args.get("token"),
    )
    MADE = []

    @server.register
    def make(rows: int, columns: int = 4):
        "A rows x columns array of 0, 1, 2, ..."
        MADE.append(np.arange(rows * columns, dtype=np.float64).reshape(rows, columns))
        return MADE[-1]

    @server.register
    def total(a) -> float:
        return float(np.asarray(a).sum())

    @server.register
    def made_here(a) -> bool:
        "True when the argument is the very object make() left here (not a copy)."
        return a is MADE[-1]

    @server.register
    def kind(a) -> str:
        return type(a).__name__

    @server.register
    def squares(n: int):
        for i in range(n):
            yield np.full(3, i * i)

    server.config({"make": {"return_pointer": True}})
    server.serve_forever(port=int(args.get("port", 0)), http_port=0 if "http" in args else None)
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ChildServer]:
    server = ChildServer(NODE, tmp_path, (f"data={tmp_path / 'a'}", "name=a"))
    yield server
    server.stop()


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_a_result_left_on_the_server_comes_back_as_a_pointer_with_a_json_form(node) -> None:
    with undertow.connect(node.address, timeout=WAIT) as client:
        ptr = client.make(1000)
        assert isinstance(ptr, undertow.Pointer)
        form = ptr.to_json()
        assert form == {
            "type": "undertow.pointer",
            "key": ptr.key,
            "host": "127.0.0.1",
            "protocol": "zmq",
            "port": _port(node.address),
            "path": "",
            "secret_key": form["secret_key"],
            "size": 32_000,
            "type_name": "numpy.ndarray",
        }
        assert ptr.nbytes == 32_000
        assert ptr.type_name == "numpy.ndarray"
        assert ptr.address == node.address
        assert form["secret_key"] not in repr(ptr)
        # the JSON form is all another program needs
        again = undertow.Pointer(json.loads(json.dumps(form)))
        assert again == ptr
        assert again[999].tolist() == [3996.0, 3997.0, 3998.0, 3999.0]
        # per call, for a function that answers with its value otherwise
        total = client.total.options(return_pointer=True)(ptr)
        assert isinstance(total, undertow.Pointer)
        assert total.type_name == "float"
        assert total.fetch() == float(np.arange(4000).sum())
        # a generator's items each become a pointer
        items = list(client.squares.options(return_pointer=True)(3))
        assert [p.fetch().tolist() for p in items] == [[0, 0, 0], [1, 1, 1], [4, 4, 4]]


def test_bad_pointer_forms_are_refused_naming_the_field() -> None:
    with pytest.raises(undertow.ConfigError, match="not a pointer"):
        undertow.Pointer({"type": "something else"})
    form = {
        "type": "undertow.pointer",
        "key": "k",
        "host": "h",
        "protocol": "zmq",
        "port": "80",
        "path": "",
        "secret_key": "s",
        "size": 1,
        "type_name": "int",
    }
    with pytest.raises(undertow.ConfigError, match="'port' must be a int"):
        undertow.Pointer(form)
    with pytest.raises(undertow.ConfigError, match="protocol 'ftp'"):
        undertow.Pointer({**form, "port": 80, "protocol": "ftp"})


def test_a_pointer_passed_to_the_same_node_is_used_in_place(node) -> None:
    with undertow.connect(node.address, timeout=WAIT) as client:
        ptr = client.make(100)
        assert client.made_here(ptr)  # the object itself, not a copy
        assert client.made_here(a=ptr)
        assert client.total([ptr, ptr]) == 2 * float(np.arange(400).sum())  # inside a list too
        assert client.kind(ptr.to_json()) == "ndarray"  # the JSON form works as well


def test_a_pointer_passed_to_another_node_is_fetched_from_the_owner_not_the_client(
    tmp_path: Path,
) -> None:
    owner = ChildServer(NODE, tmp_path, (f"data={tmp_path / 'a'}", "name=a"))
    other = ChildServer(NODE, tmp_path, (f"data={tmp_path / 'b'}", "name=b"))
    relays = [CountingRelay(("127.0.0.1", _port(s.address))) for s in (owner, other)]
    try:
        with (
            undertow.connect(relays[0].address, timeout=WAIT) as to_owner,
            undertow.connect(relays[1].address, timeout=WAIT) as to_other,
        ):
            ptr = to_owner.make(2_000_000)  # 64 MB, left on the owner
            assert ptr.address == owner.address  # the owner's own address, not the relay's
            before = [r.received() for r in relays]
            assert to_other.total(ptr) == float(np.arange(8_000_000, dtype=np.float64).sum())
            assert to_other.kind(ptr) == "ndarray"
            received = sum(r.received() for r in relays) - sum(before)
            assert received < 64_000, f"the client received {received:,} bytes"
            assert sum(r.to_server for r in relays) < 64_000  # and sent none of it either
    finally:
        for relay in relays:
            relay.close()
        owner.stop()
        other.stop()


def test_looking_at_a_remote_value_moves_only_the_answer(node) -> None:
    relay = CountingRelay(("127.0.0.1", _port(node.address)))
    try:
        with undertow.connect(relay.address, timeout=WAIT) as client:
            made = client.make(2_000_000)
            ptr = undertow.Pointer({**made.to_json(), "port": relay.port})
            start = relay.received()
            assert ptr[0:10].tolist() == np.arange(40.0).reshape(10, 4).tolist()
            assert ptr[-1, 2] == 7_999_998.0
            assert ptr.keep[..., 0][:3].tolist() == [0.0, 4.0, 8.0]
            assert ptr.shape == (2_000_000, 4)
            assert len(ptr) == 2_000_000
            assert ptr.dtype == np.dtype("float64")
            assert ptr.attr("ndim") == 2
            assert (
                ptr.call("sum", axis=0).tolist()
                == np.arange(8_000_000.0).reshape(-1, 4).sum(axis=0).tolist()
            )
            assert relay.received() - start < 64_000  # the 64 MB array never travelled
            head = ptr.keep[0:10]  # stays there too
            assert isinstance(head, undertow.Pointer)
            assert head.nbytes == 320
            assert ptr.keep.T.attr("shape") == (4, 2_000_000)
            mean = ptr.call("mean", keep=True)
            assert mean.fetch() == pytest.approx(3_999_999.5)
            assert head.fetch().shape == (10, 4)
            with pytest.raises(TypeError, match="fetch"):
                list(ptr)
    finally:
        relay.close()


def test_pointers_over_http_for_python_and_curl(tmp_path: Path) -> None:
    server = ChildServer(NODE, tmp_path, (f"data={tmp_path / 'a'}", "http=1"), lines=2)
    try:
        with undertow.connect(server.addresses[1], timeout=WAIT) as client:
            ptr = client.make(100_000)
        form = ptr.to_json()
        assert (form["protocol"], form["path"]) == ("http", f"/data/{ptr.key}")
        assert ptr.address == server.addresses[1]
        value = ptr.fetch()  # read from its .npy form into place
        assert value.shape == (100_000, 4)
        assert value[-1, -1] == 399_999.0
        assert ptr.shape == (100_000, 4)
        assert ptr[1] == [4.0, 5.0, 6.0, 7.0]  # JSON answers: arrays as lists
        url = server.addresses[1] + form["path"]
        secret = f"X-Undertow-Secret: {form['secret_key']}"
        npy = tmp_path / "a.npy"
        fetched = subprocess.run(["curl", "-sf", "-H", secret, "-o", str(npy), url], timeout=WAIT)
        assert fetched.returncode == 0
        assert np.array_equal(np.load(npy), value)
        wrong = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "X-Undertow-Secret: x",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert wrong.stdout == "403"
        # curl passes the pointer on, as JSON, to a function of the same server
        body = json.dumps({"args": [form]})
        total = subprocess.run(
            [
                "curl",
                "-sf",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                server.addresses[1] + "/call/total",
            ],
            capture_output=True,
            timeout=WAIT,
        )
        assert json.loads(total.stdout) == float(np.arange(400_000).sum())
        # and to a ZeroMQ caller's function: the pointer works whatever brought it
        with undertow.connect(server.address, timeout=WAIT) as client:
            assert client.made_here(ptr)
    finally:
        server.stop()


def test_fetch_brings_the_value_from_the_owner(node) -> None:
    with undertow.connect(node.address, timeout=WAIT) as client:
        ptr = client.make(250_000)
    # a fresh process could do the same with only the JSON form
    value = undertow.Pointer(ptr.to_json()).fetch()
    assert value.shape == (250_000, 4)
    assert value[-1, -1] == 999_999.0


def test_put_uploads_a_value_and_returns_a_pointer(node) -> None:
    with undertow.connect(node.address, timeout=WAIT) as client:
        array = np.linspace(0, 1, 1000)
        ptr = undertow.put(array, to=client, tags=["inputs"])
        assert ptr.type_name == "numpy.ndarray"
        assert ptr.nbytes == 8000
        assert client.total(ptr) == pytest.approx(500.0)
        record = undertow.put({"a": [1, 2]}, to=node.address)
        assert record.fetch() == {"a": [1, 2]}
        with pytest.raises(SerializationError, match="pickle"):
            undertow.put({1, 2, 3}, to=client)  # a set needs pickle, which needs a token
        with pytest.raises(undertow.ConfigError, match="tags"):
            undertow.put(1, to=client, tags=[""])


def test_answers_that_need_pickle_stay_remote_for_anonymous_callers(node) -> None:
    with undertow.connect(node.address, timeout=WAIT) as client:
        ptr = client.make(10)
        with pytest.raises(SerializationError, match="keep=True"):
            ptr.call("astype", "O")  # an array of Python objects travels only as pickle
        kept = ptr.call("astype", "O", keep=True)
        assert kept.type_name == "numpy.ndarray"
        assert kept.call("sum") == float(np.arange(40).sum())


def test_only_public_attributes_and_methods_are_reachable(node) -> None:
    with undertow.connect(node.address, timeout=WAIT) as client:
        ptr = client.make(10)
        with pytest.raises(PermissionDenied, match="public"):
            ptr.call("__reduce__")
        with pytest.raises(PermissionDenied, match="public"):
            ptr.attr("__class__")
        with pytest.raises(AttributeError):
            ptr._secret  # noqa: B018 - private names are never asked remotely


def test_a_pointer_is_a_capability_checked_with_its_secret(node) -> None:
    with undertow.connect(node.address, timeout=WAIT) as client:
        ptr = client.make(10)
        forged = undertow.Pointer({**ptr.to_json(), "secret_key": "guessed"})
        with pytest.raises(PermissionDenied, match=ptr.key):
            forged.fetch()
        with pytest.raises(PermissionDenied):
            client.total(forged)  # passing it on is checked the same way
        with pytest.raises(PermissionDenied):
            forged.delete()
        assert ptr.delete()
        assert not ptr.delete()
        with pytest.raises(DataNotFound, match=rf"{ptr.key}.*'a' at {node.address}") as info:
            ptr[0]
        assert info.value.key == ptr.key
        with pytest.raises(DataNotFound, match=ptr.key):
            client.total(ptr)


def test_with_authentication_only_the_owner_and_whom_it_shares_with_may_use_a_value(
    tmp_path: Path,
) -> None:
    alice, bob = new_token("alice"), new_token("bob")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{alice}\n{bob}\n")
    tokens.chmod(0o600)
    script = NODE.replace(
        'token=args.get("token")', 'auth=undertow.security.TokenAuth.from_file(args["tokens"])'
    )
    server = ChildServer(script, tmp_path, (f"data={tmp_path / 'a'}", f"tokens={tokens}"))
    try:
        with (
            undertow.connect(server.address, timeout=WAIT, token=alice) as as_alice,
            undertow.connect(server.address, timeout=WAIT, token=bob) as as_bob,
        ):
            ptr = as_alice.make(10)
            theirs = undertow.Pointer(ptr.to_json(), via=as_bob)
            with pytest.raises(PermissionDenied, match=r"'bob' may not use .* of 'alice'.*share"):
                theirs.fetch()
            with pytest.raises(PermissionDenied, match="'bob'"):
                as_bob.total(ptr)
            ptr.share("bob")
            assert theirs[1].tolist() == [4.0, 5.0, 6.0, 7.0]
            assert as_bob.total(ptr) == float(np.arange(40).sum())
            with pytest.raises(PermissionDenied, match="change"):
                theirs.delete()  # only the owner deletes
            # pickle travels between authenticated peers: a set comes back as one
            assert undertow.put({1, 2}, to=as_alice).fetch() == {1, 2}
    finally:
        server.stop()


def test_spilled_values_survive_a_restart_of_their_server(tmp_path: Path) -> None:
    args = (f"data={tmp_path / 'a'}", "memory=0", f"port={free_port()}")
    first = ChildServer(NODE, tmp_path, args)
    try:
        with undertow.connect(first.address, timeout=WAIT) as client:
            ptr = client.make(1000)
    finally:
        first.stop(signal.SIGKILL)  # not even a clean stop
    again = ChildServer(NODE, tmp_path, args)
    try:
        assert ptr[10].tolist() == [40.0, 41.0, 42.0, 43.0]
        with undertow.connect(again.address, timeout=WAIT) as client:
            assert client.total(ptr) == float(np.arange(4000).sum())
    finally:
        again.stop()
    files = sorted(p.suffix for p in (tmp_path / "a").glob("*/*"))
    assert files == [".json", ".npy"]
