"""Settings objects: defaults, validation, the loader's order (argument, environment, file,
default) and the sources it records, and a service host made from a settings object."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

import undertow
from undertow.cluster import Registry
from undertow.config import (
    HostSettings,
    ServerSettings,
    Settings,
    _loader,
    config_file,
    effective_settings,
    setting,
    settings_rows,
)
from undertow.errors import AuthenticationError, ConfigError
from undertow.security import new_token
from undertow.service import ServiceHost, ServiceModule
from undertow.service._launch import main

from .test_service import WAIT, Kitchen, Plain, serving


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    path.chmod(0o600)
    return path


def sources(settings: Settings) -> dict[str, str]:
    return {row.name: row.source for row in settings_rows(settings)}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write(
        tmp_path / "config.toml",
        """
        token = "for clients, outside any table"

        [host]
        port = 7001
        ttl = 4
        quiet = true
        memory_limit = 1000

        [server]
        max_workers = 3
        """,
    )


# -- the loader's order ------------------------------------------------------------------------


def test_an_argument_beats_the_environment_which_beats_the_file_which_beats_the_default(config):
    environ = {"UNDERTOW_PORT": "7002", "UNDERTOW_TTL": "5.5", "UNDERTOW_HOST": "10.1.2.3"}
    settings = HostSettings.load(environ=environ, file=config, port=7003, quiet=None)
    assert settings.port == 7003  # argument, environment and file all set it
    assert settings.host == "10.1.2.3"  # environment; the file does not set it
    assert settings.ttl == 5.5  # environment over the file's 4
    assert settings.quiet is True  # None is no argument: the file's
    assert settings.memory_limit == 1000  # the file
    assert settings.http_port is None
    assert settings.insecure is False
    assert sources(settings) == {
        **{row.name: "default" for row in settings_rows(HostSettings())},
        "port": "argument",
        "host": "$UNDERTOW_HOST",
        "ttl": "$UNDERTOW_TTL",
        "quiet": f"[host] in {config}",
        "memory_limit": f"[host] in {config}",
    }
    server = ServerSettings.load(environ={}, file=config)
    assert server.max_workers == 3
    assert sources(server)["max_workers"] == f"[server] in {config}"


def test_the_environment_and_the_file_are_read_when_the_loader_is_called(
    undertow_home, monkeypatch
):
    assert config_file() == undertow_home / "config.toml"
    assert HostSettings.load().port == 0  # no file yet, nothing in the environment
    write(undertow_home / "config.toml", "[host]\nport = 7004\n")
    assert HostSettings.load().port == 7004
    monkeypatch.setenv("UNDERTOW_PORT", "7005")
    assert HostSettings.load().port == 7005
    assert HostSettings().port == 0  # a settings object made directly reads neither


def test_environment_values_are_parsed_by_the_fields_type(tmp_path):
    environ = {
        "UNDERTOW_INSECURE": "yes",
        "UNDERTOW_ALLOW_ANONYMOUS": "0",
        "UNDERTOW_MEMORY_LIMIT": "2_000_000",
        "UNDERTOW_TTL": "2",
        "UNDERTOW_HTTP_PORT": "none",
        "UNDERTOW_ADVERTISE": "  ",  # blank: not set
        "UNDERTOW_NAME": "renamed",  # a name is never taken from the environment
    }
    settings = HostSettings.load(environ=environ, file=tmp_path / "absent.toml")
    assert settings.insecure is True
    assert settings.allow_anonymous is False
    assert settings.memory_limit == 2_000_000
    assert settings.ttl == 2.0
    assert isinstance(settings.ttl, float)
    assert settings.http_port is None
    assert settings.advertise is None
    assert settings.name is None


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"port": 70000}, "port must be a port number from 0 to 65535 (0: a free one), not 70000"),
        ({"port": "80"}, "port must be a whole number, not '80'"),
        ({"ttl": 0}, "ttl must be a positive number of seconds, not 0"),
        ({"quiet": 1}, "quiet must be true or false, not 1"),
        ({"host": "a b"}, "host must be a non-empty string without spaces, not 'a b'"),
        ({"memory_limit": -1}, "memory_limit must be a number of bytes, 0 or more, not -1"),
        ({"token": ""}, "token must be a non-empty string, not ***"),
        (
            {"backend": "postgres://ada:hunter2@db/x"},
            "backend must be a backend URL: 'sqlite:///path/to/file.db' or "
            "'redis://host:port/db', not 'postgres://ada:***@db/x'",
        ),
    ],
)
def test_a_bad_value_is_refused_with_the_field_the_value_and_what_to_use(given, message):
    with pytest.raises(ConfigError) as made:
        HostSettings(**given)
    assert str(made.value) == f"{message} (HostSettings)"
    with pytest.raises(ConfigError) as loaded:
        HostSettings.load(environ={}, **given)
    assert str(loaded.value) == message


def test_server_settings_are_checked_too():
    with pytest.raises(ConfigError, match=r"max_workers must be at least 1 .*, not 0"):
        ServerSettings(max_workers=0)
    with pytest.raises(ConfigError, match="max_message_size must be a number of bytes of at"):
        ServerSettings(max_message_size=1000)
    with pytest.raises(ConfigError, match="replay_window must be a positive number"):
        ServerSettings(replay_window=-1)
    assert ServerSettings(replay_window=5).replay_window == 5.0


def test_a_bad_value_from_the_environment_or_the_file_says_where_it_came_from(tmp_path):
    absent = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        HostSettings.load(environ={"UNDERTOW_PORT": "eighty"}, file=absent)
    assert str(caught.value) == "port must be a whole number, not 'eighty' (from $UNDERTOW_PORT)"
    with pytest.raises(ConfigError) as caught:
        HostSettings.load(environ={"UNDERTOW_QUIET": "maybe"}, file=absent)
    assert str(caught.value) == "quiet must be true or false, not 'maybe' (from $UNDERTOW_QUIET)"
    config = write(tmp_path / "config.toml", '[host]\nttl = -3\nport = "7000"\n')
    with pytest.raises(ConfigError) as caught:
        HostSettings.load(environ={}, file=config)
    assert str(caught.value) == f"port must be a whole number, not '7000' (from [host] in {config})"


def test_an_unknown_key_in_the_files_table_is_refused_with_the_known_ones(tmp_path):
    config = write(tmp_path / "config.toml", "[host]\nprot = 7000\n")
    with pytest.raises(ConfigError) as caught:
        HostSettings.load(environ={}, file=config)
    message = str(caught.value)
    assert message.startswith(f"[host] in {config} has an unknown setting 'prot'; the known")
    assert "port, backend, advertise, token, tokens" in message
    assert "name" not in message.partition("known ones are:")[2].split(", ")  # arguments only
    write(config, "host = 3\n")
    with pytest.raises(ConfigError, match=r"'host' in .* must be a table \(\[host\]\), not int"):
        HostSettings.load(environ={}, file=config)
    write(config, "[host\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        HostSettings.load(environ={}, file=config)


def test_an_unknown_argument_is_a_type_error_naming_the_settings():
    with pytest.raises(TypeError, match=r"HostSettings has no setting 'prot'; the settings are"):
        HostSettings.load(environ={}, prot=1)
    with pytest.raises(TypeError, match="no setting 'prot'"):
        ServiceHost([Plain()], prot=1)


def test_a_secret_in_a_file_others_can_read_is_warned_about(tmp_path):
    config = write(tmp_path / "config.toml", f'[host]\ntoken = "{new_token("ada")}"\n')
    config.chmod(0o644)
    with pytest.warns(UserWarning, match=r"holds a secret and can be read by other users"):
        assert HostSettings.load(environ={}, file=config).token is not None


# -- sources -------------------------------------------------------------------------------------


def test_rows_say_each_value_where_it_came_from_and_hide_secrets(config):
    token = new_token("ada")
    environ = {"UNDERTOW_BACKEND": "redis://:hunter2@db:6379/0", "UNDERTOW_TOKEN": token}
    rows = {row.name: row for row in settings_rows(HostSettings.load(environ=environ, file=config))}
    assert rows["backend"].value == "redis://:***@db:6379/0"
    assert rows["backend"].source == "$UNDERTOW_BACKEND"
    assert rows["token"].value == "***"
    assert token not in repr(rows["token"])
    assert token not in repr(HostSettings(token=token))
    assert (rows["ttl"].value, rows["ttl"].env, rows["ttl"].section) == (
        4.0,
        "UNDERTOW_TTL",
        "host",
    )
    assert rows["name"].env == ""  # no variable sets it
    z85 = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"  # a key, not a key file: not shown
    assert {r.name: r.value for r in settings_rows(ServerSettings(curve_secret=z85))}[
        "curve_secret"
    ] == "***"
    key_file = {r.name: r.value for r in settings_rows(HostSettings(curve_secret="a.key_secret"))}
    assert key_file["curve_secret"] == "a.key_secret"
    assert all(row.doc for row in rows.values())
    made = settings_rows(HostSettings(port=7000))  # not loaded: an argument unless a default
    assert {r.name: r.source for r in made}["port"] == "argument"
    assert {r.name: r.source for r in made}["host"] == "default"


def test_the_effective_settings_cover_every_section(config):
    rows = effective_settings(environ={"UNDERTOW_INSECURE": "1"}, file=config)
    by_section: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_section.setdefault(row.section, {})[row.name] = (row.value, row.source)
    assert set(by_section) >= {"host", "server"}
    assert by_section["server"]["insecure"] == (True, "$UNDERTOW_INSECURE")
    assert by_section["host"]["insecure"] == (True, "$UNDERTOW_INSECURE")
    assert by_section["server"]["max_workers"] == (3, f"[server] in {config}")
    assert list(by_section["server"]) == [f.name for f in dataclasses.fields(ServerSettings)]


def test_a_new_settings_class_is_one_dataclass(tmp_path, monkeypatch):
    monkeypatch.setattr(_loader, "_SECTIONS", dict(_loader._SECTIONS))

    @dataclasses.dataclass(frozen=True)
    class QueueSettings(Settings, section="queue_test"):
        queue: str = setting("default", doc="the queue to take jobs from")
        concurrency: int = setting(
            4, doc="jobs at once", check=lambda n: None if n > 0 else "at least 1"
        )

    config = write(tmp_path / "config.toml", '[queue_test]\nqueue = "fast"\n')
    loaded = QueueSettings.load(environ={"UNDERTOW_CONCURRENCY": "8"}, file=config)
    assert (loaded.queue, loaded.concurrency) == ("fast", 8)
    rows = effective_settings(environ={}, file=config)
    assert ("queue_test", "queue", "fast") in [(r.section, r.name, r.value) for r in rows]
    with pytest.raises(ConfigError, match="concurrency must be at least 1, not 0"):
        QueueSettings(concurrency=0)


def test_server_settings_are_the_servers_keywords_and_defaults():
    assert undertow.Server().settings == ServerSettings()
    documented = undertow.Server.__doc__ or ""
    for f in dataclasses.fields(ServerSettings):
        assert f"        {f.name}: " in documented, f.name
    server = undertow.Server("lab", max_workers=3, memory_limit=10, data_calls=False)
    assert server.settings == ServerSettings(
        name="lab", max_workers=3, memory_limit=10, data_calls=False
    )
    assert undertow.Server(max_message_size=None).settings.max_message_size is None  # no limit
    with pytest.raises(TypeError, match="no setting 'max_worker'"):
        undertow.Server(max_worker=3)
    with pytest.raises(undertow.ConfigError, match="not both"):
        undertow.Server(settings=ServerSettings(), max_workers=2)


def test_a_server_takes_its_settings_from_the_environment_and_the_file(monkeypatch, undertow_home):
    (undertow_home / "config.toml").write_text("[server]\nmax_workers = 5\ndata_calls = false\n")
    monkeypatch.setenv("UNDERTOW_MAX_WORKERS", "7")
    server = undertow.Server(data_calls=True)
    assert (server.settings.max_workers, server.settings.data_calls) == (7, True)
    assert server.max_workers == 7


def test_a_host_gives_each_server_its_settings(tmp_path):
    host = HostSettings(insecure=True, data_dir=str(tmp_path), memory_limit=10, curve_secret="k")
    server = host.server_for("Kitchen")
    assert server == ServerSettings(
        name="Kitchen",
        insecure=True,
        data_dir=str(tmp_path / "Kitchen"),
        memory_limit=10,
        curve_secret="k",
    )


# -- the service host ----------------------------------------------------------------------------


def test_a_host_made_from_a_settings_object_serves_with_them(tmp_path):
    token = new_token("ada")
    settings = HostSettings(quiet=True, ttl=30, token=token, data_dir=str(tmp_path / "data"))
    with serving(ServiceHost([Kitchen()], settings=settings)) as host:
        assert host.settings is settings
        with Registry() as registry:
            (instance,) = registry.instances("Kitchen")
        assert instance.ttl == 30.0
        assert instance.authenticates
        with ServiceModule.discover("Kitchen", timeout=WAIT, token=token) as kitchen:
            assert kitchen.greet("ada") == "hello ada!"
        with pytest.raises(AuthenticationError, match="requires authentication"):
            ServiceModule.discover("Kitchen", timeout=WAIT, token=False)


def test_a_host_made_from_options_reads_the_environment_and_the_file(undertow_home, monkeypatch):
    write(undertow_home / "config.toml", "[host]\nttl = 7\nquiet = true\n")
    monkeypatch.setenv("UNDERTOW_HTTP_PORT", "0")
    host = ServiceHost([Plain()], ttl=None, advertise="example.org")
    assert (host.settings.ttl, host.settings.quiet) == (7.0, True)
    assert (host.http_port, host.advertise) == (0, "example.org")
    assert host._ttls == [7.0]
    with pytest.raises(ConfigError, match=r"settings=\.\.\. or options \(quiet\), not both"):
        ServiceHost([Plain()], settings=HostSettings(), quiet=True)


def test_the_launcher_reports_a_bad_setting_and_does_not_serve(monkeypatch, capsys):
    module = "undertow.service._datanode"
    assert main([module, "--ttl", "0"]) == 2  # 0 is a value given, not a missing one
    assert "ttl must be a positive number of seconds, not 0.0" in capsys.readouterr().err
    monkeypatch.setenv("UNDERTOW_PORT", "eighty")
    assert main([module]) == 2
    assert "port must be a whole number, not 'eighty' (from $UNDERTOW_PORT)" in (
        capsys.readouterr().err
    )
    assert "UNDERTOW_PORT" in os.environ


# -- the guide -----------------------------------------------------------------------------------


def test_the_guides_settings_tables_are_what_the_dataclasses_make():
    tools = Path(__file__).resolve().parent.parent / "tools"
    spec = importlib.util.spec_from_file_location("settings_table", tools / "settings_table.py")
    assert spec is not None
    assert spec.loader is not None
    made = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(made)
    guide = made.GUIDE.read_text()
    # else: python tools/settings_table.py --write
    assert made.in_guide(guide) == made.tables()
    for cls in (HostSettings, ServerSettings):
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in made.table(cls)
    assert "| `port` | `UNDERTOW_PORT` | `0` |" in guide
    assert "| `memory_limit` | `UNDERTOW_MEMORY_LIMIT` | `1073741824` (1 GiB) |" in guide
