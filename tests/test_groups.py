"""Named host groups: the backend operations (the same cases on a SQLite file and on a real
redis-server), the sync Registry's twins, and ``undertow group`` run as a command."""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner, Result

from undertow.cli import main
from undertow.cluster import Backend, Registry, open_backend
from undertow.storage import check_group_name, check_hosts

pytestmark = pytest.mark.timeout(60)

BAD_NAMES = ["", "a b", "gpu/a100", "a:b", "x" * 59, "ünï", "tab\t"]
BAD_HOSTS = [[], [""], ["node 1"], ["node-1", "a\tb"], ["new\nline"], ["x" * 256], "node-1"]


# -- the backend operations ---------------------------------------------------------------------


async def test_a_group_keeps_its_hosts_in_order_each_once(backend: Backend):
    assert await backend.group("gpu") is None
    await backend.set_group("gpu", ["node-3", "node-1", "node-3", "node-2"])
    assert await backend.group("gpu") == ["node-3", "node-1", "node-2"]
    await backend.set_group("cpu.big", ("node-9",))
    await backend.set_group("A_1-x", ["gpu3.example.org"])
    assert await backend.groups() == {
        "A_1-x": ["gpu3.example.org"],
        "cpu.big": ["node-9"],
        "gpu": ["node-3", "node-1", "node-2"],
    }
    assert list(await backend.groups()) == ["A_1-x", "cpu.big", "gpu"]  # sorted by name


async def test_set_group_replaces_the_hosts(backend: Backend):
    await backend.set_group("gpu", ["node-1", "node-2", "node-3"])
    await backend.set_group("gpu", ["node-3", "node-4"])
    assert await backend.group("gpu") == ["node-3", "node-4"]
    await backend.add_to_group("gpu", ["node-1"])  # after the replacement's hosts
    assert await backend.group("gpu") == ["node-3", "node-4", "node-1"]


async def test_add_creates_or_extends_and_hosts_keep_their_place(backend: Backend):
    await backend.add_to_group("gpu", ["node-2", "node-1"])
    assert await backend.group("gpu") == ["node-2", "node-1"]
    await backend.add_to_group("gpu", ["node-1", "node-5", "node-2", "node-4", "node-5"])
    assert await backend.group("gpu") == ["node-2", "node-1", "node-5", "node-4"]
    assert await backend.groups() == {"gpu": ["node-2", "node-1", "node-5", "node-4"]}


async def test_remove_takes_hosts_out_and_the_last_one_takes_the_group(backend: Backend):
    await backend.set_group("gpu", ["node-1", "node-2", "node-3"])
    await backend.set_group("cpu", ["node-9"])
    assert await backend.remove_from_group("gpu", ["node-2", "not-there"]) is True
    assert await backend.group("gpu") == ["node-1", "node-3"]
    assert await backend.remove_from_group("gpu", ["not-there"]) is True  # nothing changed
    assert await backend.group("gpu") == ["node-1", "node-3"]
    assert await backend.remove_from_group("gpu", ["node-3", "node-1"]) is True
    assert await backend.group("gpu") is None
    assert await backend.groups() == {"cpu": ["node-9"]}
    assert await backend.remove_from_group("gpu", ["node-1"]) is False  # gone
    assert await backend.remove_from_group("never", ["node-1"]) is False
    await backend.add_to_group("gpu", ["node-7"])  # made again, from nothing
    assert await backend.group("gpu") == ["node-7"]


async def test_drop_deletes_a_group_and_says_whether_there_was_one(backend: Backend):
    await backend.set_group("gpu", ["node-1", "node-2"])
    await backend.set_group("cpu", ["node-9"])
    assert await backend.drop_group("gpu") is True
    assert await backend.group("gpu") is None
    assert await backend.groups() == {"cpu": ["node-9"]}
    assert await backend.drop_group("gpu") is False
    assert await backend.drop_group("never") is False
    assert await backend.drop_group("cpu") is True
    assert await backend.groups() == {}


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_group_names_are_refused_naming_the_value_and_the_rule(backend, name):
    calls = [
        backend.set_group(name, ["node-1"]),
        backend.add_to_group(name, ["node-1"]),
        backend.remove_from_group(name, ["node-1"]),
        backend.group(name),
        backend.drop_group(name),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="1-58 letters, digits") as caught:
            await call
        assert repr(name) in str(caught.value)
    assert await backend.groups() == {}


