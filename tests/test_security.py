"""Authentication, authorization, signed messages, safe defaults and size limits, on real
servers and sockets."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

import undertow
from undertow.security import (
    ClientSeal,
    TokenAuth,
    allow,
    authenticated,
    client_key,
    find_client_token,
    new_token,
    parse_token,
)
from undertow.wire import (
    PROTOCOL_VERSION,
    Header,
    Kind,
    decode_error,
    decode_header,
    encode_header,
    payload_of,
)

WAIT = 10.0
ALICE = "alice.Ak3xV9mQ2rT7yU1iO5pL8sD4fG6hJ0zC"
BOB = "bob.Bq8wE2rT6yU0iO4pA7sD1fG5hJ9kL3zX"
MALLORY = "mallory.Mz1xC5vB9nM3qW7eR2tY6uI0oP4aS8dF"


class Touch:
    """Unpickling this creates a file: what an attacker's payload would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def keep(x: Any) -> Any:
    return x


def add(x: int, y: int) -> int:
    return x + y


def transfer(account: str, password: str) -> str:
    return f"moved {account}"


def make_server(**options: Any) -> undertow.Server:
    server = undertow.Server(name="vault", **options)
    server.register("add", add)
    server.register("keep_np", keep)
    server.register("transfer", transfer)
    server.register("admin_reset", lambda: "reset")
    if server.authenticates:
        server.config({"*_np": {"input_serialization": "pickle", "output_serialization": "pickle"}})
    return server


@pytest.fixture
def raw() -> Iterator[Any]:
    """Raw DEALER sockets, as a hostile peer would use."""
    made: list[zmq.Socket[Any]] = []

    def connect(address: str) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        made.append(sock)
        return sock

    yield connect
    for sock in made:
        sock.close()


def answer(sock: zmq.Socket[Any]) -> tuple[Header, list[bytes]]:
    assert sock.poll(int(WAIT * 1000), zmq.POLLIN), "the server did not answer"
    frames = sock.recv_multipart()
    first = frames[0]
    if first[:2] == b"UA":
        first = first[4 + first[3] + 24 + 32 :]
    header = decode_header(first)
    return header, payload_of(header, frames[1:])


def call_frames(call_id: int, name: str, codec: str, body: bytes) -> list[bytes]:
    return [encode_header(Header(Kind.CALL, call_id, name, codec, 0)), body]


# -- 1. authentication ---------------------------------------------------------------------------


def test_tokens_are_strong_and_name_their_user() -> None:
    token = new_token("carol")
    name, secret = parse_token(token)
    assert name == "carol"
    assert len(secret) >= 43  # 256 bits of URL-safe base64
    assert new_token("carol") != token
    with pytest.raises(undertow.ConfigError, match="at least 22"):
        TokenAuth(["carol.short"])
    with pytest.raises(undertow.ConfigError, match="two tokens"):
        TokenAuth([ALICE, ALICE])
    with pytest.raises(undertow.ConfigError, match="letters"):
        new_token("no spaces")


