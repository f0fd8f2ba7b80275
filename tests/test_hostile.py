"""A real server fed malformed and hostile messages from a raw ZeroMQ socket, and from a raw
plain socket, keeps serving."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq

import undertow
from undertow.security import ENVELOPE_MAGIC, ClientSeal, TokenAuth, client_key, strip_envelope
from undertow.transport import PlainSocket
from undertow.wire import (
    MAGIC,
    PROTOCOL_VERSION,
    ErrorInfo,
    Header,
    Kind,
    batch_frames,
    decode_error,
    decode_header,
    encode_header,
    payload_of,
)

#: Bounded wait used only to assert that *no* answer comes (never to wait for readiness).
QUIET_MS = 200
#: Upper bound for an answer that must come.
ANSWER_MS = 5_000

PREFIX = MAGIC + bytes([PROTOCOL_VERSION])
TOKEN = "hostile.WmQ2v8kPzR4tYx7nB1cD5fG9hJ3"

#: Side effects of unpickling the hostile payload, were the server ever to unpickle it.
PWNED: list[str] = []


def _pwn(marker: str) -> str:
    PWNED.append(marker)
    return marker


class Exploit:
    """Unpickling this runs ``_pwn``: stands in for os.system."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_pwn, ("unpickled",))


def echo(x: Any) -> Any:
    return x


def add(x: int, y: int) -> int:
    return x + y


async def aecho(x: Any) -> Any:
    return x


def count(n: int) -> Iterator[int]:
    yield from range(n)


def loads(data: Any) -> Any:
    return data


class Unsendable:
    """No codec but pickle can send this."""


def give_unsendable() -> Unsendable:
    return Unsendable()


def make_server() -> undertow.Server:
    # anonymous callers are served too, so that unsigned garbage reaches the decoders
    server = undertow.Server(name="hostile", auth=TokenAuth([TOKEN]), allow_anonymous=True)
    for fn in (echo, add, aecho, count, give_unsendable):
        server.register(fn.__name__, fn)
    server.register("np_loads", loads)
    server.config({"np_*": {"input_serialization": "pickle"}})
    return server


@pytest.fixture
def server(undertow_home: Any) -> Iterator[undertow.Server]:
    """The hostile-input server, on ZeroMQ and on a plain socket."""
    served = make_server()
    served.start(plain="tcp+plain://127.0.0.1:0")
    yield served
    served.stop()


@pytest.fixture
def address(server: undertow.Server) -> str:
    return server.address


class PlainRaw:
    """A plain-socket connection with the few methods of a ZeroMQ socket these tests use."""

    def __init__(self, address: str) -> None:
        self.sock = PlainSocket(address)
        self._next: list[Any] | None = None

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sock.send(frames)

    def poll(self, timeout_ms: int, _flags: int = 0) -> bool:
        if self._next is None:
            self._next = self.sock.recv(timeout_ms)
        return self._next is not None

    def recv_multipart(self) -> list[bytes]:
        assert self.poll(ANSWER_MS)
        frames, self._next = self._next or [], None
        return [frame.bytes for frame in frames]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["zmq", "plain"])
def raw(request: pytest.FixtureRequest, server: undertow.Server) -> Iterator[Any]:
    """Hostile messages go in over ZeroMQ, then over the server's plain socket."""
    if request.param == "plain":
        plain = PlainRaw(server.plain_address)
        yield plain
        _unread.pop(id(plain), None)
        plain.close()
        return
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.address)
        yield sock
    finally:
        _unread.pop(id(sock), None)
        sock.close()


def call_header(call_id: int, name: str = "echo", codec: str = "msgpack", **kw: Any) -> bytes:
    return encode_header(Header(Kind.CALL, call_id, name, codec, 0, **kw))


def signed(frames: list[bytes], token: str = TOKEN) -> list[bytes]:
    """``frames`` signed as a client holding ``token`` signs them."""
    return ClientSeal(client_key(token)).seal(frames)


def unsealed(frame: bytes) -> bytes:
    """Frame 0 without its signature envelope, if it has one."""
    if frame[:2] == ENVELOPE_MAGIC:
        return bytes(strip_envelope(memoryview(frame)))
    return frame


def args_body(*args: Any, **kwargs: Any) -> bytes:
    return msgspec.msgpack.encode([list(args), kwargs])


_unread: dict[int, list[Header]] = {}  # per socket: messages of a BATCH not returned yet


