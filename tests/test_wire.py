"""The wire format: header framing, codecs, and remote errors rebuilt without unpickling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import undertow
from undertow.errors import RemoteTraceback
from undertow.wire import (
    MAGIC,
    PROTOCOL_VERSION,
    Codec,
    DumpsLoadsCodec,
    ErrorInfo,
    Flags,
    Header,
    JsonCodec,
    Kind,
    decode_error,
    decode_header,
    encode_error,
    encode_header,
    error_info,
    rebuild,
    resolve_codec,
)

FAST = settings(max_examples=200, deadline=None, database=None)

PREFIX = MAGIC + bytes([PROTOCOL_VERSION])


# -- header -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_header_round_trip_for_every_kind(kind: Kind) -> None:
    header = Header(kind, 42, "fn", "msgpack", 3, 1.5, int(Flags.NO_OUTPUT), b"body")
    frame = encode_header(header)
    assert frame.startswith(PREFIX)
    decoded = decode_header(frame)
    assert decoded == header
    assert decoded.kind is kind
    assert isinstance(decoded.kind, Kind)


@pytest.mark.parametrize("kind", list(Kind))
def test_header_with_defaults_round_trips(kind: Kind) -> None:
    header = Header(kind, 7)
    decoded = decode_header(encode_header(header))
    assert decoded == header
    assert (decoded.name, decoded.codec, decoded.nbuffers) == ("", "", 0)
    assert decoded.timeout is None
    assert decoded.body == b""


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_decode_header_accepts_any_buffer(wrap: Any) -> None:
    header = Header(Kind.RESULT, 9, codec="json")
    assert decode_header(wrap(encode_header(header))) == header


def test_header_repr_leaves_the_body_out() -> None:
    header = Header(Kind.CALL, 1, "f", "msgpack", 0, None, 0, b"hunter2-secret")
    assert "hunter2-secret" not in repr(header)
    assert "CALL" in repr(header)


def test_header_ignores_unknown_trailing_fields() -> None:
    # The header is a msgpack array so that later versions can append fields.
    frame = PREFIX + msgspec.msgpack.encode(
        [1, 5, "f", "msgpack", 0, None, 0, b"", [1, 2, 3], "new", 7]
    )
    assert decode_header(frame) == Header(Kind.CALL, 5, "f", "msgpack", 0, timing=(1, 2, 3))


def test_an_answers_server_timings_must_be_three_whole_numbers() -> None:
    for timing in ([1, 2], [1.5, 2, 3], "fast", {"ran": 1}):
        frame = PREFIX + msgspec.msgpack.encode([2, 5, "", "", 0, None, 0, b"", timing])
        with pytest.raises(undertow.WireError):
            decode_header(frame)


@pytest.mark.parametrize(
    "frame",
    [b"XX\x01\x93\x01\x01\xa0", b"\x00\x00\x00", b"GET / HTTP/1.1\r\n\r\n"],
    ids=["wrong-magic", "zeros", "http"],
)
def test_bad_magic_is_a_wire_error(frame: bytes) -> None:
    with pytest.raises(undertow.WireError, match="not an undertow message"):
        decode_header(frame)


@pytest.mark.parametrize("frame", [b"", b"U", b"UT"], ids=["empty", "one-byte", "magic-only"])
def test_too_short_header_is_a_wire_error(frame: bytes) -> None:
    with pytest.raises(undertow.WireError, match="truncated header"):
        decode_header(frame)


def test_wrong_version_is_a_wire_error_naming_both_versions() -> None:
    body = encode_header(Header(Kind.CALL, 1, "f", "msgpack"))[3:]
    other = PROTOCOL_VERSION + 1
    with pytest.raises(undertow.WireError) as info:
        decode_header(MAGIC + bytes([other]) + body)
    message = str(info.value)
    assert f"protocol version {other}" in message
    assert f"speaks {PROTOCOL_VERSION}" in message


def test_truncated_header_is_a_wire_error() -> None:
    frame = encode_header(Header(Kind.CALL, 123456, "some_function", "msgpack", 0, 2.0))
    for end in (2, 3, len(frame) - 1, len(frame) // 2):
        with pytest.raises(undertow.WireError):
            decode_header(frame[:end])
    with pytest.raises(undertow.WireError, match="malformed header"):
        decode_header(frame[:-1])


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never-used msgpack opcode
        b"\xff\xfe\xfd\xfc",
        msgspec.msgpack.encode({"kind": 1, "call_id": 1}),  # a map, not an array
        msgspec.msgpack.encode([99, 1]),  # no such kind
        msgspec.msgpack.encode([0, 1]),  # no such kind
        msgspec.msgpack.encode([1, "one"]),  # call id of the wrong type
        msgspec.msgpack.encode([1, 1, 5]),  # name of the wrong type
        msgspec.msgpack.encode([1]),  # call id missing
        msgspec.msgpack.encode([]),
        msgspec.msgpack.encode([1, 1]) + b"trailing",
    ],
    ids=[
        "bad-opcode",
        "junk",
        "map",
        "kind-99",
        "kind-0",
        "text-call-id",
        "int-name",
        "no-call-id",
        "empty-array",
        "trailing-bytes",
    ],
)
def test_garbage_after_prefix_is_a_wire_error(payload: bytes) -> None:
    with pytest.raises(undertow.WireError, match="malformed header"):
        decode_header(PREFIX + payload)


def test_wire_errors_are_undertow_errors() -> None:
    with pytest.raises(undertow.UndertowError):
        decode_header(b"nope")


headers = st.builds(
    Header,
    kind=st.sampled_from(list(Kind)),
    call_id=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    name=st.text(max_size=40),
    codec=st.text(max_size=12),
    nbuffers=st.integers(min_value=0, max_value=2**32),
    timeout=st.none() | st.floats(allow_nan=False),
    flags=st.integers(min_value=0, max_value=2**16),
    body=st.binary(max_size=40),
)


@FAST
@given(headers)
def test_header_round_trip_property(header: Header) -> None:
    assert decode_header(encode_header(header)) == header


@FAST
@given(st.binary(max_size=64))
def test_decode_header_raises_only_wire_error(data: bytes) -> None:
    for frame in (data, PREFIX + data):
        try:
            header = decode_header(frame)
        except undertow.WireError:
            continue
        assert isinstance(header, Header)
        assert isinstance(header.kind, Kind)


# -- codecs -------------------------------------------------------------------------------------

NESTED = {
    "ints": [0, -1, 2**40, -(2**63), 2**64 - 1],
    "floats": [0.0, -2.5, 1e300],
    "text": ["", "héllo", "日本"],
    "flags": [True, False, None],
    "deep": {"a": [{"b": [[], {}, [1, [2, [3]]]]}]},
}


@pytest.mark.parametrize("name", ["msgpack", "json", "numpy"])
def test_safe_codecs_round_trip_nested_values(name: str) -> None:
    codec = resolve_codec(name)
    frames = codec.encode(NESTED)
    assert len(frames) == 1
    assert codec.decode(frames) == NESTED
    assert codec.name == name
    assert codec.unsafe is False


def test_msgpack_round_trips_bytes() -> None:
    codec = resolve_codec("msgpack")
    value = {"blob": b"\x00\xff" * 100, "items": [b"", b"x"]}
    assert codec.decode(codec.encode(value)) == value


def test_codec_decodes_from_memoryview() -> None:
    codec = resolve_codec("msgpack")
    frames = codec.encode([1, "two", [3.0]])
    assert codec.decode([memoryview(bytes(frames[0]))]) == [1, "two", [3.0]]


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@FAST
@given(msgpack_values)
def test_msgpack_round_trip_property(value: Any) -> None:
    codec = resolve_codec("msgpack")
    assert codec.decode(codec.encode(value)) == value


def test_pickle_codec_round_trips_a_lambda() -> None:
    codec = resolve_codec("pickle")
    assert codec.unsafe is True
    fn = codec.decode(codec.encode(lambda x: x * 3 + 1))
    assert fn(2) == 7


def test_pickle_codec_round_trips_a_closure() -> None:
    def make_adder(n: int) -> Any:
        offset = [n]

        def add(x: int) -> int:
            return x + offset[0]

        return add

    codec = resolve_codec("pickle")
    add = codec.decode(codec.encode(make_adder(40)))
    assert add(2) == 42
    assert add.__name__ == "add"


def test_stdlib_json_module_resolves_to_the_json_codec() -> None:
    codec = resolve_codec(json)
    assert isinstance(codec, JsonCodec)
    assert codec.name == "json"
    assert codec is resolve_codec("json")
    assert codec.decode(codec.encode({"a": [1, 2]})) == {"a": [1, 2]}


def test_modules_that_run_code_when_loading_are_unsafe_codecs() -> None:
    import pickle
    import types

    assert resolve_codec(pickle).name == "pickle"  # the built-in codec, buffers and all
    assert resolve_codec(pickle).unsafe
    for name in ("dill", "jsonpickle", "marshal"):
        module = types.ModuleType(name)
        module.dumps, module.loads = pickle.dumps, pickle.loads  # type: ignore[attr-defined]
        assert resolve_codec(module).unsafe, name
    assert DumpsLoadsCodec(json, unsafe=True).unsafe
    assert not resolve_codec(json).unsafe
    server = undertow.Server()
    server.register("f", lambda x: x)
    assert not server.description()["authenticates"]
    dill = types.SimpleNamespace(dumps=pickle.dumps, loads=pickle.loads, unsafe=True, name="dill")
    server.config({"f": {"input_serialization": dill}})
    # a codec that runs code needs signed callers: with no tokens, the user's own token
    assert server.description()["authenticates"]
    assert server.description()["user"] is not None
    with pytest.raises(undertow.ConfigError, match="pickle"):
        server.start("tcp://0.0.0.0:0")  # and not beyond loopback; refused before binding


def test_object_with_dumps_and_loads_becomes_a_codec() -> None:
    class Reverse:
        name = "reverse"

        @staticmethod
        def dumps(value: str) -> str:
            return value[::-1]

        @staticmethod
        def loads(data: bytes) -> str:
            return data.decode()[::-1]

    codec = resolve_codec(Reverse())
    assert isinstance(codec, DumpsLoadsCodec)
    assert isinstance(codec, Codec)
    assert codec.name == "reverse"
    assert codec.encode("abc") == [b"cba"]
    assert codec.decode([b"cba"]) == "abc"


def test_a_codec_instance_resolves_to_itself() -> None:
    codec = JsonCodec()
    assert resolve_codec(codec) is codec


def test_extra_codecs_are_found_by_name() -> None:
    extra = DumpsLoadsCodec(json, name="custom")
    assert resolve_codec("custom", {"custom": extra}) is extra


def test_numpy_array_travels_out_of_band_through_the_pickle_codec() -> None:
    codec = resolve_codec("pickle")
    array = np.arange(250_000, dtype=np.float64) * 1.000001 + 7.0
    frames = codec.encode(array)

    assert len(frames) > 1
    body = bytes(frames[0])
    assert len(body) < 1024, "the array's data was copied into the body"
    assert array[:64].tobytes() not in body
    assert sum(memoryview(f).nbytes for f in frames[1:]) >= array.nbytes

    decoded = codec.decode(frames)
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)

    # as the transport delivers them: independent copies of each frame
    copied = codec.decode([bytes(memoryview(f)) for f in frames])
    np.testing.assert_array_equal(copied, array)


def test_numpy_arrays_inside_a_structure_each_get_a_frame() -> None:
    codec = resolve_codec("pickle")
    value = {"a": np.ones(10_000), "b": np.zeros((100, 100), dtype=np.int32), "tag": "x"}
    frames = codec.encode(value)
    assert len(frames) == 3
    decoded = codec.decode(frames)
    assert decoded["tag"] == "x"
    np.testing.assert_array_equal(decoded["a"], value["a"])
    np.testing.assert_array_equal(decoded["b"], value["b"])


def test_non_contiguous_numpy_array_round_trips() -> None:
    codec = resolve_codec("pickle")
    array = np.arange(10_000).reshape(100, 100)[::3, 1::2]
    np.testing.assert_array_equal(codec.decode(codec.encode(array)), array)


# -- the numpy codec: arrays out of band, safe to decode ----------------------------------------


def test_numpy_codec_sends_each_large_array_as_a_frame_without_copying() -> None:
    codec = resolve_codec("numpy")
    big = np.arange(100_000, dtype=np.float64).reshape(1000, 100)
    value = {"big": big, "small": np.arange(3, dtype=np.int16), "n": np.float32(1.5), "xs": [1]}
    frames = codec.encode(value)
    assert len(frames) == 3  # the body, then one frame per array
    sent: Any = frames[1]
    assert np.shares_memory(np.frombuffer(sent, dtype=np.uint8), big)  # not copied
    back = codec.decode(frames)
    assert back["big"].shape == (1000, 100)
    assert (back["big"] == big).all()
    assert back["small"].dtype == np.int16
    assert back["small"].tolist() == [0, 1, 2]
    assert (back["n"], back["xs"]) == (1.5, [1])
    assert codec.unsafe is False


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0, 3)),
        np.array(7),
        np.arange(20)[::3],  # not contiguous
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.zeros(4, dtype=[("x", "<i4"), ("y", "<f8")]),
        np.array([True, False]),
        np.arange(4, dtype=">u2"),
        np.array(["ab", "c"]),
    ],
    ids=["empty", "0-d", "strided", "fortran", "structured", "bool", "big-endian", "unicode"],
)
def test_numpy_codec_round_trips_shapes_and_dtypes(array: Any) -> None:
    codec = resolve_codec("numpy")
    back = codec.decode(codec.encode(array))
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert (back == array).all()


def test_numpy_codec_refuses_object_arrays_both_ways() -> None:
    codec = resolve_codec("numpy")
    with pytest.raises(undertow.SerializationError, match="pickle"):
        codec.encode(np.array([object()]))
    for descr in ("O", [["x", "O"]]):
        meta = msgspec.msgpack.encode((1, descr, [1]))
        body = msgspec.msgpack.encode(msgspec.msgpack.Ext(1, meta))
        with pytest.raises(undertow.DeserializationError, match="Python objects"):
            codec.decode([body, b"\0" * 8])


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ((2, "<f8", [1]), "missing"),
        ((1, "<f8", [2]), "does not fit"),
        ((1, "<f8", [-1, -8]), "does not fit"),
        ((1, "V99999999999", [1]), "not understood"),
        ((1, "no such dtype", [1]), "numpy payload"),
    ],
)
def test_numpy_codec_refuses_lying_array_descriptions(meta: Any, match: str) -> None:
    body = msgspec.msgpack.encode(msgspec.msgpack.Ext(1, msgspec.msgpack.encode(meta)))
    with pytest.raises(undertow.DeserializationError, match=match):
        resolve_codec("numpy").decode([body, b"\0" * 8])


def test_unknown_codec_name_lists_the_known_ones() -> None:
    with pytest.raises(undertow.ConfigError) as info:
        resolve_codec("yaml")
    message = str(info.value)
    assert "'yaml'" in message
    for known in ("json", "msgpack", "pickle"):
        assert known in message


def test_unknown_codec_name_lists_extra_codecs_too() -> None:
    with pytest.raises(undertow.ConfigError, match="mine"):
        resolve_codec("yaml", {"mine": JsonCodec()})


@pytest.mark.parametrize("spec", [42, None, object(), ["json"]])
def test_a_non_codec_is_a_config_error(spec: Any) -> None:
    with pytest.raises(undertow.ConfigError, match="not a serialization"):
        resolve_codec(spec)


class Widget:
    """Something no safe codec can encode."""


@pytest.mark.parametrize("name", ["msgpack", "json", "numpy"])
def test_unencodable_value_names_its_type(name: str) -> None:
    codec = resolve_codec(name)
    with pytest.raises(undertow.SerializationError) as info:
        codec.encode(Widget())
    assert "Widget" in str(info.value)
    assert name in str(info.value)
    assert isinstance(info.value, undertow.WireError)


def test_unencodable_nested_value_names_the_inner_type() -> None:
    with pytest.raises(undertow.SerializationError, match="Widget"):
        resolve_codec("msgpack").encode({"fine": [1, 2, Widget()]})


def test_integer_too_large_for_msgpack_is_a_serialization_error() -> None:
    with pytest.raises(undertow.SerializationError, match="int"):
        resolve_codec("msgpack").encode(2**64)


def test_unpicklable_value_is_a_serialization_error() -> None:
    import threading

    with pytest.raises(undertow.SerializationError, match="lock"):
        resolve_codec("pickle").encode(threading.Lock())


@pytest.mark.parametrize("name", ["msgpack", "json", "numpy", "pickle"])
def test_garbage_payload_is_a_deserialization_error(name: str) -> None:
    with pytest.raises(undertow.DeserializationError):
        resolve_codec(name).decode([b"\xc1\x00garbage{"])


def test_dumps_loads_codec_failures_are_wrapped() -> None:
    custom = DumpsLoadsCodec(json, name="stdjson")
    with pytest.raises(undertow.SerializationError, match="Widget"):
        custom.encode(Widget())
    with pytest.raises(undertow.DeserializationError, match="stdjson"):
        custom.decode([b"{not json"])


# -- errors -------------------------------------------------------------------------------------


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _remote_failure() -> None:
    raise ValueError("the remote value was bad")


def _info_of(fn: Any) -> ErrorInfo:
    try:
        fn()
    except Exception as exc:
        return decode_error(encode_error(error_info(exc)))
    raise AssertionError("fn did not raise")


def test_builtin_value_error_is_rebuilt_with_the_remote_traceback() -> None:
    info = _info_of(_remote_failure)
    assert info.type == "builtins.ValueError"
    assert info.code == "remote"

    exc = rebuild(info, where="f() at tcp://host:1")
    assert type(exc) is ValueError
    assert str(exc) == "the remote value was bad"
    cause = exc.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "_remote_failure" in cause.text
    assert "the remote value was bad" in cause.text
    assert "f() at tcp://host:1" in cause.text
    assert "_remote_failure" in str(cause)


def test_builtin_key_error_is_rebuilt_as_itself() -> None:
    def lookup() -> None:
        table: dict[str, int] = {}
        _ = table["missing-key"]

    info = _info_of(lookup)
    exc = rebuild(info, where="lookup()")
    assert type(exc) is KeyError
    assert exc.args == ("missing-key",)
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "lookup" in exc.__cause__.text
    assert "KeyError" in exc.__cause__.text


def test_builtin_subclass_is_rebuilt_as_itself() -> None:
    def fail() -> None:
        raise FileNotFoundError(2, "No such file or directory", "/no/such/file")

    info = _info_of(fail)
    exc = rebuild(info, where="w")
    assert type(exc) is FileNotFoundError
    assert isinstance(exc.__cause__, RemoteTraceback)


class QuotaExceeded(Exception):
    """An application error a client may choose to rebuild."""


class NeedsTwo(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(a, b)


def test_unknown_type_becomes_remote_error() -> None:
    def fail() -> None:
        raise QuotaExceeded("over quota by 5")

    info = _info_of(fail)
    exc = rebuild(info, where="w")
    assert isinstance(exc, undertow.RemoteError)
    assert not isinstance(exc, QuotaExceeded)
    assert exc.remote_type == f"{QuotaExceeded.__module__}.QuotaExceeded"
    assert exc.remote_message == "over quota by 5"
    assert "fail" in exc.remote_traceback
    assert "over quota by 5" in exc.remote_traceback
    assert "QuotaExceeded" in str(exc)
    assert isinstance(exc.__cause__, RemoteTraceback)


def test_remote_error_from_a_hand_made_info() -> None:
    info = ErrorInfo("pkg.mod.Boom", "it broke", "Traceback: remote text")
    exc = rebuild(info, where="w")
    assert isinstance(exc, undertow.RemoteError)
    assert (exc.remote_type, exc.remote_message) == ("pkg.mod.Boom", "it broke")
    assert exc.remote_traceback == "Traceback: remote text"
    assert str(exc) == "pkg.mod.Boom: it broke"


def test_safe_type_is_rebuilt_when_registered() -> None:
    def fail() -> None:
        raise QuotaExceeded("over quota")

    info = _info_of(fail)
    exc = rebuild(info, where="w", safe_types=[QuotaExceeded])
    assert type(exc) is QuotaExceeded
    assert str(exc) == "over quota"
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "fail" in exc.__cause__.text


def test_safe_type_registered_by_remote_name() -> None:
    info = ErrorInfo("server_app.errors.Quota", "over", "tb", args=["over"])
    exc = rebuild(info, where="w", safe_types={"server_app.errors.Quota": QuotaExceeded})
    assert type(exc) is QuotaExceeded
    assert exc.args == ("over",)


def test_safe_type_with_several_args() -> None:
    def fail() -> None:
        raise NeedsTwo(1, 2)

    info = _info_of(fail)
    exc = rebuild(info, where="w", safe_types=[NeedsTwo])
    assert type(exc) is NeedsTwo
    assert exc.args == (1, 2)


def test_safe_type_that_cannot_be_constructed_becomes_remote_error() -> None:
    info = ErrorInfo(f"{NeedsTwo.__module__}.NeedsTwo", "x", "tb", args=[])
    exc = rebuild(info, where="w", safe_types=[NeedsTwo])
    assert isinstance(exc, undertow.RemoteError)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("serialization", undertow.SerializationError),
        ("timeout", undertow.RPCTimeout),
        ("auth", undertow.AuthenticationError),
    ],
)
def test_error_codes_fix_the_client_class(code: str, expected: type[Exception]) -> None:
    info = ErrorInfo("builtins.ValueError", "went wrong", code=code)
    exc = rebuild(info, where="f() at here")
    assert type(exc) is expected
    assert "went wrong" in str(exc)
    assert "f() at here" in str(exc)


def test_not_found_code_gives_function_not_found() -> None:
    info = ErrorInfo("nope", "no function 'nope'", code="not_found", available=["a", "b"])
    exc = rebuild(info, where="w")
    assert isinstance(exc, undertow.FunctionNotFound)
    assert isinstance(exc, AttributeError)
    assert exc.available == ("a", "b")


class _Spy:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        self.calls.append((args, kwargs))
        return 0


@pytest.mark.parametrize("name", ["os.system", "subprocess.Popen", "posix.system", "pty.spawn"])
def test_dangerous_type_names_are_never_imported_or_called(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, popen = _Spy(), _Spy()
    monkeypatch.setattr(os, "system", system)
    monkeypatch.setattr(subprocess, "Popen", popen)
    was_loaded = "pty" in sys.modules
    info = ErrorInfo(name, "touch /tmp/undertow-pwned", "tb", args=["touch /tmp/undertow-pwned"])

    exc = rebuild(info, where="w")
    assert isinstance(exc, undertow.RemoteError)
    assert exc.remote_type == name
    # even when the client registers something by that name, nothing is imported
    exc = rebuild(info, where="w", safe_types=[QuotaExceeded])
    assert isinstance(exc, undertow.RemoteError)

    assert system.calls == []
    assert popen.calls == []
    assert ("pty" in sys.modules) == was_loaded


def test_unknown_module_is_never_imported() -> None:
    name = "undertow_never_imported_probe"
    info = ErrorInfo(f"{name}.Boom", "x", "tb")
    assert isinstance(rebuild(info, where="w"), undertow.RemoteError)
    assert name not in sys.modules


@pytest.mark.parametrize(
    "name",
    [
        "builtins.SystemExit",
        "builtins.KeyboardInterrupt",
        "builtins.GeneratorExit",
        "builtins.BaseException",
        "builtins.eval",
        "builtins.exec",
        "builtins.open",
        "builtins.__import__",
        "builtins.object",
        "builtins.type",
        "builtins.",
        "",
    ],
)
def test_builtins_that_are_not_exceptions_or_would_exit_become_remote_error(name: str) -> None:
    info = ErrorInfo(name, "0", "tb", args=["0"])
    exc = rebuild(info, where="w")
    assert isinstance(exc, undertow.RemoteError)
    assert exc.remote_type == name


def test_error_info_keeps_only_plain_args() -> None:
    info = error_info(_raised(ValueError("x", 1, 2.5, None, True)))
    assert info.args == ["x", 1, 2.5, None, True]
    info = error_info(_raised(ValueError("x", object())))
    assert info.args == []
    exc = rebuild(info, where="w")
    assert type(exc) is ValueError


def test_error_info_clips_a_huge_traceback() -> None:
    from undertow.wire._errors import MAX_TRACEBACK

    info = error_info(_raised(ValueError("y" * (MAX_TRACEBACK * 3))))
    assert len(info.traceback) < MAX_TRACEBACK + 200
    assert "characters cut" in info.traceback
    assert info.traceback.rstrip().endswith("y")


def test_error_info_survives_the_wire() -> None:
    info = ErrorInfo("builtins.KeyError", "'k'", "tb text", ["k"], "remote", ["a"])
    assert decode_error(encode_error(info)) == info


def test_a_small_body_rides_in_the_header_frame() -> None:
    from undertow.wire import INLINE_BODY, pack, payload_of

    def result(payload: list[Any]) -> list[Any]:
        return pack(Kind.RESULT, 9, payload, codec="msgpack")

    small = result([b"\x01\x02"])
    assert len(small) == 1
    decoded = decode_header(small[0])
    assert payload_of(decoded, []) == [b"\x01\x02"]
    big = result([b"x" * (INLINE_BODY + 1)])
    assert len(big) == 2
    assert payload_of(decode_header(big[0]), big[1:]) == [b"x" * (INLINE_BODY + 1)]
    with_buffers = result([b"body", memoryview(b"buffer")])
    assert len(with_buffers) == 3


def test_a_blob_travels_as_a_frame_of_its_own_in_numpy_and_pickle() -> None:
    from undertow.wire import Blob, NumpyCodec, PickleCodec

    data = bytes(range(256)) * 1024
    for codec in (NumpyCodec(), PickleCodec()):
        frames = codec.encode([1, Blob(data), "x"])
        assert len(frames) == 2  # the body, and the blob's frame, not copied into the body
        assert memoryview(frames[0]).nbytes < 1024
        one, view, x = codec.decode(frames)
        assert (one, x) == (1, "x")
        assert isinstance(view, memoryview)
        assert view.tobytes() == data
