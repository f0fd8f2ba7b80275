"""Plain sockets (``tcp+plain://``, ``unix://``) next to ZeroMQ: a sync client's blocking
calls go over them when the server serves one, with the same wire format, signatures and
limits; streams and futures stay on ZeroMQ; hostile input is dropped."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import undertow
from undertow.errors import ConfigError, ConnectError, ConnectionLost, MessageTooLarge
from undertow.security import TAG_SIZE, StreamSession, client_key, client_session
from undertow.transport import PlainSocket, shm_sending
from undertow.transport._plain_wire import GREETING, _Reader, pack_message
from undertow.transport._spin import spin_budget
from undertow.wire import Kind, decode_header, pack

TOKEN = "ada.plain-secret-of-enough-length-000"
WAIT = 10.0

pytestmark = pytest.mark.usefixtures("undertow_home")


def make_server(**options: Any) -> undertow.Server:
    server = undertow.Server(name="p", **options)

    @server.register
    def echo(x: Any) -> Any:
        return x

    @server.register
    def shout(text: str) -> str:
        print(f"shouting {text}")
        return text.upper()

    @server.register
    def fail(message: str) -> None:
        raise ValueError(message)

    @server.register
    def nap(seconds: float) -> float:
        time.sleep(seconds)  # the function's work: a slow call, not a wait for readiness
        return seconds

    @server.register
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    return server


@pytest.fixture(params=["tcp", "unix"])
def plain_address(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "tcp":
        return "tcp+plain://127.0.0.1:0"
    return f"unix://{tmp_path}/p.sock"


@pytest.fixture
def served(plain_address: str) -> Iterator[tuple[undertow.Server, str]]:
    server = make_server()
    address = server.start(plain=plain_address)
    yield server, address
    server.stop()


def uses_plain(client: undertow.Client) -> bool:
    plain = client._conn.plain  # type: ignore[attr-defined]
    return plain is not None and bool(plain.usable())


def test_blocking_calls_go_over_the_plain_socket_with_output_and_errors(served, capsys):
    server, address = served
    assert server.plain_address.startswith(("tcp+plain://127.0.0.1:", "unix:///"))
    with undertow.connect(address, timeout=WAIT) as client:
        assert client.echo({"a": [1, 2.5, "x", None]}) == {"a": [1, 2.5, "x", None]}
        assert uses_plain(client)
        assert client.shout("hi") == "HI"
        assert "shouting hi" in capsys.readouterr().out  # remote output, live
        with pytest.raises(ValueError, match="no good"):
            client.fail("no good")
        big = os.urandom(3 << 20)  # larger than one read: the body is read to its end
        assert client.echo(big) == big
        # generators and futures stay on ZeroMQ, next to it
        assert list(client.count(5)) == [0, 1, 2, 3, 4]
        assert client.echo.submit(7).result(WAIT) == 7


def test_each_thread_has_its_own_connection(served):
    _, address = served
    with undertow.connect(address, timeout=WAIT) as client:
        results: list[Any] = []

        def work(k: int) -> None:
            results.extend(client.echo(k * 1000 + i) for i in range(200))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert sorted(results) == sorted(k * 1000 + i for k in range(4) for i in range(200))


def test_a_deadline_cancels_the_call_and_the_connection_goes_on(served):
    _, address = served
    with undertow.connect(address, timeout=WAIT) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="nap"):
            client.nap.options(timeout=0.2)(1.0)
        assert time.monotonic() - started < 0.9
        assert client.echo("after") == "after"  # the late answer is dropped, not taken


def test_signed_calls_over_the_plain_socket(plain_address):
    server = make_server(token=TOKEN)
    address = server.start(plain=plain_address)
    try:
        with undertow.connect(address, token=TOKEN, timeout=WAIT) as client:
            assert client.echo(5) == 5
            assert uses_plain(client)
            link: Any = client._conn.plain
            assert link._local.sock.session is not None  # the connection checks, no envelope
        # unsigned: refused over the plain socket as over ZeroMQ, naming the fix
        with pytest.raises(Exception, match="requires authentication"):
            undertow.connect(address, token=False, timeout=WAIT)
        raw = PlainSocket(server.plain_address)
        raw.send([b"\x00not a header"])
        # an unsigned message is refused before anything in it is read, as over ZeroMQ
        answer = raw.recv(int(WAIT * 1000))
        assert answer is not None
        assert decode_header(answer[0].buffer).kind == Kind.ERROR
        raw.close()
        with undertow.connect(address, token=TOKEN, timeout=WAIT) as client:
            assert client.echo(6) == 6
    finally:
        server.stop()


def _raw(address: str) -> socket.socket:
    if address.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address[len("unix://") :])
    else:
        host, port = address[len("tcp+plain://") :].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
    sock.settimeout(WAIT)
    assert sock.recv(len(GREETING)) == GREETING
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    "attack",
    ["wrong greeting", "too many frames", "zero frames", "over the size limit", "stalls"],
)
def test_hostile_input_drops_that_connection_only(plain_address, attack):
    server = make_server(max_message_size=1 << 20)
    address = server.start(plain=plain_address)
    try:
        sock = _raw(server.plain_address)
        if attack == "wrong greeting":
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        else:
            sock.sendall(GREETING)
            if attack == "too many frames":
                sock.sendall(struct.pack(">I", 70_000))
            elif attack == "zero frames":
                sock.sendall(struct.pack(">I", 0))
            elif attack == "over the size limit":  # announced, never allocated
                sock.sendall(struct.pack(">IQ", 1, 1 << 40))
            else:  # a large message that stops after its head: it holds a buffer, no thread
                sock.sendall(struct.pack(">IQ", 1, 512 << 10) + b"x" * 1000)
        if attack != "stalls":
            assert _closed_by_peer(sock)
        with undertow.connect(address, timeout=WAIT) as client:  # everyone else goes on
            assert client.echo(1) == 1
            assert uses_plain(client)
        sock.close()
    finally:
        server.stop()


def test_a_message_over_the_servers_limit_is_refused_before_it_is_sent(plain_address):
    server = make_server(max_message_size=1 << 20)
    address = server.start(plain=plain_address)
    try:
        with undertow.connect(address, timeout=WAIT) as client:
            assert client.echo(b"x" * 1000) == b"x" * 1000
            with pytest.raises(MessageTooLarge, match="nothing was sent"):
                client.echo(b"x" * (2 << 20))
            assert client.echo(2) == 2
    finally:
        server.stop()


def test_the_unix_socket_is_its_users_alone_and_removed_on_stop(tmp_path):
    path = tmp_path / "own.sock"
    server = make_server()
    server.start(plain=f"unix://{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    server.stop()
    assert not path.exists()


def test_an_unreachable_plain_socket_leaves_calls_on_zeromq(tmp_path):
    path = tmp_path / "gone.sock"
    server = make_server()
    address = server.start(plain=f"unix://{path}")
    try:
        os.unlink(path)  # the file is gone: the client cannot reach it
        with undertow.connect(address, timeout=WAIT) as client:
            assert client.echo(3) == 3
            assert not uses_plain(client)
    finally:
        server.stop()


def test_plain_sockets_and_curve_do_not_mix(tmp_path):
    from undertow.transport import keygen

    _, secret = keygen(tmp_path, "server")
    server = make_server(curve_secret=str(secret))
    with pytest.raises(ConfigError, match="in clear"):
        server.start(plain=f"unix://{tmp_path}/c.sock")


def test_a_plain_socket_beyond_loopback_needs_tokens():
    server = make_server()
    with pytest.raises(ConfigError, match="without authentication"):
        server.start(plain="tcp+plain://0.0.0.0:0")


def test_servers_serve_a_plain_socket_by_default_on_their_interface():
    server = make_server()
    address = server.start()
    try:
        assert server.plain_address.startswith("tcp+plain://127.0.0.1:")
        with undertow.connect(address, timeout=WAIT) as client:
            assert client.echo(1) == 1
            assert uses_plain(client)
    finally:
        server.stop()


def test_the_plain_setting_turns_it_off_and_ipc_or_curve_have_none_by_default(
    monkeypatch, tmp_path
):
    from undertow.transport import keygen

    monkeypatch.setenv("UNDERTOW_PLAIN", "none")
    server = make_server()
    server.start()
    assert server.plain_address == ""
    server.stop()
    monkeypatch.delenv("UNDERTOW_PLAIN")
    server = make_server()
    server.start(f"ipc://{tmp_path}/z.ipc")  # auto: TCP beside TCP only
    assert server.plain_address == ""
    server.stop()
    _, secret = keygen(tmp_path, "server")
    server = make_server(curve_secret=str(secret))
    server.start()  # auto with CURVE: no plain socket, and no complaint
    assert server.plain_address == ""
    server.stop()
    monkeypatch.setenv("UNDERTOW_PLAIN", "udp://nope")
    with pytest.raises(ConfigError, match="tcp\\+plain://host:port"):
        make_server()


def test_a_unix_path_that_is_a_file_is_never_removed(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    server = make_server()
    with pytest.raises(ConnectError, match="cannot listen"):
        server.start(plain=f"unix://{path}")
    assert path.read_text() == "mine"


# -- signed connections: a handshake, then a tag on every message ------------------------


def _signed_raw(address: str, token: str) -> tuple[socket.socket, StreamSession]:
    """A connection that did the handshake by hand: the socket and its session."""
    sock = _raw(address)
    sock.sendall(GREETING)
    key = client_key(token)
    hello, finish = client_session(key.key_id, key.secret)
    sock.sendall(pack_message(hello)[0])
    reader = _Reader(None)
    while (answer := reader.next_message()) is None:
        reader.feed(sock.recv(65536))
    return sock, finish([frame.bytes for frame in answer])


def _call_frames(call_id: int) -> list[bytes]:
    body = msgspec.msgpack.encode([[7], {}])
    return pack(Kind.CALL, call_id, [body], name="echo", codec="msgpack")


def _tagged(session: StreamSession, frames: list[bytes]) -> bytes:
    wire: bytes = pack_message(frames)[0]
    return wire + session.tag([wire])


def test_a_token_signs_the_connection_and_its_messages_carry_no_envelope(plain_address):
    # (a client's own: test_signed_calls_over_the_plain_socket)
    server = make_server(token=TOKEN)
    server.start(plain=plain_address)
    try:
        # by hand: a good message is answered, and the answer's tag checks
        sock, session = _signed_raw(server.plain_address, TOKEN)
        sock.sendall(_tagged(session, _call_frames(1)))
        reader = _Reader(None)
        reader.sign(session)
        while (answer := reader.next_message()) is None:
            reader.feed(sock.recv(65536))
        header = decode_header(answer[0].buffer)
        assert (header.kind, header.call_id) == (Kind.RESULT, 1)
        sock.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "attack", ["changed byte", "no tag", "replayed", "from another connection"]
)
def test_a_message_whose_tag_fails_closes_its_connection_unanswered(plain_address, attack):
    server = make_server(token=TOKEN)
    server.start(plain=plain_address)
    try:
        sock, session = _signed_raw(server.plain_address, TOKEN)
        good = _tagged(session, _call_frames(1))
        if attack == "changed byte":
            bad = bytearray(good)
            bad[-TAG_SIZE - 3] ^= 1  # in the body: the echoed value
            sock.sendall(bytes(bad))
        elif attack == "no tag":
            sock.sendall(good[:-TAG_SIZE] + pack_message(_call_frames(2))[0])
        elif attack == "replayed":
            sock.sendall(good)
            reader = _Reader(None)
            reader.sign(session)
            while reader.next_message() is None:  # answered
                reader.feed(sock.recv(65536))
            sock.sendall(good)  # the same bytes again count as message 2: its tag fails
        else:  # a message recorded on one connection, played on another
            other, _ = _signed_raw(server.plain_address, TOKEN)
            other.sendall(good)
            assert _closed_by_peer(other)
            other.close()
            sock.close()
            return
        assert _closed_by_peer(sock)  # and nothing was answered
        sock.close()
    finally:
        server.stop()


def test_a_handshake_the_server_cannot_take_leaves_calls_on_zeromq(plain_address):
    # a key the server does not know: refused, and the client says why over ZeroMQ
    server = make_server(token=TOKEN)
    server.start(plain=plain_address)
    try:
        with pytest.raises(ConnectError, match="refused the signed connection: unknown key"):
            PlainSocket(server.plain_address, key=client_key("bob.another-secret-of-enough-length"))
        # the right key id with another secret: the server's proof does not match
        with pytest.raises(ConnectError, match="does not hold the secret of key 'ada'"):
            PlainSocket(server.plain_address, key=client_key("ada.not-the-secret-the-server-has"))
    finally:
        server.stop()
    # a server that authenticates nobody refuses the handshake; the client falls back to
    # ZeroMQ, which tells it that the answers come unsigned
    server = make_server()
    address = server.start(plain=plain_address)
    try:
        with pytest.raises(ConnectError, match="refused the signed connection"):
            PlainSocket(server.plain_address, key=client_key(TOKEN))
        with pytest.raises(Exception, match="without a signature"):
            undertow.connect(address, token=TOKEN, timeout=WAIT)
    finally:
        server.stop()


def test_a_withdrawn_key_ends_the_trust_in_its_open_connections(plain_address, monkeypatch):
    from undertow.security import SigningKey
    from undertow.transport import _plain_hub

    class Keys:
        def __init__(self) -> None:
            key = client_key(TOKEN)
            self.keys = {key.key_id: SigningKey("ada", key.key_id, key.secret)}

        def signing_key(self, key_id: str) -> SigningKey | None:
            return self.keys.get(key_id)

        def authenticate(self, credential: str) -> str | None:
            return None

    monkeypatch.setattr(_plain_hub, "RECHECK", 0.0)
    keys = Keys()
    server = make_server(auth=keys)
    address = server.start(plain=plain_address)
    try:
        with undertow.connect(address, token=TOKEN, timeout=WAIT) as client:
            assert client.echo(1) == 1
            assert uses_plain(client)
            keys.keys.clear()
            with pytest.raises(Exception, match="requires authentication"):
                client.echo(2)
    finally:
        server.stop()


# -- spinning before sleeping: bounded, and only where it pays -----------------------------


def test_the_spin_budget_comes_from_the_setting_and_the_cpus():
    assert spin_budget(None, 2) == pytest.approx(300e-6)  # the default
    assert spin_budget(" 50 ", 8) == pytest.approx(50e-6)
    assert spin_budget("0", 8) == 0.0  # off
    assert spin_budget("300", 1) == 0.0  # one CPU: the server needs it
    assert spin_budget("1e9", 4) == pytest.approx(0.01)  # capped at 10 ms
    with pytest.warns(UserWarning, match="UNDERTOW_SPIN_US='soon' is not a number"):
        assert spin_budget("soon", 2) == pytest.approx(300e-6)


def test_a_client_waiting_on_a_slow_call_spins_once_then_sleeps(served, monkeypatch):
    from undertow.transport import _spin

    monkeypatch.setattr(_spin._spin, "budget", 0.02)  # 20 ms: far shorter than the calls
    _, address = served
    with undertow.connect(address, timeout=WAIT) as client:
        assert client.echo(1) == 1
        assert uses_plain(client)
        sock = client._conn.plain._local.sock
        assert sock._spinner.misses == 0  # quick answers: it spins on every wait
        # a slow call: the wait spins 20 ms without an answer, counts a miss, and from then
        # on the socket's waits sleep at once, all but one in eight (each 100 ms slice of a
        # wait counts as one)
        client.nap(0.1)
        misses = sock._spinner.misses
        assert misses >= 1
        client.nap(0.05)
        assert sock._spinner.misses > misses
        # quick answers again: one wait in eight spins (when no other thread of the process,
        # such as this in-process server's, is spinning), gets the answer in time, and from
        # then on every wait spins
        for _ in range(200):
            client.echo(2)
            if sock._spinner.misses == 0:
                break
        assert sock._spinner.misses == 0


def test_an_idle_server_does_not_spin(served, monkeypatch):
    from undertow.transport import _spin

    monkeypatch.setattr(_spin._spin, "budget", 0.02)
    _, address = served
    with undertow.connect(address, timeout=WAIT) as client:
        for _ in range(20):
            assert client.echo(1) == 1
        # no more calls: the server spins its 20 ms once, then sleeps in select
        started = time.process_time()  # this process: the server's threads and the test's
        time.sleep(0.5)  # a window to measure CPU in, not a wait for readiness
        assert time.process_time() - started < 0.1


def test_a_client_follows_a_restarted_server_to_its_new_plain_port():
    from tests._waiting import wait_until

    server = make_server()
    address = server.start("tcp://127.0.0.1:0")
    old_plain = server.plain_address
    try:
        with undertow.connect(address, timeout=WAIT) as client:
            assert client.echo(1) == 1
            assert uses_plain(client)
            server.stop()
            server = make_server()
            server.start(address)  # the same ZeroMQ address; the plain port is a new one
            assert server.plain_address != old_plain
            # a call sent within 50 ms of the old server closing its connection finds it gone
            # (not looked at between calls so close together): it may or may not have run
            with contextlib.suppress(ConnectionLost):
                client.echo(2)
            assert client.echo(2) == 2  # over ZeroMQ, while the client describes it again
            conn: Any = client._conn
            # this host: its Unix socket where large values go through shared memory
            now = server.local_address if shm_sending() else server.plain_address
            assert wait_until(lambda: conn.plain.address == now, WAIT)
            assert client.echo(3) == 3
            assert uses_plain(client)
    finally:
        server.stop()


_LOW_FD_SERVER = """
import resource, sys, undertow
server = undertow.Server(name="fd")

