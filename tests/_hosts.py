"""Test hosts: Linux network namespaces joined by a bridge, each with an address of its own in
198.18.0.0/24 (the range set aside for benchmark networks: nothing outside the machine is
ever addressed), so that multi-host tests run on separate network stacks.

::

    with Hosts(4) as hosts:                 # needs root (CI has it) and iproute2
        a, b = hosts[0], hosts[1]
        a.address                           # "198.18.0.10"
        proc = a.popen([sys.executable, "-c", "..."])   # a process on host a

The bridge lives in a namespace of its own (the "switch"), not in the machine's: the root
namespace gains no interface, no address and no route, and deleting the namespaces removes
every link with them. Each host also has a name of its own (``host0``, ...: processes run in
a UTS namespace whose host name is set) that every host resolves to its address (an
``/etc/netns/NAME/hosts`` file, which ``ip netns exec`` mounts over ``/etc/hosts``), as
machines on a network with a DNS. Names carry this process's pid, so parallel runs never meet; a run
killed before it cleaned up leaves namespaces that the next run removes (their pid is gone).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ._processes import read_line

SUBNET = "198.18.0"
#: the first host's last octet (the next ones follow)
FIRST = 10
_PREFIX = "ut"


def marks(timeout: float = 120) -> list[Any]:
    """What a module of multi-host tests is marked with: it starts processes, each test has
    ``timeout`` seconds, and it is skipped, saying why, where hosts cannot be made."""
    reason = why_not()
    return [
        pytest.mark.multiproc,
        pytest.mark.timeout(timeout),
        pytest.mark.skipif(reason is not None, reason=str(reason)),
    ]


def why_not() -> str | None:
    """Why test hosts cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed (apt-get install iproute2)"
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    command = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


def _remove_stale() -> None:
    """Namespaces of earlier runs whose process is gone (killed before it cleaned up)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        match = re.match(rf"({_PREFIX}(\d+)[a-z]\w*)", line.strip())
        if match and not os.path.exists(f"/proc/{match.group(2)}"):
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", match.group(1))
            shutil.rmtree(Path("/etc/netns", match.group(1)), ignore_errors=True)


@dataclass
class Host:
    """One test host: a network namespace with one interface on the test network."""

    name: str
    namespace: str
    address: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` as a command line that runs on this host (under its host name)."""
        named = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.name]
        return ["ip", "netns", "exec", self.namespace, *named, *args]

    def popen(self, args: Sequence[str], **options: Any) -> subprocess.Popen[Any]:
        """Start ``args`` on this host (stopped with the hosts, if still running)."""
        proc = subprocess.Popen(self.command(args), **options)
        self.procs.append(proc)
        return proc

    def run(
        self, args: Sequence[str], timeout: float = 30.0, **options: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` on this host to its end (``options``: those of subprocess.run)."""
        return subprocess.run(
            self.command(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **options,
        )


class Hosts:
    """``count`` test hosts on one bridge (see the module's docstring)."""

    def __init__(self, count: int) -> None:
        if not 1 <= count <= 200:
            raise ValueError(f"count={count!r}: between 1 and 200 test hosts")
        self.count = count
        tag = f"{_PREFIX}{os.getpid()}"
        self.switch = f"{tag}sw"
        self.hosts = [Host(f"host{i}", f"{tag}h{i}", f"{SUBNET}.{FIRST + i}") for i in range(count)]

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __enter__(self) -> Hosts:
        _remove_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        names = "".join(f"{h.address} {h.name}\n" for h in self.hosts)
        resolved = f"127.0.0.1 localhost\n::1 localhost\n{names}"
        _ip("netns", "add", self.switch)
        _ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        _ip("link", "set", "br0", "up", ns=self.switch)
        for i, host in enumerate(self.hosts):
            _ip("netns", "add", host.namespace)
            etc = Path("/etc/netns", host.namespace)
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(resolved)
            _ip("link", "set", "lo", "up", ns=host.namespace)
            # a veth pair made in the host's namespace, its other end moved to the switch
            _ip("link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", ns=host.namespace)
            _ip("link", "set", f"p{i}", "netns", self.switch, ns=host.namespace)
            _ip("link", "set", f"p{i}", "master", "br0", ns=self.switch)
            _ip("link", "set", f"p{i}", "up", ns=self.switch)
            _ip("addr", "add", f"{host.address}/24", "dev", "eth0", ns=host.namespace)
            _ip("link", "set", "eth0", "up", ns=host.namespace)

    def cut(self, i: int) -> None:
        """Take host ``i`` off the network (its link on the switch goes down)."""
        _ip("link", "set", f"p{i}", "down", ns=self.switch)

    def mend(self, i: int) -> None:
        """Put host ``i`` back on the network."""
        _ip("link", "set", f"p{i}", "up", ns=self.switch)

    def close(self) -> None:
        """Stop what still runs on the hosts and delete the namespaces (links go with them)."""
        for host in self.hosts:
            for proc in host.procs:
                if proc.poll() is None:
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.communicate(timeout=10)  # (and its pipes closed)
        for namespace in [h.namespace for h in self.hosts] + [self.switch]:
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", namespace)
            shutil.rmtree(Path("/etc/netns", namespace), ignore_errors=True)


#: the password of the Redis servers :func:`start_redis` starts
REDIS_PASSWORD = "multihost-redis-Vq7Lx2Rb9Tn4"


def start_redis(host: Host) -> str:
    """A redis-server on ``host``, bound to its address only, with a password (beyond
    loopback, as in use); its URL."""
    free = host.run([sys.executable, "-c", "import socket; s=socket.socket(); "
                     f"s.bind(('{host.address}', 0)); print(s.getsockname()[1])"])  # fmt: skip
    port = free.stdout.strip()  # the namespace runs nothing else: it stays free
    args = ["redis-server", "--bind", host.address, "--port", port, "--save", "", "--appendonly"]
    args += ["no", "--requirepass", REDIS_PASSWORD]
    proc = host.popen(args, stdout=subprocess.PIPE)
    while "Ready to accept connections" not in read_line(proc, f"redis-server on {host.name}"):
        pass  # (its log: readiness is a line of it; read_line has a deadline)
    return f"redis://:{REDIS_PASSWORD}@{host.address}:{port}/0"
