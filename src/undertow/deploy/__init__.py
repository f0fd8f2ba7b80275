"""Deployment over ssh: ``undertow up cluster.toml`` starts a cluster's Redis, services, data
servers and workers on its hosts (the real ``undertow`` commands, each bound to its host's
own address, with tokens and CURVE keys), and ``undertow down cluster.toml`` stops them.
docs/deploy.md is the reference.

::

    cluster = Cluster.load("cluster.toml")   # checked: errors name the key, value and fix
    up(cluster, print)                       # checks every host's Python and undertow first
    down(cluster, print)
"""

from undertow.deploy._config import Cluster, DataRole, Host, RedisRole, ServeRole, WorkerRole
from undertow.deploy._up import client_dir, down, dry_run, up

__all__ = [
    "Cluster",
    "DataRole",
    "Host",
    "RedisRole",
    "ServeRole",
    "WorkerRole",
    "client_dir",
    "down",
    "dry_run",
    "up",
]
