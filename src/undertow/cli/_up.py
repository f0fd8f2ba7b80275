"""``undertow up`` and ``undertow down``: a cluster of a ``cluster.toml``, over ssh."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from undertow.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    from undertow.deploy import Cluster

__all__ = ["cluster_down", "cluster_up"]

_path = click.argument("path", metavar="CLUSTER.TOML", type=click.Path(dir_okay=False))


def _load(path: str) -> Cluster:
    from undertow.deploy import Cluster

    try:
        return Cluster.load(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("up")
@_path
@click.option("--dry-run", is_flag=True, help="Print what would start where; start nothing.")
def cluster_up(path: str, dry_run: bool) -> None:
    """Start the cluster of CLUSTER.TOML over ssh: Redis, then services, data servers and
    workers, each bound to its host's address with tokens (docs/deploy.md).

    Every host's Python and undertow must be this one's versions: nothing starts otherwise.
    """
    from undertow.deploy import dry_run as print_plan
    from undertow.deploy import up

    cluster = _load(path)
    if dry_run:
        print_plan(cluster, click.echo)
        return
    try:
        up(cluster, click.echo)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("down")
@_path
def cluster_down(path: str) -> None:
    """Stop every process `undertow up CLUSTER.TOML` started (SIGTERM, then SIGKILL after
    [cluster] stop_timeout) and remove the secrets it left on the hosts."""
    from undertow.deploy import down

    cluster = _load(path)
    try:
        down(cluster, click.echo)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
