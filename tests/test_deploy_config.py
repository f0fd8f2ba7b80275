"""cluster.toml: read with tomllib and checked before anything starts; each error names the
key, the bad value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from undertow.cli import main
from undertow.deploy import Cluster
from undertow.deploy._plan import Secrets, files_for, plan
from undertow.errors import ConfigError

pytestmark = pytest.mark.timeout(10)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cluster.toml"

MINIMAL = """
[cluster]
name = "lab"

[hosts.a]
address = "10.0.0.1"

[hosts.b]
address = "10.0.0.2"
python = "/opt/venv/bin/python"

[redis]
host = "a"
"""


def load(tmp_path: Path, text: str) -> Cluster:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return Cluster.load(path)


def fails(tmp_path: Path, text: str, *said: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    for part in said:
        assert part in message, message
    return message


def test_the_example_is_read_whole() -> None:
    cluster = Cluster.load(EXAMPLE)
    assert cluster.name == "lab"
    assert list(cluster.hosts) == ["node0", "node1", "node2", "node3"]
    assert cluster.redis.host == "node0"
    assert cluster.serve[0].targets == ("services.py",)
    assert cluster.workers[0].hosts == ("node2", "node3")
    assert cluster.workers[0].mode == "process"
    assert cluster.groups == {"big": ("node2", "node3")}
    assert cluster.hosts["node2"].env == {"OMP_NUM_THREADS": "4"}
    assert cluster.ssh.strict_host_keys == "yes"
    assert cluster.used_hosts() == ["node0", "node1", "node2", "node3"]


def test_defaults_of_a_minimal_file(tmp_path: Path) -> None:
    cluster = load(tmp_path, MINIMAL)
    assert cluster.hosts["a"].python == "python3"
    assert cluster.redis.port == 6379
    assert cluster.users == ("admin",)
    assert cluster.curve is True
    assert cluster.used_hosts() == ["a"]  # b runs nothing: ssh never goes there
    assert [p.name for p in plan(cluster)] == ["redis"]


def test_processes_bind_their_hosts_address_and_get_no_secret_on_their_command_line(
    tmp_path: Path,
) -> None:
    cluster = load(tmp_path, MINIMAL + '[[serve]]\nhost = "b"\ntargets = ["s.py"]\n')
    found = Secrets.new(cluster.users)
    serve = plan(cluster)[1]
    assert serve.args[serve.args.index("--host") + 1] == "10.0.0.2"
    assert serve.args[0] == "/opt/venv/bin/python"
    files = files_for(cluster, "b", found)
    for secret in [found.redis_password, *found.tokens.values()]:
        assert not any(secret in arg for p in plan(cluster) for arg in p.args)
        assert any(secret in text for text in files.values())
    assert "redis/password" not in files  # only the Redis host has it


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (('[cluster]\nname = "lab"\n', "[cluster]\n"), ["cluster.name is missing", "name ="]),
        (('name = "lab"', 'name = "a b"'), ["cluster.name = 'a b'", "letters, digits"]),
        (
            ('address = "10.0.0.1"', 'address = "0.0.0.0"'),
            ["hosts.a.address = '0.0.0.0'", "own address"],
        ),
        (('address = "10.0.0.1"', "address = 3"), ["hosts.a.address = 3", "must be a string"]),
        (
            ('address = "10.0.0.1"', 'adress = "10.0.0.1"'),
            ["hosts.a.address is missing", "'adress' is not a key"],
        ),
        (('host = "a"', 'host = "c"'), ["host 'c' is not in [hosts]", "[hosts.c]", "a, b"]),
        (('host = "a"', 'hosts = ["a", "b"]'), ["Redis runs on one host", 'host = "NAME"']),
        (('[redis]\nhost = "a"', ""), ["redis is missing", "[redis]"]),
        (
            ('name = "lab"', 'name = "lab"\nready_timeout = 0'),
            ["cluster.ready_timeout = 0.0", "above 0"],
        ),
        (
            ('name = "lab"', 'name = "lab"\nready_timeout = true'),
            ["cluster.ready_timeout = true", "a number"],
        ),
    ],
)
def test_an_error_names_the_key_the_value_and_the_fix(
    tmp_path: Path, change: tuple[str, str], said: list[str]
) -> None:
    old, new = change
    assert old in MINIMAL
    fails(tmp_path, MINIMAL.replace(old, new, 1), *said)


@pytest.mark.parametrize(
    ("added", "said"),
    [
        (
            '[ssh]\nstrict_host_keys = "no"\n',
            ["ssh.strict_host_keys = 'no'", "'yes', 'accept-new'"],
        ),
        ("[ssh]\nport = 70000\n", ["ssh.port = 70000", "between 1 and 65535"]),
        ('[redis2]\nhost = "a"\n', ["[redis2]: unknown table", "cluster, data"]),
        ('[[worker]]\nhost = "a"\nmode = "threads"\n', ["worker[0].mode = 'threads'", "'thread'"]),
        ('[[worker]]\nhost = "a"\nconcurrency = 0\n', ["worker[0].concurrency = 0", "at least 1"]),
        ('[[worker]]\nhost = "a"\nqueues = "gpu"\n', ["worker[0].queues = 'gpu'", "a list"]),
        (
            '[[worker]]\nhost = "a"\nfunctions = {f = "mod.f"}\n',
            ["worker[0].functions.f", "module:attr"],
        ),
        ('[[serve]]\nhost = "a"\n', ["serve[0].targets is missing", 'targets = ["services.py"]']),
        ('[[serve]]\ntargets = ["s.py"]\n', ["serve[0].host is missing"]),
        ('[[serve]]\nhost = "a"\nhosts = ["b"]\ntargets = ["s.py"]\n', ["not both"]),
        ('[[data]]\nhost = "a"\nmemory_limit = -1\n', ["data[0].memory_limit = -1"]),
        ('[groups]\ngpu = ["a", "z"]\n', ["groups.gpu: host 'z' is not in [hosts]"]),
        ('[security]\nusers = ["ada lovelace"]\n', ["security.users: 'ada lovelace'"]),
        ("[security]\ncurve = 1\n", ["security.curve = 1", "true or false"]),
    ],
)
def test_role_and_option_errors(tmp_path: Path, added: str, said: list[str]) -> None:
    fails(tmp_path, MINIMAL + added, *said)


def test_a_file_that_is_not_toml_or_not_there(tmp_path: Path) -> None:
    fails(tmp_path, "[cluster\nname = 1", "is not valid TOML")
    with pytest.raises(ConfigError, match="cannot read"):
        Cluster.load(tmp_path / "missing.toml")


def test_dry_run_prints_each_hosts_commands_and_reaches_no_host() -> None:
    done = CliRunner().invoke(main, ["up", "--dry-run", str(EXAMPLE)])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0] == "node0 (ada@10.0.0.10), run directory ~/.undertow/clusters/lab/node0:"
    assert lines[1].startswith("  redis: /opt/undertow/venv/bin/python -m undertow.cli broker")
    assert "--bind 10.0.0.10" in lines[1]
    assert (
        "  serve-0: /opt/undertow/venv/bin/python -m undertow.cli serve services.py" in done.output
    )
    assert lines[-1] == "then on node0: undertow group add big node2 node3"


def test_up_and_down_with_a_bad_file_say_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(MINIMAL.replace('host = "a"', 'host = "z"'))
    for command in ("up", "down"):
        done = CliRunner().invoke(main, [command, str(path)])
        assert done.exit_code == 1
        assert "Error: redis: host 'z' is not in [hosts]" in done.output
