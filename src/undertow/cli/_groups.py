"""``undertow group``: named groups of hosts, kept in the cluster backend, from the shell.

Each command opens the registry (``--backend``, else ``$UNDERTOW_BACKEND``, else the embedded
file), makes its change and closes it. Names and hosts are checked before anything is read
or written, with the rule named.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TypeVar

import click

from undertow.cli._cluster import render_rows
from undertow.cluster import Registry
from undertow.errors import UndertowError
from undertow.storage import check_group_name, check_hosts

__all__ = ["host_groups"]

T = TypeVar("T")

_backend_option = click.option(
    "--backend",
    default=None,
    help="Registry URL (default: $UNDERTOW_BACKEND, else ~/.undertow/cluster.db).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")


def _name(value: str) -> str:
    try:
        return check_group_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None


def _hosts(values: Sequence[str]) -> list[str]:
    try:
        return check_hosts(list(values))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="HOST") from None


def _run(backend: str | None, op: Callable[[Registry], T]) -> tuple[T, str]:
    """``op`` on the registry, and its URL (no password); an error of undertow's becomes a
    click error naming it."""
    try:
        with Registry(backend) as registry:
            return op(registry), registry.url
    except ImportError as exc:  # redis:// without the redis client installed
        raise click.ClickException(str(exc)) from None
    except UndertowError as exc:
        raise click.ClickException(str(exc)) from None


def _unknown(name: str, url: str) -> click.ClickException:
    return click.ClickException(
        f"no host group {name!r} in {url} (list the groups with `undertow group ls`)"
    )


def _listed(hosts: Sequence[str]) -> str:
    return ", ".join(hosts)


@click.group("group")
def host_groups() -> None:
    """Named groups of hosts (e.g. "gpu": node-3, node-7), kept in the registry, for
    sending jobs to the hosts of a group by its name."""


@host_groups.command("add")
@click.argument("name")
@click.argument("hosts", metavar="HOST...", nargs=-1, required=True)
@_backend_option
def group_add(name: str, hosts: tuple[str, ...], backend: str | None) -> None:
    """Add hosts to group NAME, creating it if there is none; hosts it has already keep
    their place. NAME is 1-58 letters, digits, '_', '.' or '-'.

    \b
        undertow group add gpu node-3 node-7
    """
    name, wanted = _name(name), _hosts(hosts)

    def add(registry: Registry) -> tuple[list[str] | None, list[str] | None]:
        before = registry.group(name)
        registry.add_to_group(name, wanted)
        return before, registry.group(name)

    (before, after), _ = _run(backend, add)
    if before is None:
        click.echo(f"created group {name}: {_listed(after or wanted)}")
        return
    new = [host for host in wanted if host not in before]
    if new:
        click.echo(f"added {_listed(new)} to group {name}: {_listed(after or wanted)}")
    else:
        click.echo(f"group {name} has them already: {_listed(after or before)}")


@host_groups.command("rm")
@click.argument("name")
@click.argument("hosts", metavar="[HOST...]", nargs=-1)
@_backend_option
def group_rm(name: str, hosts: tuple[str, ...], backend: str | None) -> None:
    """Delete group NAME, or only the given hosts from it (the group goes with its last
    host). Exits 1 if there is no group NAME.

    \b
        undertow group rm gpu node-7
        undertow group rm gpu
    """
    name = _name(name)
    if not hosts:
        dropped, url = _run(backend, lambda r: r.drop_group(name))
        if not dropped:
            raise _unknown(name, url)
        click.echo(f"deleted group {name}")
        return
    wanted = _hosts(hosts)

    def remove(registry: Registry) -> tuple[list[str] | None, list[str] | None]:
        before = registry.group(name)
        if not registry.remove_from_group(name, wanted):
            return None, None
        return before, registry.group(name)

    (before, after), url = _run(backend, remove)
    if before is None:
        raise _unknown(name, url)
    absent = [host for host in wanted if host not in before]
    if absent:
        click.echo(f"undertow: group {name} did not have {_listed(absent)}", err=True)
    if after is None:
        click.echo(f"deleted group {name} (no hosts left)")
    else:
        click.echo(f"group {name}: {_listed(after)}")


@host_groups.command("ls")
@_backend_option
@_json_option
def group_ls(backend: str | None, as_json: bool) -> None:
    """List the host groups by name, with their hosts."""
    found, url = _run(backend, lambda r: r.groups())
    if as_json:
        rows = [{"name": name, "hosts": hosts} for name, hosts in found.items()]
        click.echo(json.dumps({"backend": url, "groups": rows}, indent=2))
        return
    if not found:
        click.echo(
            f"backend {url}: no host groups (make one with `undertow group add NAME HOST...`)"
        )
        return
    click.echo(f"backend {url}")
    lines = [[name, str(len(hosts)), _listed(hosts)] for name, hosts in found.items()]
    click.echo(render_rows(["GROUP", "SIZE", "HOSTS"], lines))


@host_groups.command("show")
@click.argument("name")
@_backend_option
@_json_option
def group_show(name: str, backend: str | None, as_json: bool) -> None:
    """Print the hosts of group NAME, one a line, in the order they were added. Exits 1 if
    there is no group NAME."""
    name = _name(name)
    hosts, url = _run(backend, lambda r: r.group(name))
    if hosts is None:
        raise _unknown(name, url)
    if as_json:
        click.echo(json.dumps({"backend": url, "name": name, "hosts": hosts}, indent=2))
        return
    click.echo("\n".join(hosts))
