"""Running Python on a host over the system ``ssh`` client (no new dependency): batch mode
(a key, never a password prompt), host keys checked, a connect timeout, and whatever is
secret sent on standard input, never on a command line."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from undertow.deploy._config import Host, SshOptions
from undertow.errors import ClusterError

__all__ = ["Remote", "each_host"]

T = TypeVar("T")

#: what the host's Python says of itself; it must run whatever undertow is there, or none
_PREFLIGHT = """
import json, sys
found = {"python": list(sys.version_info[:2]), "executable": sys.executable}
try:
    import undertow
    found["undertow"] = undertow.__version__
except Exception as exc:
    found["undertow"] = None
    found["error"] = f"{type(exc).__name__}: {exc}"
else:
    try:
        from undertow.deploy._agent import running
        found["running"] = running(sys.argv[1])
    except Exception as exc:
        found["running"] = []
print(json.dumps(found))
"""


class Remote:
    """One host, reached with ``ssh``."""

    def __init__(self, host: Host, ssh: SshOptions) -> None:
        self.host = host
        self.ssh = ssh

    def command(self, remote: list[str]) -> list[str]:
        """The local ``ssh`` command line that runs ``remote`` (its words quoted) there."""
        ssh = self.ssh
        args = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={ssh.connect_timeout:g}"]
        args += ["-o", f"StrictHostKeyChecking={ssh.strict_host_keys}"]
        args += ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if ssh.known_hosts:
            args += ["-o", f"UserKnownHostsFile={Path(ssh.known_hosts).expanduser()}"]
        if ssh.identity:
            args += ["-i", str(Path(ssh.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if ssh.user:
            args += ["-l", ssh.user]
        port = self.host.ssh_port or ssh.port
        if port:
            args += ["-p", str(port)]
        env = [f"{key}={shlex.quote(value)}" for key, value in self.host.env.items()]
        line = " ".join([*(["env", *env] if env else []), *map(shlex.quote, remote)])
        return [*args, "--", self.host.ssh_host or self.host.address, line]

    def run(
        self, remote: list[str], stdin: str, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Run ``remote`` on the host with ``stdin`` as its input, to its end."""
        try:
            return subprocess.run(  # noqa: S603 - ssh, with its words quoted for the remote shell
                self.command(remote),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(
                f"host {self.host.name}: no answer over ssh within {timeout:g} s"
            ) from None
        except FileNotFoundError:
            raise ClusterError("ssh is not installed here: install OpenSSH's client") from None

    def preflight(self, run_dir: str, timeout: float) -> dict[str, Any]:
        """What the host's Python is, its undertow's version and what still runs there."""
        done = self.run([self.host.python, "-c", _PREFLIGHT, run_dir], "", timeout)
        return self._answer(done, "checking its Python")

    def agent(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The agent's answer to ``request`` (:mod:`undertow.deploy._agent`)."""
        remote = [self.host.python, "-m", "undertow.deploy._agent"]
        done = self.run(remote, json.dumps(request), timeout)
        return self._answer(done, f"its agent ({request['action']})")

    def _answer(self, done: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
        lines = done.stdout.strip().splitlines()
        if done.returncode == 255 or not lines:  # ssh's own failure, or the command's
            said = done.stderr.strip() or f"exit status {done.returncode}, nothing printed"
            fix = self._fix(said)
            raise ClusterError(
                f"host {self.host.name} ({self.where()}): {what} failed: {said}{fix}"
            )
        try:
            answer: dict[str, Any] = json.loads(lines[-1])
        except ValueError:
            raise ClusterError(
                f"host {self.host.name}: {what} answered {lines[-1][:200]!r}, not JSON: "
                f"{done.stderr.strip()[-500:]}"
            ) from None
        return answer

    def where(self) -> str:
        port = self.host.ssh_port or self.ssh.port
        user = f"{self.ssh.user}@" if self.ssh.user else ""
        return f"{user}{self.host.ssh_host or self.host.address}" + (f":{port}" if port else "")

    def _fix(self, said: str) -> str:
        if "timed out" in said or "No route" in said or "refused" in said:
            return " (is the host up, sshd running and the address and port right?)"
        if "No such file" in said or "not found" in said:
            where = f"hosts.{self.host.name}.python"
            return f" (set {where} to the path of its Python, e.g. a venv's bin/python)"
        if "Permission denied" in said:
            return " (give [ssh] identity = a key the host's authorized_keys accepts)"
        if "Host key verification failed" in said:
            return (
                " (add the host's key to known_hosts: ssh-keyscan, or strict_host_keys = "
                '"accept-new" in [ssh] to trust it on first use)'
            )
        return ""


def each_host(items: Iterable[T], work: Callable[[T], Any]) -> list[tuple[T, Any]]:
    """``work(item)`` for every item at once (one ssh session each); each item with its
    result, or with the exception it raised."""
    listed = list(items)
    if not listed:
        return []

    def guarded(item: T) -> Any:
        try:
            return work(item)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(32, len(listed))) as pool:
        return list(zip(listed, pool.map(guarded, listed), strict=True))