def receive(sock: zmq.Socket[Any], timeout_ms: int = ANSWER_MS) -> tuple[Header, list[bytes]]:
    """The next message, as a client sees it: a BATCH of answers is taken apart."""
    unread = _unread.setdefault(id(sock), [])
    if not unread:
        assert sock.poll(timeout_ms, zmq.POLLIN), "the server did not answer"
        frames = sock.recv_multipart()
        header = decode_header(unsealed(frames[0]))
        if header.kind != Kind.BATCH:
            return header, payload_of(header, frames[1:])  # a small body rides in the header
        unread.extend(decode_header(unsealed(inner)) for inner in batch_frames(header))
    header = unread.pop(0)
    return header, payload_of(header, [])


def receive_error(sock: zmq.Socket[Any], call_id: int) -> ErrorInfo:
    header, frames = receive(sock)
    assert header.call_id == call_id
    assert header.kind == Kind.ERROR, f"expected an ERROR, got {header!r}"
    assert len(frames) == 1
    return decode_error(frames[0])


def assert_silent(sock: zmq.Socket[Any]) -> None:
    assert not _unread.get(id(sock)), f"unexpected answers: {_unread[id(sock)]!r}"
    if sock.poll(QUIET_MS, zmq.POLLIN):
        frames = sock.recv_multipart()
        raise AssertionError(f"unexpected answer: {frames!r}")


def assert_serves(address: str) -> None:
    with undertow.connect(address, timeout=10) as client:
        assert client.add(2, 3) == 5
        assert client.echo({"k": [1, "two", None]}) == {"k": [1, "two", None]}
        assert client.aecho("async") == "async"
        assert list(client.count(4)) == [0, 1, 2, 3]


MALFORMED = {
    "empty-frame": [b""],
    "garbage": [b"\x00\xffgarbage\x13\x37" * 10],
    "http": [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    "magic-only": [MAGIC],
    "prefix-only": [PREFIX],
    "wrong-version": [MAGIC + bytes([PROTOCOL_VERSION + 1]) + call_header(1)[3:], args_body(1)],
    "version-zero": [MAGIC + b"\x00" + call_header(2)[3:], args_body(1)],
    "truncated-header": [call_header(3)[:-2], args_body(1)],
    "unknown-kind": [PREFIX + msgspec.msgpack.encode([99, 4, "echo", "msgpack", 0])],
    "call-id-is-text": [PREFIX + msgspec.msgpack.encode([1, "five", "echo", "msgpack", 0])],
    "header-is-a-map": [PREFIX + msgspec.msgpack.encode({"kind": 1, "call_id": 6})],
    "garbage-after-prefix": [PREFIX + b"\xc1\xc1\xc1", args_body(1)],
    # well-formed messages a server never takes: it answers none of them
    "result-to-server": [encode_header(Header(Kind.RESULT, 7, codec="msgpack")), b"\x01"],
    "error-to-server": [encode_header(Header(Kind.ERROR, 8)), b"\xc1"],
    "end-to-server": [encode_header(Header(Kind.END, 9))],
    "cancel-unknown-call": [encode_header(Header(Kind.CANCEL, 10))],
}


@pytest.mark.parametrize("frames", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_message_gets_no_answer_and_the_server_keeps_serving(
    raw: zmq.Socket[Any], address: str, frames: list[bytes]
) -> None:
    raw.send_multipart(frames)
    # An answered call sent afterwards on the same connection comes back first: anything the
    # server said about the malformed message would have been queued before it.
    raw.send_multipart([call_header(1000), args_body("after")])
    header, body = receive(raw)
    assert (header.kind, header.call_id) == (Kind.RESULT, 1000)
    assert msgspec.msgpack.decode(body[0]) == "after"
    assert_silent(raw)
    assert_serves(address)


def test_every_malformed_message_at_once(raw: zmq.Socket[Any], address: str) -> None:
    for _ in range(3):
        for frames in MALFORMED.values():
            raw.send_multipart(frames)
    assert_silent(raw)
    assert_serves(address)


def test_call_with_a_garbage_body_gets_a_serialization_error(
    raw: zmq.Socket[Any], address: str
) -> None:
    raw.send_multipart([encode_header(Header(Kind.CALL, 1, "echo", "msgpack", 0)), b"\xc1junk"])
    info = receive_error(raw, 1)
    assert info.code == "serialization"
    assert "msgpack" in info.message
    assert_silent(raw)
    assert_serves(address)


@pytest.mark.parametrize(
    "body",
    [
        msgspec.msgpack.encode(5),
        msgspec.msgpack.encode("ab"),
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"args": [], "kwargs": {}}),
        msgspec.msgpack.encode([{}, []]),
        msgspec.msgpack.encode(None),
        b"",
    ],
    ids=["int", "str", "three", "map", "swapped", "nil", "empty"],
)
@pytest.mark.parametrize("name", ["echo", "aecho"])
def test_call_whose_body_is_not_args_and_kwargs_gets_a_serialization_error(
    raw: zmq.Socket[Any], address: str, body: bytes, name: str
) -> None:
    raw.send_multipart([call_header(2, name), body])
    assert receive_error(raw, 2).code == "serialization"
    assert_serves(address)


