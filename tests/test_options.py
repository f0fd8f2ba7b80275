"""Per-function options chosen by glob, and the forms of Server.register."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

import undertow
from undertow.security import allow, parse_token, user_token, user_token_path

DEFAULTS = {
    "input_serialization": "msgpack",
    "output_serialization": "msgpack",
    "timeout": None,
    "output": True,
    "return_pointer": False,
    "auth": None,
    "queue": None,
}


def load_json(path: str) -> str:
    return path


def save_json(path: str) -> str:
    return path


def big_json() -> int:
    return 1


def big_table() -> int:
    return 2


def add(x: int, y: int) -> int:
    return x + y


TOKEN = "opts.Vq3nX8rT1yU6iO0pA4sD7fG2hJ5k"


def make_server(token: str | None = TOKEN) -> undertow.Server:
    server = undertow.Server(name="opts", token=token)
    for fn in (load_json, save_json, big_json, big_table, add):
        server.register(fn.__name__, fn)
    return server


def test_first_matching_glob_wins_in_the_order_given() -> None:
    server = make_server()
    server.config(
        {
            "*_json": {"output_serialization": "json"},
            "big_*": {"timeout": 5},
            "*": {"output": False},
        }
    )
    described = server.describe()
    assert described["big_json"]["glob"] == "*_json"
    assert described["big_json"]["output_serialization"] == "json"
    assert described["big_json"]["timeout"] is None  # options of later globs do not merge in
    assert described["big_table"]["glob"] == "big_*"
    assert described["big_table"]["timeout"] == 5
    assert described["big_table"]["output"] is True
    assert described["add"]["glob"] == "*"
    assert described["add"]["output"] is False


def test_reversing_the_globs_reverses_the_winner() -> None:
    server = make_server()
    server.config(
        {
            "big_*": {"timeout": 5},
            "*_json": {"output_serialization": "json"},
        }
    )
    described = server.describe()
    assert described["big_json"]["glob"] == "big_*"
    assert described["big_json"]["timeout"] == 5
    assert described["big_json"]["output_serialization"] == "msgpack"
    assert described["load_json"]["glob"] == "*_json"
    assert described["load_json"]["output_serialization"] == "json"


def test_describe_shows_glob_and_options_for_every_function() -> None:
    server = make_server()
    server.config(
        {
            "load_*": {
                "input_serialization": "json",
                "output_serialization": "pickle",
                "timeout": 2.5,
                "output": False,
            },
            "save_json": {"input_serialization": "pickle"},
        }
    )
    described = server.describe()
    assert sorted(described) == ["add", "big_json", "big_table", "load_json", "save_json"]
    assert described["load_json"] == {
        "mode": "function",
        "glob": "load_*",
        "input_serialization": "json",
        "output_serialization": "pickle",
        "timeout": 2.5,
        "output": False,
        "return_pointer": False,
        "auth": None,
        "queue": None,
    }
    assert described["save_json"]["glob"] == "save_json"
    assert described["save_json"]["input_serialization"] == "pickle"
    assert described["save_json"]["output_serialization"] == "msgpack"


def test_unmatched_functions_get_defaults() -> None:
    server = make_server()
    server.config({"*_json": {"timeout": 1}, "nothing_*": {"output": False}})
    described = server.describe()
    for name in ("big_table", "add"):
        assert described[name] == {"mode": "function", "glob": None, **DEFAULTS}


def test_without_config_everything_has_defaults() -> None:
    described = make_server().describe()
    assert all(
        entry == {"mode": "function", "glob": None, **DEFAULTS} for entry in described.values()
    )


def test_describe_reports_the_mode() -> None:
    server = undertow.Server()

    async def coro() -> int:
        return 1

    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    for name, fn in (("coro", coro), ("gen", gen), ("agen", agen), ("plain", add)):
        server.register(name, fn)
    modes = {name: entry["mode"] for name, entry in server.describe().items()}
    assert modes == {"coro": "async", "gen": "generator", "agen": "asyncgen", "plain": "function"}


def test_globs_are_case_sensitive() -> None:
    server = make_server()
    server.config({"ADD": {"timeout": 1}, "Big_*": {"timeout": 2}})
    described = server.describe()
    assert described["add"]["glob"] is None
    assert described["big_json"]["glob"] is None


def test_glob_character_classes() -> None:
    server = make_server()
    server.config({"[ls]*_json": {"output": False}, "big_????e": {"timeout": 3}})
    described = server.describe()
    assert described["load_json"]["glob"] == "[ls]*_json"
    assert described["save_json"]["glob"] == "[ls]*_json"
    assert described["big_json"]["glob"] is None
    assert described["big_table"]["glob"] == "big_????e"


def test_stdlib_json_module_as_serialization_is_named_json() -> None:
    server = make_server()
    server.config({"*_json": {"output_serialization": json}})
    assert server.describe()["load_json"]["output_serialization"] == "json"


def test_config_applies_to_functions_registered_later() -> None:
    server = undertow.Server()
    server.config({"late_*": {"timeout": 9}})
    server.register("late_one", add)
    assert server.describe()["late_one"]["glob"] == "late_*"
    assert server.describe()["late_one"]["timeout"] == 9


def test_typo_key_suggests_the_real_option() -> None:
    server = make_server()
    with pytest.raises(undertow.ConfigError) as info:
        server.config({"*_json": {"output_seriazliation": "json"}})
    message = str(info.value)
    assert "output_seriazliation" in message
    assert "did you mean 'output_serialization'" in message
    assert "'*_json'" in message


def test_unrelated_key_lists_the_valid_options() -> None:
    with pytest.raises(undertow.ConfigError) as info:
        make_server().config({"*": {"zzzzzz": 1}})
    for name in DEFAULTS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "timeout",
    [0, -1, -0.5, "10", [5], float("nan"), True],
    ids=["zero", "negative", "negative-float", "string", "list", "nan", "bool"],
)
def test_bad_timeout_is_a_config_error(timeout: Any) -> None:
    server = make_server()
    with pytest.raises(undertow.ConfigError, match="timeout"):
        server.config({"big_*": {"timeout": timeout}})


@pytest.mark.parametrize("timeout", [1, 0.001, 3600.0])
def test_good_timeout_is_accepted(timeout: float) -> None:
    server = make_server()
    server.config({"big_*": {"timeout": timeout}})
    assert server.describe()["big_json"]["timeout"] == timeout


@pytest.mark.parametrize("output", [1, 0, "yes", None])
def test_output_must_be_a_bool(output: Any) -> None:
    with pytest.raises(undertow.ConfigError, match="output"):
        make_server().config({"*": {"output": output}})


def test_unknown_serialization_name_is_a_config_error() -> None:
    with pytest.raises(undertow.ConfigError, match="msgpack"):
        make_server().config({"*": {"input_serialization": "yaml"}})


@pytest.mark.parametrize("options", [None, "json", ["timeout", 1], 5])
def test_options_must_be_a_mapping(options: Any) -> None:
    with pytest.raises(undertow.ConfigError, match="must be a dict"):
        make_server().config({"*": options})


@pytest.mark.parametrize("table", [None, [("*", {})], "*"])
def test_table_must_be_a_mapping(table: Any) -> None:
    with pytest.raises(undertow.ConfigError):
        make_server().config(table)


def test_empty_glob_is_a_config_error() -> None:
    with pytest.raises(undertow.ConfigError, match="non-empty"):
        make_server().config({"": {"timeout": 1}})


def test_pickle_input_without_a_token_is_served_on_loopback_with_the_user_token() -> None:
    server = make_server(token=None)
    assert not server.authenticates
    server.config({"big_*": {"input_serialization": "pickle"}})
    assert server.description()["authenticates"]
    assert server.description()["user"] == parse_token(user_token(create=False) or "")[0]
    assert server.allows_anonymous  # others still reach what takes no pickle


def test_pickle_input_without_a_token_beyond_loopback_is_a_config_error() -> None:
    server = make_server(token=None)
    server.config({"big_*": {"input_serialization": "pickle"}})
    with pytest.raises(undertow.ConfigError) as info:
        server.start("tcp://0.0.0.0:0")  # refused before anything is bound
    message = str(info.value)
    assert "pickle" in message
    assert "token" in message
    assert "big_json" in message
    assert "127.0.0.1" in message


def test_registering_into_a_pickle_glob_without_a_token_turns_the_user_token_on() -> None:
    server = undertow.Server()
    server.config({"np_*": {"input_serialization": "pickle"}})  # nothing matches yet
    assert server.description()["user"] is None
    server.register("np_load", add)
    assert server.description()["user"] is not None


def test_pickle_output_without_a_token_beyond_loopback_is_a_config_error_too() -> None:
    server = make_server(token=None)
    server.config({"big_*": {"output_serialization": "pickle"}})
    with pytest.raises(undertow.ConfigError, match="pickle"):
        server.start("tcp://0.0.0.0:0")


def test_rejected_config_leaves_the_server_as_it_was() -> None:
    server = make_server(token=None)
    server.config({"big_*": {"timeout": 4}})
    with pytest.raises(undertow.ConfigError):
        server.config({"add": {"input_serialization": "json"}, "*": {"timeout": -1}})
    before = server.describe()
    assert before["big_json"]["timeout"] == 4
    assert before["add"]["input_serialization"] == "msgpack"
    # the server is still usable: registering another function works
    server.register("mul", lambda x, y: x * y)
    after = server.describe()
    assert after["mul"] == {"mode": "function", "glob": None, **DEFAULTS}
    assert after["big_json"]["timeout"] == 4


def test_rejected_register_leaves_the_server_usable() -> None:
    user_token()
    user_token_path().chmod(0o644)  # a token others can read is refused
    server = undertow.Server()
    server.config({"np_*": {"input_serialization": "pickle"}})
    with pytest.raises(undertow.ConfigError, match="chmod 600"):
        server.register("np_load", add)
    assert not server.authenticates
    assert "np_load" not in server.describe()
    server.register("plain", add)
    assert sorted(server.describe()) == ["plain"]


def test_invalid_option_does_not_replace_the_table() -> None:
    server = make_server()
    server.config({"big_*": {"timeout": 4}})
    with pytest.raises(undertow.ConfigError):
        server.config({"add": {"timeout": 1}, "big_*": {"timeout": -1}})
    described = server.describe()
    assert described["big_json"]["timeout"] == 4
    assert described["add"]["glob"] is None


def test_return_pointer_is_a_flag_shown_by_describe() -> None:
    server = make_server()
    server.config({"big_*": {"return_pointer": True}})
    assert server.describe()["big_json"]["return_pointer"] is True
    with pytest.raises(
        undertow.ConfigError, match="return_pointer for glob 'big_\\*' must be True"
    ):
        server.config({"big_*": {"return_pointer": "yes"}})


def test_an_auth_rule_is_described_by_name_and_must_be_callable() -> None:
    server = make_server()
    server.config({"big_*": {"auth": allow("alice")}})
    assert server.describe()["big_json"]["auth"] == "allow(alice)"
    with pytest.raises(undertow.ConfigError, match="allow"):
        server.config({"big_*": {"auth": "alice"}})


@pytest.mark.parametrize("key", ["return_pointer", "auth"])
def test_reserved_option_is_silent_when_falsy(key: str) -> None:
    server = make_server()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        server.config({"big_*": {key: False if key == "return_pointer" else None}})
    assert server.describe()["big_json"]["glob"] == "big_*"


def test_config_again_replaces_the_table() -> None:
    server = make_server()
    server.config({"*_json": {"timeout": 1}, "add": {"output": False}})
    server.config({"big_*": {"timeout": 2}})
    described = server.describe()
    assert described["load_json"]["glob"] is None
    assert described["load_json"]["timeout"] is None
    assert described["add"] == {"mode": "function", "glob": None, **DEFAULTS}
    assert described["big_json"]["glob"] == "big_*"
    assert described["big_json"]["timeout"] == 2
    server.config({})
    assert all(entry["glob"] is None for entry in server.describe().values())


# -- register -------------------------------------------------------------------------------


def test_register_name_and_function() -> None:
    server = undertow.Server()
    returned = server.register("n", add)
    assert returned is add
    assert list(server.describe()) == ["n"]


def test_register_as_bare_decorator() -> None:
    server = undertow.Server()

    @server.register
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8  # the function itself is returned
    assert list(server.describe()) == ["double"]


def test_register_as_decorator_with_a_name() -> None:
    server = undertow.Server()

    @server.register("twice")
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    assert list(server.describe()) == ["twice"]


def test_register_again_replaces_the_function() -> None:
    server = undertow.Server()
    server.register("f", add)

    async def f() -> None:
        return None

    server.register("f", f)
    assert server.describe()["f"]["mode"] == "async"


@pytest.mark.parametrize("name", ["_x", "1a", "", "a-b", "a b", "_describe", "x.y"])
def test_invalid_names_are_config_errors(name: str) -> None:
    server = undertow.Server()
    with pytest.raises(undertow.ConfigError, match="identifier"):
        server.register(name, add)
    assert server.describe() == {}


@pytest.mark.parametrize("name", ["_x", "1a"])
def test_invalid_names_are_config_errors_in_decorator_form(name: str) -> None:
    server = undertow.Server()
    with pytest.raises(undertow.ConfigError, match="identifier"):

        @server.register(name)
        def fn() -> None:
            return None

    assert server.describe() == {}


def test_bare_decorator_on_a_private_function_is_a_config_error() -> None:
    server = undertow.Server()

    def _hidden() -> None:
        return None

    with pytest.raises(undertow.ConfigError):
        server.register(_hidden)


def test_registering_a_non_callable_is_a_config_error() -> None:
    server = undertow.Server()
    with pytest.raises(undertow.ConfigError, match="not callable"):
        server.register("n", 42)  # type: ignore[call-overload]


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(undertow.ConfigError, match="max_workers"):
        undertow.Server(max_workers=0)
