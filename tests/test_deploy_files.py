"""The deployment files shipped in deploy/ (systemd units, the Kubernetes manifest) and the
commands `undertow up` plans: the manifest is valid for Kubernetes (kubernetes-validate's
schemas), and every command line in them parses with the real CLI, every environment
variable is one undertow reads, so they cannot rot as the CLI changes."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from undertow.cli import main
from undertow.config import BACKEND_ENV, HOME_ENV, HostSettings
from undertow.deploy import Cluster
from undertow.deploy._plan import plan

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
MANIFEST = ROOT / "deploy" / "kubernetes" / "undertow.yaml"
#: the environment variables undertow reads that the files may set
KNOWN_ENV = {BACKEND_ENV, HOME_ENV} | {
    f"UNDERTOW_{field.name.upper()}" for field in dataclasses.fields(HostSettings)
}


def parse(args: list[str]) -> click.Context:
    """``undertow ARGS`` parsed by the real CLI, down to its last subcommand (nothing runs);
    a click error if an option or argument is wrong."""
    command: click.Command = main
    context = click.Context(main, info_name="undertow")
    words = list(args)
    while isinstance(command, click.Group):
        name, *words = words
        found = command.get_command(context, name)
        assert found is not None, f"undertow has no command {name!r}: {args}"
        command = found
        context = click.Context(command, info_name=name, parent=context)
    context = command.make_context(context.info_name, words, parent=context.parent)
    return context


def _unit(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_the_systemd_units_start_real_undertow_commands() -> None:
    assert {p.name for p in UNITS} == {
        "undertow-serve.service", "undertow-data.service", "undertow-worker@.service"
    }  # fmt: skip
    for unit in UNITS:
        values = _unit(unit)
        (start,) = values["ExecStart"]
        program, *args = shlex.split(start.replace("%i", "default"))
        assert program.endswith("/undertow"), unit.name
        context = parse(args)
        assert context.command.name in ("serve", "worker"), unit.name
        for setting in values.get("Environment", []):
            assert setting.split("=")[0] in KNOWN_ENV, (unit.name, setting)
        assert "UNDERTOW_TOKEN=" not in unit.read_text()  # secrets: the EnvironmentFile only


def _containers(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for doc in documents:
        if doc["kind"] == "Deployment":
            found += doc["spec"]["template"]["spec"]["containers"]
    return found


def test_the_kubernetes_manifest_is_valid_and_runs_real_undertow_commands() -> None:
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    for doc in documents:  # raises kubernetes_validate.ValidationError, naming the field
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == ["Deployment"] * 3 + ["Namespace", "Secret", "Service", "Service"]
    commands = [c["command"] for c in _containers(documents) if c["command"][0] == "undertow"]
    assert len(commands) == 2  # the server and the worker
    for command in commands:
        parse([arg.replace("$(POD_IP)", "10.1.2.3") for arg in command[1:]])
    for container in _containers(documents):
        for env in container.get("env", []):
            assert env["name"] in KNOWN_ENV | {"POD_IP"}, env
            if env["name"] == BACKEND_ENV:
                assert "secretKeyRef" in env["valueFrom"]  # never a literal password


def test_the_commands_up_plans_for_the_example_parse_with_the_real_cli() -> None:
    cluster = Cluster.load(ROOT / "examples" / "cluster.toml")
    procs = plan(cluster)
    assert {p.role for p in procs} == {"redis", "serve", "data", "worker"}
    for proc in procs:
        _python, dash_m, module, *args = proc.args
        assert (dash_m, module) == ("-m", "undertow.cli")
        parse([arg.replace("{run}", "/run/dir") for arg in args])


def test_a_command_line_that_the_cli_does_not_know_fails_the_check() -> None:
    with pytest.raises(click.NoSuchOption):
        parse(["worker", "--queues", "default"])
    with pytest.raises(AssertionError, match="no command"):
        parse(["data", "serves"])
