"""TLS on the plain TCP socket (``tls+plain://``): a server given a certificate speaks TLS
there, a client given the authority that signed it verifies it and makes its blocking calls
over it, and every other client keeps to ZeroMQ; nothing travels in clear, and a peer that
stalls or sends garbage holds up nobody."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import undertow
from undertow.errors import ConfigError, ConnectError
from undertow.transport import PlainSocket, client_tls, curve_available, keygen
from undertow.transport._plain_wire import GREETING, _Reader, pack_message
from undertow.wire import Kind, decode_header, pack

from ._relay import CountingRelay
from ._threads import run_in_threads
from ._tls import TlsFiles, make_tls
from .test_plain import make_server as plain_server

TOKEN = "ada.tls-secret-of-enough-length-0000"
WAIT = 10.0
TCP = "tcp+plain://127.0.0.1:0"
LINK_LOG = "undertow.rpc._plain_link"

pytestmark = pytest.mark.usefixtures("undertow_home")


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path)


def make_server(tls: TlsFiles | None, **options: Any) -> undertow.Server:
    """The plain-socket tests' server (echo, shout, fail, nap, count), with ``make`` too."""
    if tls is not None:
        options.update(tls_cert=tls.cert, tls_key=tls.key)
    server = plain_server(**options)

    @server.register
    def make(n: int) -> bytes:
        return bytes(range(256)) * (n // 256)

    return server


@pytest.fixture
def served(tls: TlsFiles) -> Iterator[undertow.Server]:
    server = make_server(tls)
    server.start(plain=TCP)
    yield server
    server.stop()


def tls_socket(client: undertow.Client) -> Any:
    """The calling thread's plain connection, if its calls go over one that speaks TLS."""
    link: Any = client._conn.plain  # type: ignore[attr-defined]
    if link is None or not link.usable():
        return None
    sock = link._local.sock
    return sock if isinstance(sock.sock, ssl.SSLSocket) else None


def _call_frames(call_id: int, value: Any) -> list[bytes]:
    body = msgspec.msgpack.encode([[value], {}])
    return pack(Kind.CALL, call_id, [body], name="echo", codec="msgpack")


def _wire(frames: list[bytes]) -> bytes:
    return b"".join(bytes(b) for b in pack_message(frames))


def _closed_by_peer(sock: socket.socket) -> bytes | None:
    """What the peer sent before it closed the connection (None: it did not close in time)."""
    got = b""
    sock.settimeout(WAIT)
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return got
        except TimeoutError:
            return None
        if not chunk:
            return got
        got += chunk


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


# -- calls over TLS ----------------------------------------------------------------------------


def test_blocking_calls_go_over_tls_with_output_errors_and_large_values(served, tls, capsys):
    assert served.plain_address.startswith("tls+plain://127.0.0.1:")
    assert served.description()["plain"] == served.plain_address  # what clients are told
    with undertow.connect(served.address, tls_ca=tls.ca, timeout=WAIT) as client:
        assert client.echo({"a": [1, 2.5, "x", None]}) == {"a": [1, 2.5, "x", None]}
        sock = tls_socket(client)
        assert sock is not None, "the blocking call did not go over the TLS socket"
        assert sock.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert client.shout("hi") == "HI"
        assert "shouting hi" in capsys.readouterr().out
        with pytest.raises(ValueError, match="no good"):
            client.fail("no good")
        big = os.urandom(10 << 20)  # 10 MB each way: many records, a body read to its end
        assert client.echo(big) == big
        assert client.make(10 << 20) == bytes(range(256)) * (10 << 12)
        assert tls_socket(client) is sock  # the same connection all along


def test_threads_and_deadlines_over_tls(served, tls):
    with undertow.connect(served.address, tls_ca=tls.ca, timeout=WAIT) as client:
        results: list[int] = []

        def work(k: int) -> None:
            results.extend(client.echo(k * 1000 + i) for i in range(100))
            assert tls_socket(client) is not None

        run_in_threads(work, range(4), WAIT)  # its assertions fail the test too
        assert sorted(results) == sorted(k * 1000 + i for k in range(4) for i in range(100))
        # a deadline: the client writes a cancel while the server may be answering
        with pytest.raises(TimeoutError, match="nap"):
            client.nap.options(timeout=0.2)(0.6)
        assert client.echo("after") == "after"
        assert tls_socket(client) is not None


def test_signed_calls_over_tls(tls):
    server = make_server(tls, token=TOKEN)
    address = server.start(plain=TCP)
    try:
        with undertow.connect(address, token=TOKEN, tls_ca=tls.ca, timeout=WAIT) as client:
            assert client.echo(5) == 5
            sock = tls_socket(client)
            assert sock is not None
            assert sock.session is not None  # signed inside TLS: handshake, then tags
            big = os.urandom(3 << 20)
            assert client.echo(big) == big
        with pytest.raises(Exception, match="requires authentication"):
            undertow.connect(address, token=False, tls_ca=tls.ca, timeout=WAIT)
    finally:
        server.stop()


def test_a_server_on_every_interface_is_reached_and_verified_at_the_clients_host(tls):
    # it names its socket tls+plain://0.0.0.0:PORT; a client connects to the host it used
    # for ZeroMQ, and verifies the certificate for that host
    server = make_server(tls, token=TOKEN)
    address = server.start("tcp://0.0.0.0:0", plain="tcp+plain://0.0.0.0:0")
    try:
        assert server.plain_address.startswith("tls+plain://0.0.0.0:")
        port = _port(server.plain_address)
        here = f"tcp://127.0.0.1:{_port(address)}"
        with undertow.connect(here, token=TOKEN, tls_ca=tls.ca, timeout=WAIT) as client:
            assert client.echo(1) == 1
            assert tls_socket(client) is not None
            link: Any = client._conn.plain
            assert link.target == f"tls+plain://127.0.0.1:{port}"
    finally:
        server.stop()


def test_the_ca_comes_from_the_environment_unless_turned_off(served, tls, monkeypatch):
    monkeypatch.setenv("UNDERTOW_TLS_CA", tls.ca)
    with undertow.connect(served.address, timeout=WAIT) as client:
        assert client.echo(1) == 1
        assert tls_socket(client) is not None
    with undertow.connect(served.address, tls_ca=False, timeout=WAIT) as client:
        assert client.echo(2) == 2
        assert client._conn.plain is not None
        assert not client._conn.plain.usable()


# -- nothing in clear ----------------------------------------------------------------------------


@pytest.mark.parametrize("secure", [True, False])
def test_the_bytes_on_the_wire_are_not_in_clear(tmp_path, tls, secure):
    # the same call through a relay that records it: TLS hides it, a tcp+plain socket not
    server = make_server(tls if secure else None)
    server.start(plain=TCP)
    relay = CountingRelay(("127.0.0.1", _port(server.plain_address)), record=True)
    marker = b"SECRET-MARKER-" * 100
    try:
        scheme = "tls" if secure else "tcp"
        context = client_tls(tls.ca) if secure else None
        sock = PlainSocket(f"{scheme}+plain://127.0.0.1:{relay.port}", tls=context)
        sock.send(_call_frames(1, marker))
        answer = sock.recv(int(WAIT * 1000))
        assert answer is not None
        assert decode_header(answer[0].buffer).kind == Kind.RESULT
        assert marker in b"".join(frame.bytes for frame in answer)
        sock.close()
        assert relay.seen is not None
        up, down = bytes(relay.seen[False]), bytes(relay.seen[True])
        assert len(up) > len(marker)
        assert len(down) > len(marker)
        if secure:  # TLS records (a handshake first); no greeting, no call, no answer
            assert up[0] == down[0] == 0x16
            for clear in (b"SECRET-MARKER-", GREETING, b"echo"):
                assert clear not in up
                assert clear not in down
        else:
            assert up.startswith(GREETING)
            assert b"SECRET-MARKER-" in up
            assert b"SECRET-MARKER-" in down
    finally:
        relay.close()
        server.stop()


@pytest.mark.parametrize("garbage", ["plaintext greeting", "http request", "random bytes"])
def test_a_client_that_does_not_speak_tls_is_dropped_at_once(served, tls, garbage):
    sock = socket.create_connection(("127.0.0.1", _port(served.plain_address)))
    started = time.monotonic()
    if garbage == "plaintext greeting":
        sock.sendall(GREETING + _wire(_call_frames(1, "hello")))
    elif garbage == "http request":
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    else:
        sock.sendall(b"\x16\x03\x01\x00\x20" + os.urandom(32))  # a record of nonsense
    got = _closed_by_peer(sock)
    assert got is not None, "the server did not close the connection"
    # long before the 10 s handshake deadline: refused, not timed out
    assert time.monotonic() - started < 5.0
    assert GREETING not in got
    assert not got or got[0] == 0x15  # at most a TLS alert, never an answer in clear
    sock.close()
    with undertow.connect(served.address, tls_ca=tls.ca, timeout=WAIT) as client:
        assert client.echo(1) == 1
        assert tls_socket(client) is not None


@pytest.mark.slow
def test_a_stalled_handshake_holds_up_nobody_and_is_closed_at_its_deadline(tls):
    deadline = 2.0
    server = make_server(tls, tls_handshake_timeout=deadline)
    server.start(plain=TCP)
    try:
        where = ("127.0.0.1", _port(server.plain_address))
        silent = socket.create_connection(where)  # connects, says nothing
        halfway = socket.create_connection(where)  # a record header, then nothing
        halfway.sendall(b"\x16\x03\x01\x02\x00")
        opened = time.monotonic()
        with undertow.connect(server.address, tls_ca=tls.ca, timeout=WAIT) as client:
            assert client.echo(1) == 1
            assert tls_socket(client) is not None
        # served while both handshakes were still pending: the hub waited on neither
        assert time.monotonic() - opened < deadline
        for sock in (silent, halfway):
            assert _closed_by_peer(sock) == b""
            assert time.monotonic() - opened > deadline - 0.5  # closed by the deadline
            sock.close()
    finally:
        server.stop()


def test_the_server_reads_what_tls_decrypted_already(served, tls):
    # two calls in one write: the last record holds the end of the first (large) and the
    # whole second, which the selector cannot see once OpenSSL has decrypted it
    context = client_tls(tls.ca)
    assert context is not None
    raw = socket.create_connection(("127.0.0.1", _port(served.plain_address)))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.settimeout(WAIT)
    sock.sendall(GREETING)
    assert sock.recv(len(GREETING)) == GREETING
    large = b"x" * (300 << 10)
    sock.sendall(_wire(_call_frames(1, large)) + _wire(_call_frames(2, "small")))
    reader = _Reader(None)
    ids: list[int] = []
    while len(ids) < 2:
        while (answer := reader.next_message()) is None:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed the connection"
            reader.feed(chunk)
        ids.append(decode_header(answer[0].buffer).call_id)
    assert ids == [1, 2]
    sock.close()


def test_a_client_reads_what_tls_decrypted_already(tls):
    # a server of our own sends a large message and a small one in one write: the last
    # record holds the end of the first and the whole second, which poll cannot see once
    # the client's read of the first's end has made OpenSSL decrypt it
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    large = os.urandom(300 << 10)

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as sock:
            sock.sendall(GREETING)
            assert sock.recv(len(GREETING)) == GREETING
            sock.sendall(_wire([large]) + _wire([b"second"]))
            sock.recv(1)  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        plain = PlainSocket(f"tls+plain://127.0.0.1:{port}", tls=client_tls(tls.ca))
        first = plain.recv(int(WAIT * 1000))
        second = plain.recv(2000)  # already decrypted: no wait for the network
        assert first is not None
        assert second is not None
        assert [first[0].bytes, second[0].bytes] == [large, b"second"]
        plain.close()
        thread.join(WAIT)
    finally:
        listener.close()


# -- clients that cannot verify keep to ZeroMQ ----------------------------------------------------


@pytest.mark.parametrize("trust", ["no ca", "another ca", "another name"])
def test_a_client_that_cannot_verify_the_server_keeps_to_zeromq(tmp_path, tls, trust, caplog):
    caplog.set_level(logging.INFO, logger=LINK_LOG)
    files = make_tls(tmp_path, "elsewhere.example") if trust == "another name" else tls
    server = make_server(files)
    address = server.start(plain=TCP)
    try:
        ca = {"no ca": None, "another ca": make_tls(tmp_path, "x.example").ca}.get(trust, tls.ca)
        with undertow.connect(address, tls_ca=ca, timeout=WAIT) as client:
            assert client.echo(7) == 7  # answered, over ZeroMQ
            assert client.echo(b"y" * (2 << 20)) == b"y" * (2 << 20)
            assert tls_socket(client) is None
            assert not client._conn.plain.usable()
        said = [r for r in caplog.records if r.name == LINK_LOG]
        if trust == "no ca":
            assert any("no tls_ca" in r.getMessage() for r in said)
        else:
            refused = [r for r in said if r.levelno == logging.WARNING]
            assert len(refused) == 1  # once, however often it is tried
            assert "did not verify" in refused[0].getMessage()
            assert server.plain_address in refused[0].getMessage()
        if trust != "another name":  # none the worse: a client that trusts it uses TLS
            with undertow.connect(address, tls_ca=files.ca, timeout=WAIT) as client:
                assert client.echo(8) == 8
                assert tls_socket(client) is not None
    finally:
        server.stop()


# -- where TLS applies, and bad configurations -----------------------------------------------------


def test_tls_is_on_tcp_only_and_auto_serves_it(tmp_path, tls):
    server = make_server(tls)
    server.start()  # plain="auto": TCP (TLS) and the local Unix socket (in clear, yours alone)
    try:
        assert server.plain_address.startswith("tls+plain://127.0.0.1:")
        assert server.local_address == "" or server.local_address.startswith("unix://")
    finally:
        server.stop()
    server = make_server(tls)
    address = server.start(plain=f"unix://{tmp_path}/t.sock")
    try:
        assert server.plain_address == f"unix://{tmp_path}/t.sock"
        with undertow.connect(address, timeout=WAIT) as client:  # no CA needed
            assert client.echo(1) == 1
            assert client._conn.plain.usable()
    finally:
        server.stop()


@pytest.mark.skipif(not curve_available(), reason="libzmq without CURVE")
def test_curve_and_tls_encrypt_both_transports(tmp_path, tls):
    public, secret = keygen(tmp_path, "server")
    server = make_server(tls, curve_secret=str(secret))
    address = server.start(plain=TCP)  # with TLS, CURVE allows the plain socket
    try:
        assert server.plain_address.startswith("tls+plain://")
        with undertow.connect(
            address, curve_server_key=str(public), tls_ca=tls.ca, timeout=WAIT
        ) as client:
            assert client.echo(1) == 1
            assert tls_socket(client) is not None
        with undertow.connect(address, curve_server_key=str(public), timeout=WAIT) as client:
            assert client.echo(2) == 2  # no CA: all over CURVE
            assert tls_socket(client) is None
    finally:
        server.stop()
    server = make_server(tls, curve_secret=str(secret))
    with pytest.raises(ConfigError, match="in clear"):  # a Unix socket is never TLS
        server.start(plain=f"unix://{tmp_path}/c.sock")


def _encrypted(key: str, path: Path) -> str:
    from cryptography.hazmat.primitives import serialization

    loaded = serialization.load_pem_private_key(Path(key).read_bytes(), None)
    path.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return str(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing cert", r"tls_cert '.*nowhere.pem': no such file; give the PEM file"),
        ("missing key", r"tls_key '.*nowhere.pem': no such file; give the PEM file"),
        ("key of another", "is not the key of the certificate in tls_cert"),
        ("cert not pem", "holds no PEM certificate"),
        ("key not pem", "holds no PEM private key"),
        ("no key anywhere", "holds no private key: give its key file as tls_key"),
        ("key without cert", "tls_key is set .* but tls_cert is not"),
        ("encrypted key", "encrypted with a passphrase"),
    ],
)
def test_bad_certificate_files_are_refused_naming_the_fix(tmp_path, tls, case, message):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    other = make_tls(tmp_path, "other.example")
    nowhere = str(tmp_path / "nowhere.pem")
    options = {
        "missing cert": {"tls_cert": nowhere, "tls_key": tls.key},
        "missing key": {"tls_cert": tls.cert, "tls_key": nowhere},
        "key of another": {"tls_cert": tls.cert, "tls_key": other.key},
        "cert not pem": {"tls_cert": str(junk), "tls_key": tls.key},
        "key not pem": {"tls_cert": tls.cert, "tls_key": str(junk)},
        "no key anywhere": {"tls_cert": tls.cert},
        "key without cert": {"tls_key": tls.key},
        "encrypted key": {"tls_cert": tls.cert, "tls_key": _encrypted(tls.key, tmp_path / "e")},
    }[case]
    with pytest.raises(ConfigError, match=message):
        undertow.Server(name="bad", **options)


