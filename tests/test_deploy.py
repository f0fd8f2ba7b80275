"""``undertow up`` / ``undertow down`` against real sshds, one in each test host's network
namespace (tests/_hosts.py, tests/_sshd.py): Redis on host0, a service on host1, a data server
and a worker on host2, run from host3. Needs root and OpenSSH's server; skipped elsewhere,
saying why."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import undertow
from undertow.deploy._agent import alive

from . import _hosts, _sshd
from ._hosts import Host, Hosts
from ._sshd import Sshd, client_key

pytestmark = [
    *_hosts.marks(),
    pytest.mark.skipif(_sshd.why_not() is not None, reason=str(_sshd.why_not())),
]

SERVICE = """
import socket
from undertow.service import Expose

@Expose()
class Where:
    @Expose()
    def hello(self, who: str) -> str:
        return f"hello {who} from {socket.gethostname()}"
"""

JOBS = """
import socket

def square(x):
    return [x * x, socket.gethostname()]
"""

#: on the client's host: the service by name, and a job by name on the queue
CLIENT = """
import undertow
from undertow.queue import JobQueue
with undertow.connect("Where") as where:
    print(where.hello("host3"), flush=True)
with JobQueue() as jobs:
    print(*jobs.submit("square", 7).result(timeout=30), flush=True)
"""

_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except OSError as exc:
    print(type(exc).__name__)
"""


@dataclass
class Setup:
    hosts: Hosts
    sshds: list[Sshd]
    directory: Path
    key: Path
    known_hosts: Path

    @property
    def client(self) -> Host:
        return self.hosts[3]

    def toml(
        self,
        name: str,
        *,
        pythons: dict[int, str] | None = None,
        timeout: float = 5,
        target: str = "where.py",
    ) -> Path:
        """A cluster.toml for cluster ``name`` (its own run directories)."""
        lines = [
            f'[cluster]\nname = "{name}"\nrun_dir = "{self.directory / "runs"}"',
            "ready_timeout = 30\nstop_timeout = 5",
            f'[ssh]\nidentity = "{self.key}"\nknown_hosts = "{self.known_hosts}"',
            f"connect_timeout = {timeout}",
        ]
        for i, sshd in enumerate(self.sshds):
            python = (pythons or {}).get(i, sys.executable)
            lines += [
                f'[hosts.{sshd.host.name}]\naddress = "{sshd.host.address}"',
                f'ssh_port = {sshd.port}\npython = "{python}"\nworkdir = "{self.directory}"',
            ]
        lines += [
            '[redis]\nhost = "host0"',
            f'[[serve]]\nhost = "host1"\ntargets = ["{target}"]',
            '[[data]]\nhost = "host2"',
            '[[worker]]\nhost = "host2"\nmodules = ["deployjobs"]\nconcurrency = 2',
            '[groups]\ncrunch = ["host2"]',
        ]
        path = self.directory / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def undertow(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``undertow ARGS`` on the client's host."""
        return self.client.run([sys.executable, "-m", "undertow.cli", *args], timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("deploy")
    (directory / "where.py").write_text(textwrap.dedent(SERVICE))
    (directory / "deployjobs.py").write_text(textwrap.dedent(JOBS))
    key = client_key(directory / "client")
    with Hosts(4) as hosts:
        sshds = [Sshd.start(hosts[i], directory / f"sshd{i}", key) for i in range(3)]
        known = directory / "known_hosts"
        known.write_text("".join(s.known_hosts_line() for s in sshds))
        try:
            yield Setup(hosts, sshds, directory, key, known)
        finally:
            _kill_leftovers(directory / "runs")
            for sshd in sshds:
                sshd.stop()


def _kill_leftovers(runs: Path) -> None:
    """Kill what a failed test left running (detached: no host's child, it would outlive
    the namespaces)."""
    for state in runs.glob("*/*/procs.json"):
        for entry in json.loads(state.read_text()):
            if alive(entry):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(entry["pid"], signal.SIGKILL)


def _pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"\(pid (\d+)[,)]", output)]


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _probe(host: Host, address: str, port: int) -> str:
    return host.run([sys.executable, "-c", _PROBE, address, str(port)]).stdout.strip()


def _secrets(client: Path) -> list[str]:
    """The secret parts of the tokens and the Redis password ``up`` made."""
    tokens = [line.split(".", 1)[1] for line in (client / "tokens").read_text().split()]
    password = re.match(r"redis://:([^@]+)@", (client / "backend").read_text())
    assert password is not None
    return [*tokens, password.group(1)]


def _ps() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


