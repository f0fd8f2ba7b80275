"""What ``undertow up`` starts on each host: the real commands (``undertow broker``, ``serve``,
``data serve``, ``worker``), each bound to its host's own address, and the secrets they read
from files. Pure: no I/O, no ssh (``--dry-run`` prints this)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from undertow.deploy._config import Cluster, Host
from undertow.security import new_token

__all__ = ["Proc", "Secrets", "backend_for", "files_for", "group_commands", "plan", "run_dir"]

#: the placeholder the agent replaces with the host's run directory (expanded there)
RUN = "{run}"
#: the token of the cluster's own processes (a worker fetching from a data server)
NODE_USER = "cluster"
#: files that hold secrets, relative to a host's run directory; ``down`` removes them
SECRET_FILES = ("tokens", "config.toml", "redis/password", "redis/redis.conf")

_READY = {
    "redis": "Ready to accept connections",
    "serve": "serving on",
    "data": "serving on",
    "worker": "undertow: worker ",
}


@dataclass(frozen=True)
class Proc:
    """One process to start on ``host``: its name there, role and command line."""

    host: str
    name: str
    role: str
    args: tuple[str, ...]
    cwd: str | None = None

    def spec(self) -> dict[str, Any]:
        """What the agent is asked to start."""
        return {
            "name": self.name,
            "role": self.role,
            "args": list(self.args),
            "cwd": self.cwd,
            "ready": re.escape(_READY[self.role]),
        }


@dataclass(frozen=True)
class Secrets:
    """The secrets of one ``undertow up``, made fresh each time (:mod:`secrets`)."""

    redis_password: str
    #: user name -> token: the users of ``[security] users``, and the cluster's own
    tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls, users: tuple[str, ...]) -> Secrets:
        """Fresh secrets for these users (and the cluster's processes)."""
        names = dict.fromkeys([*users, NODE_USER])
        return cls(secrets.token_urlsafe(32), {name: new_token(name) for name in names})


def run_dir(cluster: Cluster, host: str) -> str:
    """The run directory of ``host`` (its own, so hosts sharing a home directory do not
    meet), as the host's shell would expand it."""
    return f"{cluster.run_dir.rstrip('/')}/{cluster.name}/{host}"


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def backend_for(cluster: Cluster, password: str) -> str:
    """The registry's URL (with its password: a secret)."""
    address = _bracketed(cluster.hosts[cluster.redis.host].address)
    return f"redis://:{password}@{address}:{cluster.redis.port}/0"


def files_for(cluster: Cluster, host: str, found: Secrets) -> dict[str, str]:
    """The secret files of ``host``'s run directory, by their relative paths."""
    tokens = "".join(f"{token}\n" for token in found.tokens.values())
    backend = backend_for(cluster, found.redis_password)
    settings = f'token = "{found.tokens[NODE_USER]}"\n\n[host]\nbackend = "{backend}"\n'
    files = {"tokens": tokens, "config.toml": settings}
    if host == cluster.redis.host:
        files["redis/password"] = found.redis_password + "\n"
    return files


def _security(cluster: Cluster, host: Host) -> list[str]:
    options = ["--host", host.address, "--tokens", f"{RUN}/tokens"]
    if cluster.curve:
        options += ["--curve-secret", f"{RUN}/curve/{host.name}.key_secret"]
    return options


def _redis(cluster: Cluster) -> Proc:
    role, host = cluster.redis, cluster.hosts[cluster.redis.host]
    args = ["broker", "--bind", host.address, "--port", str(role.port), "--dir", f"{RUN}/redis"]
    return Proc(host.name, "redis", "redis", (*_cli(host), *args, "--fsync", role.fsync))


def _cli(host: Host) -> tuple[str, ...]:
    return (host.python, "-m", "undertow.cli")


def _services(cluster: Cluster) -> list[Proc]:
    procs: list[Proc] = []
    for i, role in enumerate(cluster.serve):
        for name in role.hosts:
            host = cluster.hosts[name]
            args = (*_cli(host), "serve", *role.targets, *_security(cluster, host))
            procs.append(Proc(name, f"serve-{i}", "serve", args, host.workdir))
    for i, data in enumerate(cluster.data):
        for name in data.hosts:
            host = cluster.hosts[name]
            args = (*_cli(host), "data", "serve", *_security(cluster, host))
            args += ("--data-dir", f"{RUN}/data")
            if data.memory_limit is not None:
                args += ("--memory-limit", str(data.memory_limit))
            procs.append(Proc(name, f"data-{i}", "data", args, host.workdir))
    return procs


def _workers(cluster: Cluster) -> list[Proc]:
    procs: list[Proc] = []
    for i, role in enumerate(cluster.workers):
        options = [f"--queue={queue}" for queue in role.queues]
        options += ["--concurrency", str(role.concurrency), "--mode", role.mode]
        options += [f"--module={module}" for module in role.modules]
        options += [f"--function={name}={target}" for name, target in role.functions.items()]
        for name in role.hosts:
            host = cluster.hosts[name]
            args = (*_cli(host), "worker", *options, "--tokens", f"{RUN}/tokens")
            procs.append(Proc(name, f"worker-{i}", "worker", args, host.workdir))
    return procs


def plan(cluster: Cluster) -> list[Proc]:
    """Every process of the cluster, Redis first (the others register in it)."""
    return [_redis(cluster), *_services(cluster), *_workers(cluster)]


def group_commands(cluster: Cluster) -> list[list[str]]:
    """The ``undertow group add`` commands that make the host groups (run on the Redis
    host once Redis is up)."""
    python = cluster.hosts[cluster.redis.host].python
    return [
        [python, "-m", "undertow.cli", "group", "add", name, *members]
        for name, members in cluster.groups.items()
    ]