@pytest.mark.parametrize("hosts", BAD_HOSTS, ids=repr)
async def test_bad_host_lists_are_refused_and_nothing_changes(backend, hosts):
    await backend.set_group("gpu", ["node-1"])
    for op in (backend.set_group, backend.add_to_group, backend.remove_from_group):
        with pytest.raises(ValueError, match="host"):
            await op("gpu", hosts)
    assert await backend.groups() == {"gpu": ["node-1"]}


def test_the_checks_name_what_is_wrong():
    assert check_group_name("gpu-a100.v2_x") == "gpu-a100.v2_x"
    assert check_hosts(["b", "a", "b"]) == ["b", "a"]
    with pytest.raises(ValueError, match=r"'a b'.*1-58 letters, digits, '_', '\.' or '-'"):
        check_group_name("a b")
    with pytest.raises(ValueError, match="not 'node-1'"):  # one string is not a list of hosts
        check_hosts("node-1")
    with pytest.raises(ValueError, match="one host or more"):
        check_hosts([])
    with pytest.raises(ValueError, match=r"'node 1'.*without white space"):
        check_hosts(["ok", "node 1"])
    with pytest.raises(ValueError, match="host 3 "):
        check_hosts([3])  # type: ignore[list-item]


async def test_concurrent_adds_and_removes_leave_every_group_whole(url: str):
    """Writers on separate connections: no host lost, none twice, and a group emptied by the
    last removal is gone from the listing too."""
    backends = [open_backend(url) for _ in range(4)]
    try:
        hosts = [f"node-{i}" for i in range(24)]
        await asyncio.gather(
            *(backends[i % 4].add_to_group("gpu", [host]) for i, host in enumerate(hosts))
        )
        found = await backends[0].group("gpu")
        assert found is not None
        assert sorted(found) == sorted(hosts)
        await asyncio.gather(
            *(backends[i % 4].remove_from_group("gpu", [host]) for i, host in enumerate(hosts))
        )
        assert await backends[1].group("gpu") is None
        assert await backends[2].groups() == {}
    finally:
        for b in backends:
            await b.close()


async def test_redis_keeps_a_group_as_its_keys_say(redis_url: str):
    import redis.asyncio as aioredis

    from undertow.storage import _keys as keys

    backend = open_backend(redis_url)
    raw = aioredis.from_url(redis_url)
    try:
        await backend.set_group("gpu", ["node-2", "node-1"])
        assert await raw.smembers(keys.GROUPS) == {b"gpu"}
        assert await raw.zrange(keys.group("gpu"), 0, -1) == [b"node-2", b"node-1"]
        await backend.remove_from_group("gpu", ["node-1", "node-2"])
        assert await raw.exists(keys.GROUPS, keys.group("gpu")) == 0  # both gone
        await backend.add_to_group("gpu", ["node-3"])
        await backend.drop_group("gpu")
        assert await raw.exists(keys.GROUPS, keys.group("gpu")) == 0
    finally:
        await raw.aclose()
        await backend.close()


