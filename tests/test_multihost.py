"""Several hosts on separate network stacks (tests/_hosts.py: network namespaces on a bridge,
198.18.0.0/24): Redis on one, services on others, clients on another, each bound to its own
address with tokens. Needs root (CI runs as root); skipped elsewhere, saying why."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._hosts import REDIS_PASSWORD, Host, Hosts, marks, start_redis
from ._processes import read_line

pytestmark = marks()

TOKEN = "multihost.k8Jd2nQ4rT7wY1xZ5vB9mC3pL6sF0gH2"

#: a TCP echo listener: binds the address given (port 0) and says where it listens
LISTENER = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen()
print(f"listening {s.getsockname()[1]}", flush=True)
while True:
    c, _ = s.accept(); c.sendall(c.recv(100)); c.close()
"""

#: connects to host:port, sends a word and prints what comes back (or the error's name)
PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as c:
        c.sendall(b"hello"); print(c.recv(100).decode())
except OSError as exc:
    print(type(exc).__name__)
"""

SERVICE = """
from undertow.service import Expose

@Expose()
class Where:
    @Expose()
    def hello(self, who: str) -> str:
        return f"hello {who}"
"""

CLIENT = """
import sys, undertow
with undertow.connect("Where", backend=sys.argv[1], token=sys.argv[2]) as where:
    print(where.hello("from host3"), flush=True)
"""


#: a data node: ``make(rows)`` leaves a rows x 4 array of float64 here (a pointer comes
#: back), ``total(a)`` sums an array (a pointer's value is fetched from its owner)
NODE = """
import sys, numpy as np, undertow
name, host, data, token = sys.argv[1:5]
server = undertow.Server(name, data_dir=data, token=token)

@server.register
def make(rows):
    return np.arange(rows * 4, dtype=np.float64).reshape(rows, 4)

@server.register
def total(a):
    return float(np.asarray(a).sum())

server.config({"make": {"return_pointer": True}})
server.serve_forever(host, 0)
"""

#: on the client's host: a pointer made on one node, summed on the other; what crossed this
#: host's interface meanwhile, in bytes
PASS_ON = """
import sys, undertow
def moved():
    for line in open("/proc/net/dev"):
        if line.strip().startswith("eth0:"):
            fields = line.split(":", 1)[1].split()
            return int(fields[0]) + int(fields[8])
owner, other, token, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with undertow.connect(owner, token=token) as a, undertow.connect(other, token=token) as b:
    ptr = a.make(rows)
    before = moved()
    total = b.total(ptr)
    print(total, moved() - before, flush=True)
"""

#: a 32 MB array (rows x 4 float64)
ROWS = 1_000_000


def _received(host: Host) -> int:
    """Bytes that reached ``host``'s interface so far."""
    dev = host.run(["cat", "/proc/net/dev"]).stdout
    line = next(x for x in dev.splitlines() if x.strip().startswith("eth0:"))
    return int(line.split(":", 1)[1].split()[0])


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    with Hosts(4) as made:
        yield made


def _listen(host: Host, address: str) -> int:
    proc = host.popen([sys.executable, "-c", LISTENER, address], stdout=subprocess.PIPE)
    return int(read_line(proc, f"a listener on {host.name}").split()[1])


def _probe(host: Host, address: str, port: int) -> str:
    done = host.run([sys.executable, "-c", PROBE, address, str(port)])
    return done.stdout.strip() or done.stderr.strip()


def test_hosts_reach_each_other_by_their_addresses_only(hosts: Hosts) -> None:
    port = _listen(hosts[0], hosts[0].address)
    assert _probe(hosts[2], hosts[0].address, port) == "hello"  # across the bridge
    own = _listen(hosts[0], "127.0.0.1")  # each host has a loopback of its own
    assert _probe(hosts[0], "127.0.0.1", own) == "hello"
    assert _probe(hosts[1], "127.0.0.1", own) == "ConnectionRefusedError"
    names = "import socket; print(socket.gethostname(), socket.gethostbyname('host0'))"
    assert hosts[1].run([sys.executable, "-c", names]).stdout.split() == ["host1", hosts[0].address]
    mine = "from undertow._util import interface_addresses as a; print(*a())"
    assert hosts[1].run([sys.executable, "-c", mine]).stdout.split() == [hosts[1].address]
    hosts.cut(0)
    try:  # off the network: nothing reaches it
        assert _probe(hosts[2], hosts[0].address, port) in ("TimeoutError", "OSError")
    finally:
        hosts.mend(0)
    assert _probe(hosts[2], hosts[0].address, port) == "hello"


