"""A real OpenSSH server on a test host (tests/_hosts.py), for ``undertow up``'s tests.

::

    key = client_key(tmp_path)                      # an ed25519 key pair for the client
    server = Sshd.start(hosts[0], tmp_path / "h0", key)
    server.port                                     # a port found free inside host0
    server.known_hosts_line()                       # "[198.18.0.10]:40123 ssh-ed25519 AAAA..."

Each server has a host key and a configuration of its own in the test's directory, accepts
that one client key (root's login: ``PermitRootLogin prohibit-password``), listens on its
host's address only, and is ready when it says "Server listening on" (``sshd -e`` logs to
stderr). The hosts share the file system, so ``StrictModes`` is off: the test's directories
sit under the world-writable /tmp.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ._hosts import Host
from ._processes import read_line

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

_FREE_PORT = (
    "import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])"
)


def why_not() -> str | None:
    """Why an sshd cannot be started here (None: it can)."""
    if not Path(SSHD).exists():
        return "OpenSSH's server is not installed (apt-get install openssh-server)"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "OpenSSH's client is not installed (apt-get install openssh-client)"
    return None


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "undertow-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def client_key(directory: Path) -> Path:
    """A fresh ed25519 key pair in ``directory``; the private key's path (``.pub`` beside)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    _keygen(key)
    return key


@dataclass
class Sshd:
    """An sshd running on ``host``."""

    host: Host
    port: int
    host_key: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, host: Host, directory: Path, client: Path) -> Sshd:
        """Start an sshd on ``host`` that accepts the key ``client``; once it listens."""
        directory.mkdir(parents=True, exist_ok=True)
        host_key = directory / "host_key"
        _keygen(host_key)
        free = host.run([sys.executable, "-c", _FREE_PORT, host.address])
        port = int(free.stdout)  # the namespace runs nothing else: it stays free
        config = directory / "sshd_config"
        config.write_text(
            "\n".join([
                f"Port {port}",
                f"ListenAddress {host.address}",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {client}.pub",
                f"PidFile {directory / 'sshd.pid'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "LogLevel INFO",
                "",
            ])
        )  # fmt: skip
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation directory
        proc = host.popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        while "Server listening on" not in read_line(proc, f"sshd on {host.name}"):
            pass
        return cls(host, port, host_key, proc)

    def known_hosts_line(self) -> str:
        """This server's line of a known_hosts file (by address and by host name)."""
        key = " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])
        return f"[{self.host.address}]:{self.port},[{self.host.name}]:{self.port} {key}\n"

    def stop(self) -> None:
        """Stop the server (its sessions' detached processes are not its children)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
