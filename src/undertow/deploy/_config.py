"""``cluster.toml``: what runs where, read with :mod:`tomllib` and checked before anything
starts. Every error names the key, the bad value and the fix (:class:`ConfigError`)."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from undertow.errors import ConfigError

__all__ = ["Cluster", "DataRole", "Host", "RedisRole", "ServeRole", "SshOptions", "WorkerRole"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MODES = ("thread", "process", "fork")
_FSYNC = ("always", "everysec")
_HOST_KEYS = ("yes", "accept-new")
_TABLES = {"cluster", "ssh", "security", "hosts", "redis", "serve", "data", "worker", "groups"}


@dataclass(frozen=True)
class SshOptions:
    """How ``undertow up`` reaches the hosts: the system ``ssh`` client, never a password."""

    user: str | None = None
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    strict_host_keys: str = "yes"
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class Host:
    """One machine: where ssh reaches it, the address its processes bind, its Python."""

    name: str
    address: str
    python: str = "python3"
    ssh_host: str | None = None
    ssh_port: int | None = None
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RedisRole:
    """The Redis server (``undertow broker``) the cluster's registry and queue live in."""

    host: str
    port: int = 6379
    fsync: str = "always"


@dataclass(frozen=True)
class ServeRole:
    """``undertow serve TARGETS`` on each of ``hosts``."""

    hosts: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(frozen=True)
class DataRole:
    """``undertow data serve`` on each of ``hosts``."""

    hosts: tuple[str, ...]
    memory_limit: int | None = None