def test_a_service_on_one_host_is_called_from_another_found_through_redis_on_a_third(
    hosts: Hosts, tmp_path: Path
) -> None:
    url = start_redis(hosts[0])
    service = tmp_path / "where.py"
    service.write_text(textwrap.dedent(SERVICE))
    server = hosts[1].popen(
        [sys.executable, "-m", "undertow.cli", "serve", str(service), "--host", hosts[1].address,
         "--backend", url, "--token", TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    ready = read_line(server, "the service on host1")
    assert f"tcp://{hosts[1].address}:" in ready, ready  # its own address, never 0.0.0.0
    assert REDIS_PASSWORD not in ready  # the registry's URL is shown without its password
    client = hosts[3].run([sys.executable, "-c", CLIENT, url, TOKEN], timeout=60)
    assert client.stdout.strip() == "hello from host3", client.stderr[-2000:]
    wrong = hosts[2].run([sys.executable, "-c", CLIENT, url, "not-" + TOKEN], timeout=60)
    assert "hello" not in wrong.stdout
    assert "AuthenticationError" in wrong.stderr or "token" in wrong.stderr.lower()


def _node(host: Host, name: str, data: Path) -> str:
    proc = host.popen(
        [sys.executable, "-c", NODE, name, host.address, str(data), TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return read_line(proc, f"node {name} on {host.name}").rsplit(" ", 1)[-1]


def test_a_pointer_passed_on_is_fetched_host_to_host_not_through_the_client(
    hosts: Hosts, tmp_path: Path
) -> None:
    owner = _node(hosts[1], "owner", tmp_path / "owner")
    other = _node(hosts[2], "other", tmp_path / "other")
    assert owner.startswith(f"tcp://{hosts[1].address}:")  # its own address, not 0.0.0.0
    payload = ROWS * 4 * 8
    before = _received(hosts[2])
    done = hosts[3].run([sys.executable, "-c", PASS_ON, owner, other, TOKEN, str(ROWS)], 60)
    assert done.returncode == 0, done.stderr[-2000:]
    total, through_client = done.stdout.split()
    assert float(total) == float(sum(range(ROWS * 4)))
    assert int(through_client) < payload // 100, f"{int(through_client):,} bytes via the client"
    assert _received(hosts[2]) - before > payload  # the value reached host2 straight from host1


KILLED = """
import sys, time, undertow
owner, other, token = sys.argv[1], sys.argv[2], sys.argv[3]
with undertow.connect(owner, token=token) as a, undertow.connect(other, token=token) as b:
    ptr = a.make(10)
    print("made", ptr.key, flush=True)
    sys.stdin.readline()  # the owner is killed or cut off meanwhile
    start = time.monotonic()
    try:
        b.total(ptr)
        print("answered")
    except Exception as exc:
        print(f"{time.monotonic() - start:.2f}", type(exc).__name__, exc, flush=True)
"""


@pytest.mark.parametrize("how", ["killed", "cut off"])
def test_a_call_needing_a_lost_data_servers_value_fails_fast_naming_key_and_host(
    hosts: Hosts, tmp_path: Path, how: str
) -> None:
    owner_proc = hosts[1].popen(
        [sys.executable, "-c", NODE, "doomed", hosts[1].address, str(tmp_path / "d"), TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    owner = read_line(owner_proc, "the doomed node").rsplit(" ", 1)[-1]
    other = _node(hosts[2], "survivor", tmp_path / "s")
    client = hosts[3].popen(
        [sys.executable, "-c", KILLED, owner, other, TOKEN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    key = read_line(client, "the client").split()[1]
    if how == "killed":
        owner_proc.kill()
        owner_proc.wait(10)
    else:  # its host off the network: nothing answers, nothing refuses
        hosts.cut(1)
    try:
        assert client.stdin is not None
        client.stdin.write(b"go\n")
        client.stdin.flush()
        said = read_line(client, "the client", timeout=60)
    finally:
        hosts.mend(1)
        owner_proc.kill()
    seconds, kind = said.split()[:2]
    assert float(seconds) < 3.0, said
    assert kind == "DataUnavailable", said  # a LookupError naming the key and its server
    assert key in said, said
    assert hosts[1].address in said, said