def test_bad_client_authorities_are_refused_naming_the_fix(tmp_path, tls, monkeypatch):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    nowhere = "tcp://127.0.0.1:1"  # refused before anything is sent
    with pytest.raises(ConfigError, match=r"tls_ca '.*missing.pem': No such file.*authority"):
        undertow.connect(nowhere, tls_ca=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        undertow.connect(nowhere, tls_ca=junk)
    with pytest.raises(ConfigError, match=r"must be a file's path, an ssl\.SSLContext or False"):
        undertow.connect(nowhere, tls_ca=42)
    monkeypatch.setenv("UNDERTOW_TLS_CA", str(junk))
    with pytest.raises(ConfigError, match=r"\$UNDERTOW_TLS_CA .* holds no PEM certificate"):
        undertow.connect(nowhere)
    with pytest.raises(ConfigError, match="tls_ca does not apply to HTTP addresses"):
        undertow.connect("http://127.0.0.1:1", tls_ca=tls.ca)


def test_a_tls_address_is_never_used_in_clear():
    # a client asked to use a tls+plain:// socket without a context refuses, naming the fix
    with pytest.raises(ConnectError, match="speaks TLS: give the client tls_ca"):
        PlainSocket("tls+plain://127.0.0.1:1")
    # and a server does not listen on tls+plain:// without a certificate
    server = make_server(None)
    with pytest.raises(ConnectError, match="without tls_cert"):
        server.start(plain="tls+plain://127.0.0.1:0")