@server.register
def echo(x):
    return x

address = server.start("tcp://127.0.0.1:0")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
print(address, server.plain_address, flush=True)
sys.stdin.read()
server.stop()
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc for CPU time")
def test_a_server_out_of_descriptors_waits_instead_of_spinning(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", _LOW_FD_SERVER, "64"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "UNDERTOW_HOME": str(tmp_path), "UNDERTOW_SPIN_US": "0"},
    )
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        address, plain = proc.stdout.readline().split()
        host, port = plain[len("tcp+plain://") :].rsplit(":", 1)
        # more connections than the server has descriptors for
        socks.extend(socket.create_connection((host, int(port)), timeout=WAIT) for _ in range(80))
        before = _cpu_seconds(proc.pid)
        time.sleep(0.5)  # a window to measure the server's CPU in, not a wait for readiness
        assert _cpu_seconds(proc.pid) - before < 0.2  # not round and round on the listener
        for sock in socks:
            sock.close()
        socks.clear()
        with undertow.connect(address, timeout=WAIT) as client:
            assert client.echo(7) == 7  # accepting again
    finally:
        for sock in socks:
            sock.close()
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        proc.wait(WAIT)
        proc.stdout.close()


def test_plain_none_serves_no_plain_socket(monkeypatch):
    server = make_server()
    address = server.start("tcp://127.0.0.1:0", plain="none")
    try:
        assert server.plain_address == ""
        with undertow.connect(address, timeout=WAIT) as client:
            assert client.echo(1) == 1
            assert not uses_plain(client)
    finally:
        server.stop()
    monkeypatch.setenv("UNDERTOW_PLAIN", "none")  # the setting says the same
    server = make_server()
    server.start("tcp://127.0.0.1:0")
    try:
        assert server.plain_address == ""
    finally:
        server.stop()
