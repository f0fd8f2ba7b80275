"""Remote exceptions are readable: same type when safe, RemoteError otherwise."""

from __future__ import annotations

import traceback

import msgspec
import pytest

import undertow

WAIT = 10.0


class CustomError(Exception):
    """A type the client does not know unless it registers it."""


def make_server() -> undertow.Server:
    server = undertow.Server(name="err")

    @server.register
    def fail_value(x: int) -> None:
        raise ValueError(f"bad value {x}")

    @server.register
    def fail_key() -> int:
        empty: dict[str, int] = {}
        return empty["missing"]

    @server.register
    def fail_custom() -> None:
        raise CustomError("custom trouble")

    @server.register
    async def afail() -> None:
        raise RuntimeError("async trouble")

    @server.register
    def gen_fail():
        yield 1
        raise IndexError("stream trouble")

    return server


def test_builtin_exception_keeps_its_type_and_remote_traceback(serve):
    address = serve(make_server())
    with undertow.connect(address, timeout=WAIT) as client:
        with pytest.raises(ValueError, match="bad value 3") as info:
            client.fail_value(3)
        cause = info.value.__cause__
        assert isinstance(cause, undertow.errors.RemoteTraceback)
        assert "fail_value" in cause.text
        assert 'raise ValueError(f"bad value {x}")' in cause.text
        rendered = "".join(traceback.format_exception(info.value))
        assert "direct cause of the following exception" in rendered
        assert "Remote traceback (fail_value() at" in rendered
        with pytest.raises(KeyError, match="missing"):
            client.fail_key()
        with pytest.raises(RuntimeError, match="async trouble"):
            client.afail()


def test_unknown_exception_types_become_remote_error(serve):
    address = serve(make_server())
    with undertow.connect(address, timeout=WAIT) as client:
        with pytest.raises(undertow.RemoteError) as info:
            client.fail_custom()
    err = info.value
    assert err.remote_type.endswith("CustomError")
    assert err.remote_message == "custom trouble"
    assert "raise CustomError" in err.remote_traceback
    assert "CustomError: custom trouble" in str(err)


def test_registered_safe_types_are_rebuilt(serve):
    address = serve(make_server())
    with undertow.connect(address, timeout=WAIT, safe_exceptions=[CustomError]) as client:
        with pytest.raises(CustomError, match="custom trouble"):
            client.fail_custom()


def test_error_in_a_stream_after_items(serve):
    address = serve(make_server())
    with undertow.connect(address, timeout=WAIT) as client:
        stream = client.gen_fail()
        assert next(stream) == 1
        with pytest.raises(IndexError, match="stream trouble"):
            next(stream)


def test_bad_arguments_raise_type_error_like_a_local_call(serve):
    address = serve(make_server())
    with undertow.connect(address, timeout=WAIT) as client:
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            client.fail_value(nope=1)
        with pytest.raises(ValueError, match="bad value 1"):
            client.fail_value(1)


def test_a_timeout_raised_by_the_function_itself_is_not_the_servers_limit(serve):
    server = undertow.Server(name="err")

    @server.register
    async def gives_up() -> None:
        raise TimeoutError("the database did not answer")

    @server.register
    def gives_up_sync() -> None:
        raise TimeoutError("the disk did not answer")

    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        for fn, text in ((client.gives_up, "database"), (client.gives_up_sync, "disk")):
            with pytest.raises(TimeoutError, match=text) as info:
                fn()
            assert not isinstance(info.value, undertow.RPCTimeout)


def test_an_unreachable_data_server_comes_back_typed_with_key_and_address() -> None:
    from undertow.wire import ErrorInfo, rebuild

    info = ErrorInfo(
        "undertow.errors.DataUnavailable", "value 'k1' is held by ...", args=["k1", "tcp://h:1"]
    )
    info = msgspec.structs.replace(info, code="data_unavailable")
    exc = rebuild(info, where="total() at tcp://other:2")
    assert isinstance(exc, undertow.DataUnavailable)
    assert isinstance(exc, LookupError)
    assert (exc.key, exc.address) == ("k1", "tcp://h:1")
