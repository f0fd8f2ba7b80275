"""``undertow up`` and ``undertow down``: the cluster of a ``cluster.toml`` started and stopped
over ssh, host by host, in the order its parts need (Redis, then what registers in it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from undertow.deploy._config import Cluster
from undertow.deploy._plan import (
    SECRET_FILES,
    Proc,
    Secrets,
    backend_for,
    files_for,
    group_commands,
    plan,
    run_dir,
)
from undertow.deploy._ssh import Remote, each_host
from undertow.errors import ClusterError

__all__ = ["client_dir", "down", "dry_run", "up"]

Echo = Callable[[str], None]
#: seconds an ssh session may take beyond the deadline of what it waits for
_SLACK = 30.0


def _version() -> str:
    """This undertow's version, as each host's is read (``undertow.__version__``)."""
    from undertow import __version__

    return __version__


def _remotes(cluster: Cluster) -> dict[str, Remote]:
    return {name: Remote(cluster.hosts[name], cluster.ssh) for name in cluster.used_hosts()}


def client_dir(cluster: Cluster) -> Path:
    """Where ``up`` leaves the client's settings: the cluster's directory, here."""
    return Path(cluster.run_dir).expanduser() / cluster.name / "client"


def dry_run(cluster: Cluster, echo: Echo) -> None:
    """Print what ``up`` would start, host by host, starting nothing."""
    procs = plan(cluster)
    for name in cluster.used_hosts():
        remote = Remote(cluster.hosts[name], cluster.ssh)
        echo(f"{name} ({remote.where()}), run directory {run_dir(cluster, name)}:")
        for proc in procs:
            if proc.host == name:
                shown = " ".join(arg.replace("{run}", "RUN") for arg in proc.args)
                echo(f"  {proc.name}: {shown}")
    for command in group_commands(cluster):
        echo(f"then on {cluster.redis.host}: undertow {' '.join(command[3:])}")


def _preflight(cluster: Cluster, remotes: dict[str, Remote]) -> list[str]:
    """What stops ``up`` before anything starts: hosts unreachable, other versions of
    Python or undertow than here, processes of this cluster still running."""
    mine = (list(sys.version_info[:2]), _version())
    here = f"Python {mine[0][0]}.{mine[0][1]}, undertow {mine[1]}"
    timeout = cluster.ssh.connect_timeout + _SLACK

    def check(name: str) -> dict[str, Any]:
        return remotes[name].preflight(run_dir(cluster, name), timeout)

    problems: list[str] = []
    for name, found in each_host(remotes, check):
        host = cluster.hosts[name]
        if isinstance(found, Exception):
            problems.append(str(found))
            continue
        theirs = (found["python"], found["undertow"])
        if theirs != mine:
            python = ".".join(map(str, found["python"]))
            version = found["undertow"] or f"not importable ({found.get('error')})"
            problems.append(
                f"host {name}: {host.python} is Python {python} with undertow {version}, but "
                f"this client runs {here}: install undertow {mine[1]} on Python "
                f"{mine[0][0]}.{mine[0][1]} there and point hosts.{name}.python at it"
            )
        elif found.get("running"):
            problems.append(
                f"host {name}: cluster {cluster.name!r} is already up there "
                f"({', '.join(found['running'])}): run `undertow down {cluster.source}` first"
            )
    return problems


def _start(cluster: Cluster, remote: Remote, procs: list[Proc], found: Secrets) -> dict[str, Any]:
    name = remote.host.name
    serves = any(p.role in ("serve", "data") for p in procs)
    request = {
        "action": "start",
        "run": run_dir(cluster, name),
        "files": files_for(cluster, name, found),
        "keygen": name if cluster.curve and serves else None,
        "procs": [p.spec() for p in procs],
        "timeout": cluster.ready_timeout,
    }
    return remote.agent(request, cluster.ready_timeout + _SLACK)


def _failures(name: str, answer: dict[str, Any] | Exception) -> list[str]:
    if isinstance(answer, Exception):
        return [str(answer)]
    if "error" in answer:
        return [f"host {name}: {answer['error']}"]
    said = []
    for proc in answer.get("procs", []):
        if "error" in proc:
            tail = proc.get("tail", "").rstrip()
            said.append(f"host {name}: {proc['name']} (pid {proc['pid']}) {proc['error']}; "
                        f"the end of its log:\n{tail}")  # fmt: skip
    return said


def _say_started(name: str, answer: dict[str, Any], echo: Echo) -> None:
    for proc in answer.get("procs", []):
        if "ready" in proc:
            echo(f"{name}: {proc['name']} (pid {proc['pid']}) {proc['ready']}")


def _make_groups(cluster: Cluster, remote: Remote, found: Secrets) -> list[str]:
    problems = []
    backend = backend_for(cluster, found.redis_password)
    for command in group_commands(cluster):
        request = {
            "action": "exec",
            "run": run_dir(cluster, remote.host.name),
            "args": command,
            "env": {"UNDERTOW_BACKEND": backend},  # an environment, never a command line
            "timeout": cluster.ready_timeout,
        }
        answer = remote.agent(request, cluster.ready_timeout + _SLACK)
        if not answer["ok"]:
            said = answer.get("output") or answer.get("error")
            problems.append(f"host {remote.host.name}: undertow {' '.join(command[3:])}: {said}")
    return problems


def up(cluster: Cluster, echo: Echo) -> None:
    """Start the cluster; on any failure, stop what was started and raise
    :class:`ClusterError` naming the host, the process and the end of its log."""
    remotes = _remotes(cluster)
    problems = _preflight(cluster, remotes)
    if problems:
        raise ClusterError("nothing was started:\n" + "\n".join(problems))
    echo(f"{len(remotes)} host(s) checked: each runs Python "
         f"{sys.version_info[0]}.{sys.version_info[1]} and undertow {_version()}")  # fmt: skip
    found = Secrets.new(cluster.users)
    procs = plan(cluster)
    try:
        keys = _start_all(cluster, remotes, procs, found, echo)
    except ClusterError:
        down(cluster, lambda line: echo(f"(cleaning up) {line}"), quiet_errors=True)
        raise
    _write_client(cluster, found, keys, echo)


def _start_all(
    cluster: Cluster, remotes: dict[str, Remote], procs: list[Proc], found: Secrets, echo: Echo
) -> dict[str, str]:
    """Start Redis, then the rest; the serving hosts' CURVE public keys, by host."""
    redis = cluster.redis.host
    first = [p for p in procs if p.role == "redis"]
    try:
        answer: dict[str, Any] | Exception = _start(cluster, remotes[redis], first, found)
    except ClusterError as exc:
        answer = exc
    problems = _failures(redis, answer)
    if not problems:
        assert isinstance(answer, dict)
        _say_started(redis, answer, echo)
        problems = _make_groups(cluster, remotes[redis], found)
    if problems:
        raise ClusterError("Redis did not start:\n" + "\n".join(problems))

    def start(name: str) -> dict[str, Any]:
        mine = [p for p in procs if p.host == name and p.role != "redis"]
        return _start(cluster, remotes[name], mine, found)

    keys: dict[str, str] = {}
    for name, result in each_host(remotes, start):
        problems += _failures(name, result)
        if not isinstance(result, Exception):
            _say_started(name, result, echo)
            if result.get("public_key"):
                keys[name] = result["public_key"]
    if problems:
        raise ClusterError("the cluster did not start:\n" + "\n".join(problems))
    return keys


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


