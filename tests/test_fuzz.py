"""Fuzz tests of everything that reads bytes from a peer: the server's dispatch (size check,
signature envelope, header, batch, arguments), the client's delivery, and the envelope parsers.

CI runs a fixed budget of examples per test. A longer run (see docs/security.md)::

    UNDERTOW_FUZZ_EXAMPLES=100000 python -m pytest tests/test_fuzz.py -p no:randomly --timeout 0
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import undertow
from undertow.rpc._calls import Call, deliver_all
from undertow.security import ClientSeal, ServerSeal, TokenAuth, client_key
from undertow.wire import MAGIC, PROTOCOL_VERSION, Header, Kind, encode_header, pack_batch

TOKEN = "fuzz.Fz3xV9mQ2rT7yU1iO5pL8sD4fG6hJ0zC"
BUDGET = settings(
    max_examples=int(os.environ.get("UNDERTOW_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Frame(bytes):
    """What the server and client read from ZeroMQ: a frame's memoryview as ``.buffer``."""

    @property
    def buffer(self) -> memoryview:
        return memoryview(self)


def echo(*args: Any, **kwargs: Any) -> Any:
    return [list(args), kwargs]


def make_server() -> undertow.Server:
    server = undertow.Server(
        name="fuzz", auth=TokenAuth([TOKEN]), allow_anonymous=True, max_message_size=65536
    )
    server.register("echo", echo)
    server.register("gen", lambda n=3: iter(range(min(int(n), 5))))
    server.config({"echo_np": {"input_serialization": "pickle"}})
    server.register("echo_np", echo)
    return server


SERVER = make_server()
SEAL = ClientSeal(client_key(TOKEN))


def dispatch(frames: list[bytes]) -> None:
    """Feed one message to the server as its receive loop does, and run any job it makes."""
    received: list[Any] = [Frame(f) for f in frames]
    job = SERVER._core._dispatch(b"peer", received)
    if job is not None:
        job[1]()
    SERVER._core._active.clear()


prefix = st.sampled_from(
    [b"", MAGIC, MAGIC + bytes([PROTOCOL_VERSION]), b"UA\x01", b"UA\x01\x04fuzz"]
)
raw_frames = st.lists(st.binary(max_size=200), min_size=1, max_size=4)
names = st.sampled_from(["echo", "echo_np", "gen", "_describe", "missing", ""])
codecs = st.sampled_from(["msgpack", "json", "numpy", "pickle", "", "nope"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
plain_values = (
    scalars
    | st.lists(scalars, max_size=4)
    | st.dictionaries(st.text(max_size=5), scalars, max_size=4)
    | st.tuples(st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars))
)
headers = st.builds(
    Header,
    kind=st.sampled_from(list(Kind)),
    call_id=st.integers(min_value=0, max_value=2**64 - 1),
    name=names,
    codec=codecs,
    nbuffers=st.integers(min_value=0, max_value=4),
    timeout=st.none() | st.floats(min_value=0.001, max_value=5),
    flags=st.integers(min_value=0, max_value=3),
    body=st.binary(max_size=64),
)


@BUDGET
@given(prefix, raw_frames)
def test_the_server_survives_any_bytes(start: bytes, frames: list[bytes]) -> None:
    frames[0] = start + frames[0]
    dispatch(frames)


@BUDGET
@given(headers, st.one_of(plain_values, st.binary(max_size=100)), st.booleans(), st.booleans())
def test_the_server_survives_any_header_and_body(
    header: Header, value: Any, as_msgpack: bool, sign: bool
) -> None:
    body = msgspec.msgpack.encode(value) if as_msgpack else value
    frames = [encode_header(header), body if isinstance(body, bytes) else b""]
    dispatch(SEAL.seal(frames) if sign else frames)


@BUDGET
@given(st.lists(st.binary(max_size=64), max_size=5), st.booleans())
def test_the_client_survives_any_message(frames: list[bytes], batch: bool) -> None:
    calls = {1: Call(1, "f", None)}
    if batch:
        frames = [pack_batch(frames)]
    if not frames:
        frames = [b""]
    deliver_all(calls, [Frame(f) for f in frames], "fuzz", SEAL)
    deliver_all(calls, [Frame(f) for f in frames], "fuzz", None)


@BUDGET
@given(st.binary(max_size=200), st.lists(st.binary(max_size=50), max_size=3))
def test_envelope_parsers_raise_only_authentication_errors(
    frame0: bytes, rest: list[bytes]
) -> None:
    server = ServerSeal(TokenAuth([TOKEN]))
    for data in (frame0, b"UA\x01" + frame0, b"UA\x01\x04fuzz" + frame0):
        for opener in (server.open, SEAL.open):
            try:
                opener(memoryview(data), [memoryview(r) for r in rest])
            except undertow.AuthenticationError:
                continue
            pytest.fail(f"{data!r} passed as a valid signature")


@BUDGET
@given(
    st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=4), max_size=4),
    st.binary(max_size=60),
    st.lists(st.integers(min_value=1, max_value=50), max_size=8),
)
def test_the_plain_socket_reader_survives_any_bytes(
    messages: list[list[bytes]], garbage: bytes, cuts: list[int]
) -> None:
    # well-formed messages cut anywhere come out whole and in order; bytes after them may
    # only give more messages, wait for more, or be refused (UndertowError), never crash
    from undertow.errors import UndertowError
    from undertow.transport._plain_wire import _Reader, pack_message

    wire = b"".join(bytes(b) for m in messages for b in pack_message(m)) + garbage
    reader = _Reader(limit=1 << 20)
    got: list[list[bytes]] = []
    at = 0
    try:
        for cut in [*cuts, len(wire)]:
            reader.feed(wire[at : at + cut] if cut < len(wire) else wire[at:])
            at = min(len(wire), at + cut)
            while (found := reader.next_message()) is not None:
                got.append([f.bytes for f in found])
    except UndertowError:
        pass
    assert got[: len(messages)] == messages  # every whole message, before any refusal