def test_several_users_each_with_a_token_from_a_file(serve, tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the team\n{ALICE}\n\n{BOB}  # bob's\n")
    tokens.chmod(0o600)
    seen: list[str | None] = []

    def who(identity: str | None, name: str, args: Any, kwargs: Any) -> bool:
        seen.append(identity)
        return True

    server = make_server(auth=TokenAuth.from_file(tokens))
    server.config({"add": {"auth": who}})
    address = serve(server)
    for token in (ALICE, BOB):
        with undertow.connect(address, timeout=WAIT, token=token) as client:
            assert client.add(1, 2) == 3
    assert seen == ["alice", "bob"]
    with pytest.raises(undertow.AuthenticationError, match="authentication failed"):
        undertow.connect(address, timeout=WAIT, token=MALLORY)


def test_a_tokens_file_readable_by_others_is_warned_about(tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(ALICE)
    tokens.chmod(0o644)
    with pytest.warns(UserWarning, match="chmod 600"):
        TokenAuth.from_file(tokens)


def test_the_server_reads_its_tokens_file_from_the_environment(tmp_path, monkeypatch) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(ALICE)
    tokens.chmod(0o600)
    monkeypatch.setenv("UNDERTOW_TOKENS", str(tokens))
    assert TokenAuth.from_env().identities == ["alice"]


def test_a_client_finds_its_token_by_argument_environment_or_config_file(
    serve, undertow_home, monkeypatch
) -> None:
    address = serve(make_server(auth=TokenAuth([ALICE, BOB])))
    assert find_client_token(None) is None
    config = undertow_home / "config.toml"
    config.write_text(f'token = "{BOB}"\n')
    config.chmod(0o600)
    assert find_client_token(None) == BOB
    with undertow.connect(address, timeout=WAIT) as client:  # from the config file
        assert client.keep_np([1]) == [1]
    monkeypatch.setenv("UNDERTOW_TOKEN", ALICE)
    assert find_client_token(None) == ALICE  # the environment comes before the file
    assert find_client_token(BOB) == BOB  # and the argument before both
    assert find_client_token(False) is None
    with undertow.connect(address, timeout=WAIT) as client:
        assert client.add(2, 2) == 4


def test_an_unauthenticated_request_is_refused_before_anything_in_it_is_decoded(
    serve, raw, tmp_path
) -> None:
    address = serve(make_server(auth=TokenAuth([ALICE])))
    sock = raw(address)
    target = tmp_path / "pwned"
    exploit = pickle.dumps([[Touch(target)], {}])
    # not even a header: a server that decoded it would drop it as malformed, not answer
    sock.send_multipart([b"\x00garbage", exploit])
    header, frames = answer(sock)
    assert (header.kind, header.call_id) == (Kind.ERROR, 0)
    assert "requires authentication" in decode_error(frames[0]).message
    sock.send_multipart(call_frames(1, "keep_np", "pickle", exploit))
    header, frames = answer(sock)
    assert (header.kind, header.call_id) == (Kind.ERROR, 0)
    assert not target.exists()
    with undertow.connect(address, timeout=WAIT, token=ALICE) as client:
        assert client.add(1, 1) == 2


# -- 2. authorization ----------------------------------------------------------------------------


def test_a_rule_per_glob_allows_or_denies_each_call(serve, caplog) -> None:
    server = make_server(auth=TokenAuth([ALICE, BOB]))

    def no_big_transfers(identity: str | None, name: str, args: Any, kwargs: Any) -> bool:
        return identity == "alice" or kwargs.get("account") != "big"

    server.config({"admin_*": {"auth": allow("alice")}, "transfer": {"auth": no_big_transfers}})
    address = serve(server)
    with undertow.connect(address, timeout=WAIT, token=ALICE) as alice:
        assert alice.admin_reset() == "reset"
        assert alice.transfer(account="big", password="hunter2-secret") == "moved big"
    caplog.set_level(logging.DEBUG)
    with undertow.connect(address, timeout=WAIT, token=BOB) as bob:
        with pytest.raises(undertow.PermissionDenied, match=r"'bob' may not call admin_reset\(\)"):
            bob.admin_reset()
        with pytest.raises(PermissionError, match=r"transfer\(\)"):
            bob.transfer(account="big", password="hunter2-secret")
        assert bob.transfer(account="small", password="x") == "moved small"
        assert bob.add(1, 2) == 3  # no rule: any authenticated caller
    denials = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert len(denials) == 2
    assert any("transfer()" in line and "'bob'" in line for line in denials)
    assert "hunter2-secret" not in caplog.text  # the arguments are never logged


def test_a_rule_that_raises_denies_without_logging_its_message(serve, caplog) -> None:
    server = make_server(auth=TokenAuth([ALICE]))

    def broken(identity: str | None, name: str, args: Any, kwargs: Any) -> bool:
        raise KeyError(f"no such account {args[0]}")

    server.config({"add": {"auth": broken}})
    address = serve(server)
    with undertow.connect(address, timeout=WAIT, token=ALICE) as client:
        with pytest.raises(undertow.PermissionDenied):
            client.add(12345678, 1)
    assert "raised KeyError" in caplog.text
    assert "12345678" not in caplog.text


def test_anonymous_callers_reach_only_what_rules_and_codecs_allow(serve) -> None:
    server = make_server(auth=TokenAuth([ALICE]), allow_anonymous=True)
    server.config(
        {
            "admin_*": {"auth": authenticated},
            "*_np": {"input_serialization": "pickle", "output_serialization": "pickle"},
        }
    )
    address = serve(server)
    with undertow.connect(address, timeout=WAIT, token=False) as anonymous:
        assert anonymous.add(1, 2) == 3
        with pytest.raises(undertow.PermissionDenied, match="an anonymous caller"):
            anonymous.admin_reset()
        with pytest.raises(undertow.AuthenticationError, match="token"):
            anonymous.keep_np([1])
    with undertow.connect(address, timeout=WAIT, token=ALICE) as alice:
        assert alice.admin_reset() == "reset"
        assert alice.keep_np([1]) == [1]


def test_services_take_auth_rules_on_methods_and_by_glob() -> None:
    from undertow.service import Expose
    from undertow.service._host import build_server

    @Expose(config={"drop_*": {"auth": allow("alice")}})
    class Store:
        @Expose(auth=allow("bob"))
        def read(self) -> str:
            return "data"

        @Expose()
        def drop_all(self) -> str:
            return "dropped"

    server = build_server(Store(), auth=TokenAuth([ALICE, BOB]))
    address = server.start()
    try:
        with undertow.connect(address, timeout=WAIT, token=ALICE) as alice:
            assert alice.drop_all() == "dropped"
            with pytest.raises(undertow.PermissionDenied, match=r"read\(\)"):
                alice.read()
        with undertow.connect(address, timeout=WAIT, token=BOB) as bob:
            assert bob.read() == "data"
            with pytest.raises(undertow.PermissionDenied, match=r"drop_all\(\)"):
                bob.drop_all()
    finally:
        server.stop()


# -- 3. integrity --------------------------------------------------------------------------------


def _envelope(token: str, frames: list[bytes], timestamp_ns: int, counter: int) -> list[bytes]:
    """A signed message built from the documented layout, independently of undertow's code."""
    name = token.partition(".")[0].encode()
    head = b"UA" + bytes([1, len(name)]) + name
    head += struct.pack(">Q8sQ", timestamp_ns, os.urandom(8), counter)
    mac = hmac.new(token.encode(), b"Q" + head, hashlib.sha256)
    for frame in frames:
        mac.update(struct.pack(">Q", len(frame)))
        mac.update(frame)
    return [head + mac.digest() + frames[0], *frames[1:]]


def test_the_documented_envelope_is_accepted_and_an_old_one_refused(serve, raw, caplog) -> None:
    address = serve(make_server(auth=TokenAuth([ALICE])))
    sock = raw(address)
    body = msgspec.msgpack.encode([[2, 3], {}])
    fresh = _envelope(ALICE, call_frames(1, "add", "msgpack", body), time.time_ns(), 1)
    sock.send_multipart(fresh)
    header, frames = answer(sock)
    assert (header.kind, header.call_id) == (Kind.RESULT, 1)
    assert msgspec.msgpack.decode(frames[0]) == 5
    stale = _envelope(
        ALICE, call_frames(2, "add", "msgpack", body), time.time_ns() - 120 * 10**9, 1
    )
    sock.send_multipart(stale)
    header, frames = answer(sock)
    assert (header.kind, header.call_id) == (Kind.ERROR, 0)
    assert "authentication failed" in decode_error(frames[0]).message
    assert "timestamp is 120 s away" in caplog.text


def test_clients_refuse_what_a_rogue_server_cannot_sign(tmp_path) -> None:
    """A rogue server (say, one a poisoned registry points to) answers without the token:
    a client holding one refuses every unsigned answer; a client without one refuses to
    unpickle."""
    router: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    target = tmp_path / "pwned"
    functions = [{"name": "f", "output": "pickle"}]  # it does not even say it needs auth
    stop = threading.Event()

    def rogue() -> None:
        while not stop.is_set():
            if not router.poll(50):
                continue
            peer, first, *_ = router.recv_multipart()
            header = decode_header(first[first.index(b"UT" + bytes([PROTOCOL_VERSION])) :])
            if header.name == "_describe":
                body = msgspec.msgpack.encode({"server": "rogue", "functions": functions})
                reply = [encode_header(Header(Kind.RESULT, header.call_id, codec="msgpack")), body]
            else:
                exploit = pickle.dumps(Touch(target))
                reply = [
                    encode_header(Header(Kind.RESULT, header.call_id, codec="pickle")),
                    exploit,
                ]
            router.send_multipart([peer, *reply])

    thread = threading.Thread(target=rogue, daemon=True)
    thread.start()
    address = f"tcp://127.0.0.1:{port}"
    try:
        with pytest.raises(undertow.AuthenticationError, match="without a signature"):
            undertow.connect(address, timeout=WAIT, token=ALICE)
        with undertow.connect(address, timeout=WAIT, token=False) as client:
            with pytest.raises(undertow.AuthenticationError, match="unsigned pickle"):
                client.f()
    finally:
        stop.set()
        thread.join(WAIT)
        router.close()
    assert not target.exists()


def test_curve_encrypts_and_only_the_key_holder_can_serve(serve, tmp_path) -> None:
    from undertow.transport import keygen

    public, secret = keygen(tmp_path, "vault")
    assert oct(secret.stat().st_mode)[-3:] == "600"
    server = make_server(auth=TokenAuth([ALICE]), curve_secret=secret)
    address = serve(server)
    assert server.curve_public_key is not None
    with undertow.connect(address, timeout=WAIT, token=ALICE, curve_server_key=public) as client:
        assert client.add(20, 22) == 42
    _, other = keygen(tmp_path, "impostor")
    with pytest.raises(undertow.RPCTimeout):  # the handshake never completes
        undertow.connect(address, timeout=0.5, token=ALICE, curve_server_key=other)
    with pytest.raises(undertow.RPCTimeout):  # plain text to a CURVE server: no answer
        undertow.connect(address, timeout=0.5, token=ALICE)
    with pytest.raises(undertow.ConfigError, match="keygen"):
        undertow.connect(address, token=ALICE, curve_server_key=tmp_path / "missing.key")


# -- 5. safe defaults ----------------------------------------------------------------------------


def test_serving_beyond_loopback_needs_auth_or_an_explicit_flag(caplog) -> None:
    with pytest.raises(undertow.ConfigError, match="insecure=True"):
        make_server().start("tcp://0.0.0.0:0")
    loud = make_server(insecure=True)
    loud.start("tcp://0.0.0.0:0")
    loud.stop()
    assert "WITHOUT authentication" in caplog.text
    caplog.clear()
    safe = make_server(auth=TokenAuth([ALICE]))
    safe.start("tcp://0.0.0.0:0")
    safe.stop()
    assert "WITHOUT" not in caplog.text


def test_secrets_never_appear_in_reprs_or_logs(serve, caplog, raw) -> None:
    caplog.set_level(logging.DEBUG)
    auth = TokenAuth([ALICE, BOB])
    server = make_server(auth=auth)
    server.config({"admin_*": {"auth": allow("alice")}})
    address = serve(server)
    with undertow.connect(address, timeout=WAIT, token=BOB) as client:
        assert client.add(1, 2) == 3
        with pytest.raises(undertow.PermissionDenied):
            client.admin_reset()
        texts = [repr(auth), repr(server), repr(client), repr(client_key(BOB))]
        texts.append(repr(ClientSeal(client_key(BOB))))
    with pytest.raises(undertow.AuthenticationError):
        undertow.connect(address, timeout=WAIT, token="bob.WrongWrongWrongWrongWrongWrong")
    texts.append(caplog.text)
    everything = "\n".join(texts)
    assert "'bob'" in everything  # identities may be named...
    for token in (ALICE, BOB):
        assert parse_token(token)[1] not in everything  # ...secrets never


# -- 6. hostile input ----------------------------------------------------------------------------


def test_a_call_over_the_size_limit_fails_in_the_client_and_the_server_serves_on(
    serve, raw
) -> None:
    limit = 1 << 20
    address = serve(make_server(auth=TokenAuth([ALICE]), max_message_size=limit))
    with undertow.connect(address, timeout=WAIT, token=ALICE) as client:
        with pytest.raises(undertow.MessageTooLarge, match="limit of 1,048,576"):
            client.keep_np(b"x" * (2 * limit))
        assert client.add(1, 2) == 3
    # a peer that ignores the limit: several frames that add up to more are refused...
    sock = raw(address)
    sock.send_multipart([*call_frames(1, "add", "msgpack", b"\x90"), b"y" * (limit // 2)] * 2)
    header, frames = answer(sock)
    assert (header.kind, header.call_id) == (Kind.ERROR, 0)
    assert decode_error(frames[0]).code == "too_large"
    # ...and one frame over it makes ZeroMQ drop the peer, while others are served
    sock.send_multipart([b"z" * (2 * limit)])
    with undertow.connect(address, timeout=WAIT, token=ALICE) as client:
        assert client.add(2, 2) == 4


def test_a_silent_or_slow_peer_does_not_hold_up_other_clients(serve) -> None:
    address = serve(make_server(auth=TokenAuth([ALICE])))
    port = int(address.rsplit(":", 1)[1])
    silent = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    slow = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    # a valid ZeroMQ 3.1 greeting (64 bytes), of which the slow peer sends a byte per call
    greeting = b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"NULL".ljust(20, b"\x00") + bytes(32)
    try:
        with undertow.connect(address, timeout=WAIT, token=ALICE) as client:
            started = time.monotonic()
            for i in range(50):
                slow.sendall(greeting[i : i + 1])
                assert client.add(i, 1) == i + 1
            assert time.monotonic() - started < WAIT / 2
    finally:
        silent.close()
        slow.close()


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_flood_of_bad_messages_neither_crashes_the_server_nor_grows_its_memory(
    serve, raw
) -> None:
    address = serve(make_server(auth=TokenAuth([ALICE]), allow_anonymous=True))
    sock = raw(address)
    bad = [
        [b"UA\x01\x05alice" + b"\x00" * 80],  # a signature envelope that does not verify
        [b"UT" + bytes([PROTOCOL_VERSION]) + b"\xc1"],  # a header that is not msgpack
        [b"UT\x09" + b"\x00" * 10],  # a protocol version from the future
        [encode_header(Header(Kind.CALL, 5, "add", "msgpack", 0))[:-3]],  # truncated
        [b"\x00" * 64, b"extra"],
    ]

    def flood(rounds: int) -> None:
        for _ in range(rounds):
            for frames in bad:
                sock.send_multipart(frames)
        with undertow.connect(address, timeout=WAIT, token=ALICE) as client:
            assert client.add(1, 2) == 3  # it has read all of the flood by now

    flood(2000)  # warm up: caches, allocator arenas
    before = _rss()
    flood(4000)
    assert _rss() - before < 16 * 2**20


# -- 4. safe deserialization: arrays without pickle ---------------------------------------------


def test_arrays_travel_to_callers_without_a_token_through_the_numpy_codec(serve) -> None:
    import numpy as np

    server = make_server(auth=TokenAuth([ALICE]), allow_anonymous=True)
    server.register("scale", lambda a, k: a * k)
    server.config({"scale": {"input_serialization": "numpy", "output_serialization": "numpy"}})
    address = serve(server)
    array = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)
    with undertow.connect(address, timeout=WAIT, token=False) as anonymous:
        doubled = anonymous.scale(array, 2)
    assert doubled.shape == (1000, 1000)
    assert (doubled == array * 2).all()


def test_a_rule_on_a_pickle_function_is_asked_before_anything_is_unpickled(serve, raw, tmp_path):
    server = make_server(auth=TokenAuth([ALICE, BOB]))
    server.register("admin_np", keep)
    server.config({"admin_np": {"input_serialization": "pickle", "auth": allow("alice")}})
    address = serve(server)
    target = tmp_path / "pwned"
    sock = raw(address)
    exploit = pickle.dumps([[Touch(target)], {}])
    sock.send_multipart(
        ClientSeal(client_key(BOB)).seal(call_frames(1, "admin_np", "pickle", exploit))
    )
    header, frames = answer(sock)
    assert (header.kind, header.call_id) == (Kind.ERROR, 1)
    assert decode_error(frames[0]).code == "denied"
    assert not target.exists()
    with undertow.connect(address, timeout=WAIT, token=ALICE) as alice:
        assert alice.admin_np([1, 2]) == [1, 2]


def test_replies_still_verify_after_the_server_forgot_an_idle_session() -> None:
    from undertow.security import ServerSeal

    server, client = ServerSeal(TokenAuth([ALICE])), ClientSeal(client_key(ALICE))
    frames = [encode_header(Header(Kind.CALL, 1, "f", "msgpack", 0))]
    for _ in range(2):
        _, reply, _ = server.open(memoryview(client.seal(frames)[0]), [])
        for _ in range(3):
            answer = reply([encode_header(Header(Kind.RESULT, 1))])
            client.open(memoryview(answer[0]), [])  # raises if taken for a replay
        server._peers.clear()  # what the sweep does to a session idle for twice the window


def test_the_replay_window_takes_a_huge_jump_in_constant_space() -> None:
    from undertow.security import ReplayWindow

    window = ReplayWindow()
    assert window.accept(5)
    started = time.monotonic()
    assert window.accept(2**62)
    assert time.monotonic() - started < 0.1
    assert window.bits == 1
    assert not window.accept(2**62)
    assert not window.accept(5)  # far behind the newest: refused


def test_a_message_of_too_many_frames_is_refused(serve, raw) -> None:
    from undertow.rpc import MAX_FRAMES

    address = serve(make_server(auth=TokenAuth([ALICE]), allow_anonymous=True))
    sock = raw(address)
    sock.send_multipart([*call_frames(1, "add", "msgpack", b"\x90"), *[b""] * MAX_FRAMES])
    header, frames = answer(sock)
    assert (header.kind, header.call_id) == (Kind.ERROR, 0)
    assert decode_error(frames[0]).code == "too_large"
    with undertow.connect(address, timeout=WAIT, token=ALICE) as client:
        assert client.add(1, 1) == 2


def test_undertow_keygen_writes_a_pair_with_a_private_secret(tmp_path) -> None:
    import subprocess
    import sys

    from undertow.transport import load_public, load_secret

    done = subprocess.run(
        [sys.executable, "-m", "undertow.cli", "keygen", "svc", "--dir", str(tmp_path / "keys")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    public, secret = tmp_path / "keys" / "svc.key", tmp_path / "keys" / "svc.key_secret"
    assert oct(secret.stat().st_mode)[-3:] == "600"
    assert load_secret(secret)[0] == load_public(public)  # the halves of one pair
    assert f"public key: {load_public(public)}" in done.stdout