@pytest.mark.parametrize("name", ["echo", "aecho", "count"])
def test_call_without_a_body_frame_is_answered(
    raw: zmq.Socket[Any], address: str, name: str
) -> None:
    # The call id is known, so the caller must hear back rather than wait for its deadline.
    raw.send_multipart([call_header(3, name)])
    assert receive_error(raw, 3).code == "serialization"
    assert_serves(address)


def test_call_to_an_unknown_function_is_not_found_listing_real_names(
    raw: zmq.Socket[Any], address: str
) -> None:
    raw.send_multipart([call_header(4, "no_such_function"), args_body()])
    info = receive_error(raw, 4)
    assert info.code == "not_found"
    assert "no_such_function" in info.message
    assert sorted(info.available) == [
        "add",
        "aecho",
        "count",
        "echo",
        "give_unsendable",
        "np_loads",
    ]
    assert all(not name.startswith("_") for name in info.available)
    assert_serves(address)


@pytest.mark.parametrize("name", ["_private", "__class__", "__init__", "", "../etc", "a" * 10_000])
def test_odd_names_are_not_found(raw: zmq.Socket[Any], address: str, name: str) -> None:
    raw.send_multipart([call_header(5, name), args_body()])
    info = receive_error(raw, 5)
    assert info.code == "not_found"
    assert "echo" in info.available
    assert_serves(address)


def test_pickle_codec_to_a_msgpack_function_is_refused_unread(
    raw: zmq.Socket[Any], address: str
) -> None:
    payload = pickle.dumps([[Exploit()], {}], protocol=5)
    for frames in ([call_header(6, "echo", "pickle"), payload],) * 2:
        raw.send_multipart(frames)
        info = receive_error(raw, 6)
        assert info.code == "serialization"
        raw.send_multipart(signed(frames))  # an authenticated caller does not change that
        info = receive_error(raw, 6)
        assert info.code == "serialization"
        assert "msgpack" in info.message
        assert "pickle" in info.message
    assert PWNED == []
    assert_serves(address)


def test_an_unsigned_pickle_payload_is_never_unpickled(raw: zmq.Socket[Any], address: str) -> None:
    payload = pickle.dumps([[Exploit()], {}], protocol=5)
    raw.send_multipart([call_header(7, "np_loads", "pickle"), payload])
    info = receive_error(raw, 7)
    assert info.code == "auth"
    assert "authenticated" in info.message
    assert PWNED == []
    assert_serves(address)


@pytest.mark.parametrize(
    "token",
    [
        "hostile.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # the right name, another secret
        "mallory.WmQ2v8kPzR4tYx7nB1cD5fG9hJ3",  # a name the server does not know
        TOKEN[:-1],
        TOKEN + "x",
    ],
)
def test_a_pickle_payload_signed_with_a_wrong_token_is_refused_unread(
    raw: zmq.Socket[Any], address: str, token: str
) -> None:
    payload = pickle.dumps([[Exploit()], {}], protocol=5)
    raw.send_multipart(signed([call_header(7, "np_loads", "pickle"), payload], token))
    info = receive_error(raw, 0)  # refused before the header was read: no call id known
    assert info.code == "auth"
    assert "authentication failed" in info.message
    assert PWNED == []
    assert_serves(address)


def test_a_tampered_message_is_refused(raw: zmq.Socket[Any], address: str, caplog: Any) -> None:
    frames = signed([call_header(7, "np_loads", "pickle"), pickle.dumps([["a"], {}])])
    frames[1] = pickle.dumps([[Exploit()], {}], protocol=5)  # changed on the way
    raw.send_multipart(frames)
    assert "authentication failed" in receive_error(raw, 0).message
    assert "bad signature" in caplog.text  # the peer is told little, the log says why
    assert PWNED == []
    assert_serves(address)


def test_a_replayed_message_is_refused(raw: zmq.Socket[Any], address: str) -> None:
    frames = signed([call_header(8, "np_loads", "pickle"), pickle.dumps([["a"], {}])])
    raw.send_multipart(frames)
    header, _ = receive(raw)
    assert (header.kind, header.call_id) == (Kind.RESULT, 8)
    raw.send_multipart(frames)  # the same bytes again
    assert "authentication failed" in receive_error(raw, 0).message
    assert_serves(address)