@dataclass(frozen=True)
class WorkerRole:
    """``undertow worker`` on each of ``hosts``."""

    hosts: tuple[str, ...]
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 1
    mode: str = "thread"
    modules: tuple[str, ...] = ()
    functions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cluster:
    """A whole ``cluster.toml``, checked."""

    name: str
    source: Path
    hosts: Mapping[str, Host]
    redis: RedisRole
    ssh: SshOptions = SshOptions()
    run_dir: str = "~/.undertow/clusters"
    ready_timeout: float = 60.0
    stop_timeout: float = 10.0
    users: tuple[str, ...] = ("admin",)
    curve: bool = True
    serve: tuple[ServeRole, ...] = ()
    data: tuple[DataRole, ...] = ()
    workers: tuple[WorkerRole, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Cluster:
        """Read and check ``path``; a :class:`ConfigError` names what is wrong and the fix."""
        source = Path(path).expanduser()
        try:
            raw = tomllib.loads(source.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read {source}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source} is not valid TOML: {exc}") from None
        return parse(raw, source)

    def used_hosts(self) -> list[str]:
        """The hosts something runs on, in the order of ``[hosts]``."""
        used = {self.redis.host}
        roles: list[ServeRole | DataRole | WorkerRole] = [*self.serve, *self.data, *self.workers]
        for role in roles:
            used.update(role.hosts)
        return [name for name in self.hosts if name in used]


class _Table:
    """A TOML table being read: each value checked, unknown keys refused."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table ([{where}]), not {_shown(raw)}")
        self.raw, self.where, self.seen = raw, where, set[str]()

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.seen.add(key)
        value = self.raw.get(key, default)
        if value is default:
            return value
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # a bool is an int to Python, not to us
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            raise ConfigError(f"{self.key(key)} = {_shown(value)}: must be {names}")
        return value

    def need(self, key: str, kind: type | tuple[type, ...], example: str) -> Any:
        if key not in self.raw:
            typo = difflib.get_close_matches(key, [str(k) for k in self.raw], n=1)
            hint = f" ({typo[0]!r} is not a key: a misspelling?)" if typo else ""
            raise ConfigError(f"{self.key(key)} is missing{hint}: add it, e.g. {key} = {example}")
        return self.get(key, kind)

    def key(self, key: str) -> str:
        return f"{self.where}.{key}"

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            known = ", ".join(sorted(self.seen))
            raise ConfigError(
                f"{self.key(unknown[0])}: unknown key (the keys of [{self.where}]: {known})"
            )


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}  # fmt: skip


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _name(table: _Table, key: str, value: str) -> str:
    if not _NAME.match(value):
        raise ConfigError(
            f"{table.key(key)} = {value!r}: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def _positive(table: _Table, key: str, default: float) -> float:
    value = float(table.get(key, (int, float), default))
    if value <= 0:
        raise ConfigError(f"{table.key(key)} = {value!r}: must be a number of seconds above 0")
    return value


def _port(table: _Table, key: str, default: int | None) -> int | None:
    value: int | None = table.get(key, int, default)
    if value is not None and not 1 <= value <= 65535:
        raise ConfigError(f"{table.key(key)} = {value}: a port is between 1 and 65535")
    return value


def _choice(table: _Table, key: str, choices: tuple[str, ...], default: str) -> str:
    value: str = table.get(key, str, default)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{table.key(key)} = {value!r}: use one of {listed}")
    return value


def _strings(table: _Table, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    value = table.get(key, list, None)
    if value is None:
        return default
    if not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{table.key(key)} = {value!r}: must be a list of non-empty strings")
    return tuple(value)


def _str_table(table: _Table, key: str) -> dict[str, str]:
    value = table.get(key, dict, None) or {}
    for name, item in value.items():
        if not isinstance(item, str):
            raise ConfigError(f"{table.key(key)}.{name} = {_shown(item)}: must be a string")
    return dict(value)


def parse(raw: Mapping[str, Any], source: Path) -> Cluster:
    """A :class:`Cluster` from the parsed TOML ``raw`` (read from ``source``)."""
    unknown = sorted(set(raw) - _TABLES)
    if unknown:
        listed = ", ".join(sorted(_TABLES))
        raise ConfigError(f"[{unknown[0]}]: unknown table (cluster.toml has: {listed})")
    cluster = _Table(raw.get("cluster"), "cluster")
    name = _name(cluster, "name", cluster.need("name", str, '"lab"'))
    options: dict[str, Any] = {
        "run_dir": cluster.get("run_dir", str, "~/.undertow/clusters"),
        "ready_timeout": _positive(cluster, "ready_timeout", 60.0),
        "stop_timeout": _positive(cluster, "stop_timeout", 10.0),
    }
    cluster.done()
    hosts = _hosts(raw.get("hosts"))
    options.update(_security(raw.get("security", {})))
    redis = _redis(raw.get("redis"), hosts)
    serve = tuple(_serve(t, f"serve[{i}]", hosts) for i, t in enumerate(_array(raw, "serve")))
    data = tuple(_data(t, f"data[{i}]", hosts) for i, t in enumerate(_array(raw, "data")))
    workers = tuple(_worker(t, f"worker[{i}]", hosts) for i, t in enumerate(_array(raw, "worker")))
    return Cluster(
        name=name,
        source=source,
        hosts=hosts,
        redis=redis,
        ssh=_ssh(raw.get("ssh", {})),
        serve=serve,
        data=data,
        workers=workers,
        groups=_groups(raw.get("groups", {}), hosts),
        **options,
    )


def _array(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw.get(key, [])
    if isinstance(value, dict):
        return [value]  # [serve] written once instead of [[serve]]
    if not isinstance(value, list):
        raise ConfigError(f"{key} = {_shown(value)}: write it as [[{key}]] tables")
    return value


def _ssh(raw: Any) -> SshOptions:
    table = _Table(raw, "ssh")
    options = SshOptions(
        user=table.get("user", str),
        port=_port(table, "port", None),
        identity=table.get("identity", str),
        known_hosts=table.get("known_hosts", str),
        strict_host_keys=_choice(table, "strict_host_keys", _HOST_KEYS, "yes"),
        connect_timeout=_positive(table, "connect_timeout", 10.0),
    )
    table.done()
    return options


def _security(raw: Any) -> dict[str, Any]:
    table = _Table(raw, "security")
    users = _strings(table, "users", ("admin",))
    for user in users:
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", user):
            raise ConfigError(
                f"security.users: {user!r} is not a user name: 1-64 letters, digits, '_' or '-'"
            )
    curve = table.get("curve", bool, True)
    table.done()
    return {"users": users, "curve": curve}


def _hosts(raw: Any) -> dict[str, Host]:
    if raw is None:
        raise ConfigError(
            'hosts is missing: add a table per machine, e.g. [hosts.node1] address = "10.0.0.11"'
        )
    hosts = _Table(raw, "hosts")
    made: dict[str, Host] = {}
    for name in list(raw):
        hosts.seen.add(name)
        table = _Table(raw[name], f"hosts.{name}")
        _name(hosts, name, name)
        address = table.need("address", str, '"10.0.0.11"')
        if address in ("0.0.0.0", "::", "*", ""):  # noqa: S104 - refused, not bound
            raise ConfigError(
                f"hosts.{name}.address = {address!r}: give the host's own address on the "
                "cluster network (processes bind it; a wildcard would expose them everywhere)"
            )
        made[name] = Host(
            name=name,
            address=address,
            python=table.get("python", str, "python3"),
            ssh_host=table.get("ssh_host", str),
            ssh_port=_port(table, "ssh_port", None),
            workdir=table.get("workdir", str),
            env=_str_table(table, "env"),
        )
        table.done()
    if not made:
        raise ConfigError('hosts is empty: add [hosts.NAME] tables with address = "..."')
    return made


def _host_names(table: _Table, known: Mapping[str, Host]) -> tuple[str, ...]:
    if "host" in table.raw and "hosts" in table.raw:
        raise ConfigError(f'{table.where}: give host = "..." or hosts = [...], not both')
    names = (table.get("host", str),) if "host" in table.raw else _strings(table, "hosts")
    if not names:
        raise ConfigError(f'{table.key("host")} is missing: add it, e.g. host = "node1"')
    for name in names:
        if name not in known:
            listed = ", ".join(known)
            raise ConfigError(
                f"{table.where}: host {name!r} is not in [hosts] (add [hosts.{name}], or use "
                f"one of: {listed})"
            )
    return names


def _redis(raw: Any, hosts: Mapping[str, Host]) -> RedisRole:
    if raw is None:
        raise ConfigError('redis is missing: add [redis] host = "NAME" (a host of [hosts])')
    table = _Table(raw, "redis")
    (host,) = _host_names(table, hosts) if "hosts" not in raw else ("",)
    if not host:
        raise ConfigError('redis.hosts: Redis runs on one host: write host = "NAME"')
    role = RedisRole(
        host=host,
        port=_port(table, "port", 6379) or 6379,
        fsync=_choice(table, "fsync", _FSYNC, "always"),
    )
    table.done()
    return role


def _serve(raw: Any, where: str, hosts: Mapping[str, Host]) -> ServeRole:
    table = _Table(raw, where)
    targets = _strings(table, "targets")
    if not targets:
        raise ConfigError(
            f"{table.key('targets')} is missing: the files or modules to serve, e.g. "
            'targets = ["services.py"]'
        )
    role = ServeRole(hosts=_host_names(table, hosts), targets=targets)
    table.done()
    return role


def _data(raw: Any, where: str, hosts: Mapping[str, Host]) -> DataRole:
    table = _Table(raw, where)
    limit: int | None = table.get("memory_limit", int)
    if limit is not None and limit <= 0:
        raise ConfigError(f"{table.key('memory_limit')} = {limit}: a number of bytes above 0")
    role = DataRole(hosts=_host_names(table, hosts), memory_limit=limit)
    table.done()
    return role


def _worker(raw: Any, where: str, hosts: Mapping[str, Host]) -> WorkerRole:
    table = _Table(raw, where)
    concurrency: int = table.get("concurrency", int, 1)
    if concurrency < 1:
        raise ConfigError(f"{table.key('concurrency')} = {concurrency}: at least 1")
    role = WorkerRole(
        hosts=_host_names(table, hosts),
        queues=_strings(table, "queues", ("default",)),
        concurrency=concurrency,
        mode=_choice(table, "mode", _MODES, "thread"),
        modules=_strings(table, "modules"),
        functions=_str_table(table, "functions"),
    )
    table.done()
    for name, target in role.functions.items():
        if ":" not in target:
            raise ConfigError(
                f"{table.key('functions')}.{name} = {target!r}: write module:attr, "
                'e.g. resize = "imaging:resize"'
            )
    return role


def _groups(raw: Any, hosts: Mapping[str, Host]) -> dict[str, tuple[str, ...]]:
    table = _Table(raw, "groups")
    groups: dict[str, tuple[str, ...]] = {}
    for name in list(raw):
        members = _strings(table, name)
        _name(table, name, name)
        for member in members:
            if member not in hosts:
                raise ConfigError(
                    f"groups.{name}: host {member!r} is not in [hosts] (add it there, or "
                    "remove it from the group)"
                )
        groups[name] = members
    return groups