def _write_client(cluster: Cluster, found: Secrets, keys: dict[str, str], echo: Echo) -> None:
    """The client's settings, here: an undertow home with the first user's token, the
    registry's URL and every user's token, readable by this user only; the serving hosts'
    CURVE public keys (``curve/HOST.key``), to pin them rather than trust the registry's."""
    where = client_dir(cluster)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    where.chmod(0o700)
    user = cluster.users[0]
    backend = backend_for(cluster, found.redis_password)
    _private(where / "config.toml", f'token = "{found.tokens[user]}"\n')
    _private(where / "backend", backend + "\n")
    tokens = "".join(f"{found.tokens[name]}\n" for name in cluster.users)
    _private(where / "tokens", tokens)
    if keys:
        (where / "curve").mkdir(mode=0o700, exist_ok=True)
        for host, key in keys.items():
            (where / "curve" / f"{host}.key").write_text(key)
    echo(f"cluster {cluster.name!r} is up. Its clients' settings are in {where} (mode 0600):")
    echo(f"  export UNDERTOW_HOME={where}   # signs as {user!r}")
    echo(f"  export UNDERTOW_BACKEND=$(cat {where / 'backend'})")
    echo(f"  the users' tokens: {where / 'tokens'}; stop it all: undertow down {cluster.source}")
    if keys:
        echo(f"  the servers' CURVE public keys: {where / 'curve'}/HOST.key")


def _stop(cluster: Cluster, remote: Remote, roles: list[str] | None) -> dict[str, Any]:
    request = {
        "action": "stop",
        "run": run_dir(cluster, remote.host.name),
        "roles": roles,
        "timeout": cluster.stop_timeout,
        "secrets": [*SECRET_FILES, f"curve/{remote.host.name}.key_secret"],
    }
    return remote.agent(request, cluster.stop_timeout + _SLACK)


def down(cluster: Cluster, echo: Echo, *, quiet_errors: bool = False) -> None:
    """Stop every process of the cluster (what registers first, Redis last), SIGTERM then
    SIGKILL after ``stop_timeout``; say what was stopped. Hosts that cannot be reached are
    named in a :class:`ClusterError` after the others were stopped."""
    remotes = _remotes(cluster)
    problems: list[str] = []
    for roles in (["serve", "data", "worker"], None):

        def stop(name: str, roles: list[str] | None = roles) -> dict[str, Any]:
            return _stop(cluster, remotes[name], roles)

        for name, answer in each_host(remotes, stop):
            if isinstance(answer, Exception):
                if roles is None or quiet_errors:
                    continue
                problems.append(str(answer))
                continue
            for proc in answer.get("stopped", []):
                if proc["how"] != "not running":
                    echo(f"{name}: stopped {proc['name']} (pid {proc['pid']}, {proc['how']})")
            if not answer["ok"]:
                problems.append(f"host {name}: {answer.get('error') or answer['stopped']}")
    for secret in ("config.toml", "backend", "tokens"):
        (client_dir(cluster) / secret).unlink(missing_ok=True)
    if problems and not quiet_errors:
        raise ClusterError("some of the cluster may still run:\n" + "\n".join(problems))
