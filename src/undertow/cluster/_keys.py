"""Every Redis key undertow uses, in one place.

::

    undertow:services                       SET     names of services that have registered
    undertow:service:{name}:instances       SET     ids of the service's instances
    undertow:instance:{id}                  STRING  the instance's record (JSON), expiring
                                                    after its TTL unless a heartbeat renews it

An instance whose key expired is dead; its id is removed from its service's set by the next
lookup that finds it missing.
"""

from __future__ import annotations

__all__ = ["PREFIX", "SERVICES", "instance", "service_instances"]

PREFIX = "undertow"
SERVICES = f"{PREFIX}:services"


def service_instances(service: str) -> str:
    """The set of a service's instance ids."""
    return f"{PREFIX}:service:{service}:instances"


def instance(instance_id: str) -> str:
    """An instance's record."""
    return f"{PREFIX}:instance:{instance_id}"
