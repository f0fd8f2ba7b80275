"""Every Redis key undertow uses, in one place.

::

    undertow:services                       SET     names of services that have registered
    undertow:service:{name}:instances       SET     ids of the service's instances
    undertow:instance:{id}                  STRING  the instance's record (JSON), expiring
                                                    after its TTL unless a heartbeat renews it

    undertow:data                           SET     keys of every record in the data catalog
    undertow:data:{key}                     STRING  the record's fields (JSON: key, secret,
                                                    type_name, size, created, owner)
    undertow:data:{key}:locations           LIST    where it is, in the order recorded: one
                                                    JSON per location (protocol, host, port,
                                                    path and the object's size)
    undertow:data:{key}:tags                SET     the record's tags
    undertow:tag:{tag}                      SET     keys of the records that carry the tag

An instance whose key expired is dead; its id is removed from its service's set by the next
lookup that finds it missing. Data records never expire: a record's keys, its key in
``undertow:data`` and in its tags' sets are written and removed together, in one transaction.
"""

from __future__ import annotations

__all__ = [
    "DATA",
    "PREFIX",
    "SERVICES",
    "data",
    "data_locations",
    "data_tags",
    "instance",
    "service_instances",
    "tag",
]

PREFIX = "undertow"
SERVICES = f"{PREFIX}:services"
DATA = f"{PREFIX}:data"


def service_instances(service: str) -> str:
    """The set of a service's instance ids."""
    return f"{PREFIX}:service:{service}:instances"


def instance(instance_id: str) -> str:
    """An instance's record."""
    return f"{PREFIX}:instance:{instance_id}"


def data(key: str) -> str:
    """A data record's fields (without its tags and locations)."""
    return f"{DATA}:{key}"


def data_locations(key: str) -> str:
    """The list of a data record's locations."""
    return f"{DATA}:{key}:locations"


def data_tags(key: str) -> str:
    """The set of a data record's tags."""
    return f"{DATA}:{key}:tags"


def tag(name: str) -> str:
    """The set of the keys of the data records tagged ``name``."""
    return f"{PREFIX}:tag:{name}"