def test_up_starts_the_cluster_over_ssh_and_down_stops_it_all(setup: Setup) -> None:
    toml = setup.toml("lab")
    up = setup.undertow("up", str(toml))
    assert up.returncode == 0, up.stdout + up.stderr
    client = setup.directory / "runs" / "lab" / "client"
    env = [
        "env",
        f"UNDERTOW_HOME={client}",
        f"UNDERTOW_BACKEND={(client / 'backend').read_text().strip()}",
    ]
    called = setup.client.run([*env, sys.executable, "-c", CLIENT], timeout=60)
    assert called.returncode == 0, called.stderr[-3000:]
    assert called.stdout.split("\n")[:2] == ["hello host3 from host1", "49 host2"]

    group = setup.client.run(
        [*env, sys.executable, "-m", "undertow.cli", "group", "show", "crunch", "--json"]
    )
    assert json.loads(group.stdout)["hosts"] == ["host2"], group.stderr  # made by `up`

    service = re.search(r"serving on tcp://([\d.]+):(\d+)", up.stdout)
    assert service is not None, up.stdout
    assert service.group(1) == setup.hosts[1].address  # its host's own address, never 0.0.0.0
    secrets = _secrets(client)
    for secret in secrets:  # neither in what `up` said nor on any command line
        assert secret not in up.stdout + up.stderr
        assert secret not in _ps()
    assert oct((client / "tokens").stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in (client / "curve").iterdir()) == ["host1.key", "host2.key"]

    again = setup.undertow("up", str(toml))  # up twice: refused, the cluster left as it was
    assert again.returncode != 0
    assert "already up" in again.stderr, again.stderr
    assert "undertow down" in again.stderr

    pids = _pids(up.stdout)
    assert len(pids) == 4, up.stdout  # redis, serve-0, data-0, worker-0
    assert all(_running(pid) for pid in pids)
    down = setup.undertow("down", str(toml))
    assert down.returncode == 0, down.stdout + down.stderr
    assert sorted(_pids(down.stdout)) == sorted(pids), down.stdout
    assert not any(_running(pid) for pid in pids)
    assert _probe(setup.client, service.group(1), int(service.group(2))) == "ConnectionRefusedError"
    assert _probe(setup.client, setup.hosts[0].address, 6379) == "ConnectionRefusedError"
    assert not (setup.directory / "runs" / "lab" / "host0" / "tokens").exists()
    logs = "".join(p.read_text() for p in (setup.directory / "runs" / "lab").glob("*/logs/*.log"))
    assert "serving on" in logs
    assert not [secret for secret in secrets if secret in logs]  # nor in the processes' logs


def _other_undertow(directory: Path, version: str) -> Path:
    """A venv whose Python imports a copy of undertow with another ``__version__`` (its
    dependencies from this venv, through a .pth file): a host where another release is
    installed. Its python's path."""
    venv = directory / "other-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    package = Path(purelib) / "undertow"
    shutil.copytree(
        Path(undertow.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
    )
    init = package / "__init__.py"
    init.write_text(
        init.read_text().replace(
            f'__version__ = "{undertow.__version__}"', f'__version__ = "{version}"'
        )
    )
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_up_refuses_a_host_with_another_undertow_and_starts_nothing(setup: Setup) -> None:
    python = _other_undertow(setup.directory, "0.0.9")
    missing = setup.directory / "no-venv" / "bin" / "python"
    toml = setup.toml("pinned", pythons={1: str(python), 2: str(missing)})
    up = setup.undertow("up", str(toml))
    assert up.returncode != 0
    said = up.stderr
    assert "nothing was started" in said, said
    assert "host host1" in said, said
    assert "undertow 0.0.9" in said
    assert f"undertow {undertow.__version__}" in said
    assert "hosts.host1.python" in said  # the fix
    assert (
        f"host host2 ({setup.hosts[2].address}:{setup.sshds[2].port}): checking its Python failed"
        in said
    )
    assert "set hosts.host2.python to the path of its Python" in said
    assert not (setup.directory / "runs" / "pinned" / "host0" / "procs.json").exists()


def test_up_fails_fast_naming_a_host_it_cannot_reach(setup: Setup) -> None:
    toml = setup.toml("cut", timeout=2)
    setup.hosts.cut(2)
    try:
        started = time.monotonic()
        up = setup.undertow("up", str(toml))
        took = time.monotonic() - started
    finally:
        setup.hosts.mend(2)
    assert up.returncode != 0
    assert "host host2" in up.stderr, up.stderr
    assert "nothing was started" in up.stderr
    assert took < 15, f"{took:.1f} s"
    assert not (setup.directory / "runs" / "cut" / "host0" / "procs.json").exists()


def test_a_process_that_fails_shows_its_log_and_up_stops_what_it_started(setup: Setup) -> None:
    toml = setup.toml("broken", target="nosuch.py")
    up = setup.undertow("up", str(toml))
    assert up.returncode != 0
    assert "host host1: serve-0" in up.stderr, up.stderr
    assert "nosuch.py" in up.stderr  # the end of its log
    assert re.search(r"\(cleaning up\) host0: stopped redis \(pid \d+, SIGTERM\)", up.stdout)
    assert not any(_running(pid) for pid in _pids(up.stdout))
    assert _probe(setup.client, setup.hosts[0].address, 6379) == "ConnectionRefusedError"