def test_pickle_payload_with_the_token_is_accepted(raw: zmq.Socket[Any]) -> None:
    # the control for the tests above: the same message, signed with the token, does run
    payload = pickle.dumps([["data"], {}], protocol=5)
    raw.send_multipart(signed([call_header(8, "np_loads", "pickle"), payload]))
    header, frames = receive(raw)
    assert (header.kind, header.call_id, header.codec) == (Kind.RESULT, 8, "msgpack")
    assert msgspec.msgpack.decode(frames[0]) == "data"


def test_wrong_arguments_give_a_type_error_not_a_crash(raw: zmq.Socket[Any], address: str) -> None:
    raw.send_multipart([call_header(9, "add"), args_body(1, 2, 3, 4)])
    info = receive_error(raw, 9)
    assert info.code == "remote"
    assert info.type == "builtins.TypeError"
    raw.send_multipart([call_header(10, "add"), msgspec.msgpack.encode([[1], {"1": 2, "y": 3}])])
    assert receive_error(raw, 10).type == "builtins.TypeError"
    assert_serves(address)


def test_extra_frames_and_lying_nbuffers_are_harmless(raw: zmq.Socket[Any], address: str) -> None:
    header = encode_header(Header(Kind.CALL, 11, "echo", "msgpack", 1_000_000))
    raw.send_multipart([header, args_body("x"), b"extra", b"frames"])
    reply, frames = receive(raw)
    assert (reply.kind, reply.call_id) == (Kind.RESULT, 11)
    assert msgspec.msgpack.decode(frames[0]) == "x"
    assert_serves(address)


def test_hostile_sequence_then_a_normal_client(raw: zmq.Socket[Any], address: str) -> None:
    raw.send_multipart([b""])
    raw.send_multipart([b"garbage bytes \x00\xff"])
    raw.send_multipart([MAGIC + bytes([PROTOCOL_VERSION + 1]) + call_header(20)[3:]])
    raw.send_multipart([encode_header(Header(Kind.CALL, 21, "echo", "msgpack", 0)), b"\xc1"])
    raw.send_multipart([call_header(22, "nope"), args_body()])
    raw.send_multipart([call_header(23, "echo", "pickle"), pickle.dumps([[1], {}])])

    answers = {}
    for _ in range(3):
        header, frames = receive(raw)
        assert header.kind == Kind.ERROR
        answers[header.call_id] = decode_error(frames[0])
    assert sorted(answers) == [21, 22, 23]
    assert answers[21].code == "serialization"
    assert answers[22].code == "not_found"
    assert "echo" in answers[22].available
    assert answers[23].code == "serialization"
    assert_silent(raw)
    assert_serves(address)


# -- a normal client sending or receiving what its codec cannot encode ----------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, x: Any = None) -> str:
        self.calls.append(x)
        return "ran"


def test_unencodable_argument_fails_before_sending(serve: Any) -> None:
    server = undertow.Server(name="args")
    recorder = Recorder()
    server.register("record", recorder)
    server.register("add", add)
    address = serve(server)
    with undertow.connect(address, timeout=10) as client:
        with pytest.raises(undertow.SerializationError) as info:
            client.record(object())
        message = str(info.value)
        assert "argument 0" in message
        assert "object" in message
        assert "record()" in message

        with pytest.raises(undertow.SerializationError, match=re.escape("argument 1 (Unsendable)")):
            client.add(1, Unsendable())
        with pytest.raises(undertow.SerializationError, match="argument 'x'"):
            client.record(x={"nested": object()})
        # submit raises at once too: nothing was sent, so there is no future to fail later
        with pytest.raises(undertow.SerializationError, match="argument 0"):
            client.record.submit(object())

        assert client.record("fine") == "ran"
        assert client.add(1, 2) == 3
    assert recorder.calls == ["fine"]


def test_unencodable_result_is_a_serialization_error_and_the_server_keeps_serving(
    address: str,
) -> None:
    with undertow.connect(address, timeout=10) as client:
        with pytest.raises(undertow.SerializationError) as info:
            client.give_unsendable()
        message = str(info.value)
        assert "output_serialization" in message
        assert "give_unsendable" in message
        assert "Unsendable" in message
        assert client.add(20, 22) == 42
        future = client.give_unsendable.submit()
        with pytest.raises(undertow.SerializationError, match="output_serialization"):
            future.result(timeout=10)
    assert_serves(address)