async def test_a_sqlite_file_made_before_groups_gets_their_table(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # a registry file of an earlier version
        conn.execute("CREATE TABLE instances (id TEXT PRIMARY KEY, service TEXT, expires REAL)")
    conn.close()
    backend = open_backend(f"sqlite://{path}")
    try:
        await backend.add_to_group("gpu", ["node-1"])
        assert await backend.groups() == {"gpu": ["node-1"]}
    finally:
        await backend.close()


# -- the sync registry --------------------------------------------------------------------------


def test_the_sync_registry_has_every_group_operation(url: str):
    names = ["set_group", "add_to_group", "remove_from_group", "group", "groups", "drop_group"]
    for name in names:
        assert inspect.signature(getattr(Registry, name)) == inspect.signature(
            getattr(Backend, name)
        ), name
    with Registry(url) as registry:
        registry.set_group("gpu", ["node-1", "node-2"])
        registry.add_to_group("gpu", ["node-3"])
        assert registry.remove_from_group("gpu", ["node-1"]) is True
        assert registry.group("gpu") == ["node-2", "node-3"]
        assert registry.groups() == {"gpu": ["node-2", "node-3"]}
        with pytest.raises(ValueError, match="'no good'"):
            registry.group("no good")
        assert registry.drop_group("gpu") is True
        assert registry.group("gpu") is None


# -- undertow group -----------------------------------------------------------------------------


def undertow(url: str, *args: str) -> Result:
    """``undertow group ARGS --backend URL``, run in this process."""
    return CliRunner().invoke(main, ["group", *args, "--backend", url])


def test_the_commands_make_list_show_and_remove_groups(url: str):
    done = undertow(url, "add", "gpu", "node-3", "node-7")
    assert done.exit_code == 0, done.output
    assert "created group gpu: node-3, node-7" in done.output
    done = undertow(url, "add", "gpu", "node-7", "node-8")
    assert "added node-8 to group gpu: node-3, node-7, node-8" in done.output
    assert "has them already" in undertow(url, "add", "gpu", "node-3").output
    undertow(url, "add", "cpu", "node-1")

    listing = undertow(url, "ls")
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert lines[1].split() == ["GROUP", "SIZE", "HOSTS"]
    assert lines[2].split() == ["cpu", "1", "node-1"]
    assert lines[3].split() == ["gpu", "3", "node-3,", "node-7,", "node-8"]
    as_json = json.loads(undertow(url, "ls", "--json").output)
    assert as_json["groups"] == [
        {"name": "cpu", "hosts": ["node-1"]},
        {"name": "gpu", "hosts": ["node-3", "node-7", "node-8"]},
    ]
    assert undertow(url, "show", "gpu").output == "node-3\nnode-7\nnode-8\n"
    shown = json.loads(undertow(url, "show", "gpu", "--json").output)
    assert shown["hosts"] == ["node-3", "node-7", "node-8"]

    done = undertow(url, "rm", "gpu", "node-7", "node-99")
    assert done.exit_code == 0, done.output
    assert "group gpu: node-3, node-8" in done.stdout
    assert "did not have node-99" in done.stderr
    assert (
        "deleted group gpu (no hosts left)" in undertow(url, "rm", "gpu", "node-3", "node-8").output
    )
    assert undertow(url, "rm", "cpu").output == "deleted group cpu\n"
    assert "no host groups" in undertow(url, "ls").output
    assert json.loads(undertow(url, "ls", "--json").output)["groups"] == []


def test_unknown_groups_exit_1_naming_them(url: str):
    for args in (["show", "gpu"], ["rm", "gpu"], ["rm", "gpu", "node-1"]):
        done = undertow(url, *args)
        assert done.exit_code == 1, args
        assert "no host group 'gpu'" in done.output
        assert "undertow group ls" in done.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["add", "a b", "node-1"], "'a b'"),
        (["show", "gpu:1"], "'gpu:1'"),
        (["rm", "x" * 59], "'" + "x" * 59 + "'"),
        (["add", "gpu", "node 1"], "'node 1'"),
        (["rm", "gpu", ""], "''"),
    ],
)
def test_bad_names_and_hosts_are_usage_errors_naming_them(url: str, args, named):
    done = undertow(url, *args)
    assert done.exit_code == 2, done.output
    assert named in done.output
    assert "letters, digits" in done.output or "without white space" in done.output
    assert json.loads(undertow(url, "ls", "--json").output)["groups"] == []


def test_add_needs_a_host():
    done = CliRunner().invoke(main, ["group", "add", "gpu"])
    assert done.exit_code == 2
    assert "HOST..." in done.output


def test_the_command_runs_as_a_process(url: str):
    with Registry(url) as registry:
        registry.set_group("gpu", ["node-3", "node-7"])
    done = subprocess.run(
        [sys.executable, "-m", "undertow.cli", "group", "ls", "--json", "--backend", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["groups"] == [{"name": "gpu", "hosts": ["node-3", "node-7"]}]
