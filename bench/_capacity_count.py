"""Counting what Redis does for a piece of code: ``INFO commandstats`` deltas by command name,
the round trips clients sent (a ``MONITOR`` of the same span tells a client's command from
one a Lua script ran), and Redis's own CPU and memory.

``INFO commandstats`` counts every command Redis ran, those run inside a script too: an
``EVALSHA`` of the claim script counts once under ``evalsha`` and once more for each
``LPOP``, ``HSET``... it ran. So a figure here has two totals: ``commands`` (all of them, the
work Redis did) and ``round_trips`` (what clients sent: scripts, plain commands, each
command of a pipeline; a ``MULTI``/``EXEC`` pipeline is one trip on the wire but its
commands are counted one by one, as Redis handles them).
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

#: what the counting itself sends (left out of every figure)
OWN = frozenset({"info", "monitor", "echo", "ping", "client|setinfo", "client|setname"})
#: the command that ends a MONITOR (an ECHO of this text)
_STOP = "undertow-capacity-stop"


def commandstats(client: redis.Redis) -> Counter[str]:
    """Calls of each command since the server started (or since CONFIG RESETSTAT)."""
    stats: dict[str, Any] = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the server used so far (user + system, all its threads)."""
    cpu: dict[str, Any] = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def used_memory(client: redis.Redis) -> int:
    memory: dict[str, Any] = client.info("memory")
    return int(memory["used_memory"])


@dataclass
class Counted:
    """What Redis ran for one span of code."""

    #: every command Redis ran, by name (those of scripts included)
    commands: Counter[str] = field(default_factory=Counter)
    #: the commands clients sent, by name (MONITOR lines not from a script)
    sent: Counter[str] = field(default_factory=Counter)

    def per(self, n: float) -> dict[str, Any]:
        """The figures divided by ``n`` (per job, per beat...)."""
        commands = {k: round(v / n, 3) for k, v in sorted(self.commands.items()) if v}
        sent = {k: round(v / n, 3) for k, v in sorted(self.sent.items()) if v}
        return {
            "n": n,
            "commands_total": round(sum(self.commands.values()) / n, 3),
            "round_trips": round(sum(self.sent.values()) / n, 3),
            "commands": commands,
            "sent": sent,
        }


class _Monitor(threading.Thread):
    """Reads a MONITOR stream until the stop mark comes by, counting what clients sent."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(daemon=True, name="capacity-monitor")
        self._monitor = client.monitor()
        self._monitor.__enter__()  # (MONITOR is sent now: nothing before it is missed)
        self.sent: Counter[str] = Counter()

    def run(self) -> None:
        try:
            while True:
                found = self._monitor.next_command()
                command = str(found.get("command", ""))
                if _STOP in command:
                    return
                if found.get("client_type") == "lua":
                    continue
                self.sent[_name(command)] += 1
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                self._monitor.__exit__(None, None, None)


def _name(command: str) -> str:
    """``HSET key ...`` -> ``hset``; a subcommand as INFO names it (``client|setinfo``)."""
    words = command.split()
    if not words:
        return ""
    name = words[0].strip('"').lower()
    if name in ("client", "config", "script") and len(words) > 1:
        sub = words[1].strip('"').lower()
        return f"{name}|{sub}"
    return name


@contextlib.contextmanager
def counting(url: str) -> Iterator[Counted]:
    """Count what Redis runs inside the ``with`` block (the counter is filled at its end)."""
    client = redis.Redis.from_url(url)
    found = Counted()
    monitor = _Monitor(client)
    monitor.start()
    before = commandstats(client)
    try:
        yield found
    finally:
        after = commandstats(client)
        client.echo(_STOP)
        monitor.join(30.0)
        client.close()
        delta = after - before
        found.commands.update({k: v for k, v in delta.items() if k not in OWN})
        found.sent.update({k: v for k, v in monitor.sent.items() if k not in OWN and k})


def measure(url: str, n: float, step: Callable[[], Any]) -> dict[str, Any]:
    """Run ``step`` while counting; the counts divided by ``n``."""
    with counting(url) as found:
        step()
    return found.per(n)
