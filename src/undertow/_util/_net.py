"""Small facts about network addresses."""

from __future__ import annotations

import ipaddress

__all__ = ["address_host", "is_local_address", "is_loopback"]

#: loopback as it is usually written
_COMMON = frozenset(("127.0.0.1", "localhost", "::1"))
#: schemes whose addresses never leave this machine
_LOCAL_SCHEMES = ("ipc", "inproc")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` or an IP address of the loopback interface (``127.0.0.0/8``,
    ``::1``; brackets allowed); a name that merely starts with ``127.`` is not."""
    host = host.strip("[]")
    if host in _COMMON:  # the usual spellings, without parsing (HTTP asks on every request)
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_host(address: str) -> str:
    """The host of ``scheme://host:port`` or ``host:port`` (IPv6 brackets removed)."""
    rest = address.partition("://")[2] if "://" in address else address
    return rest.partition("/")[0].rpartition(":")[0].strip("[]")


def is_local_address(address: str) -> bool:
    """True when ``address`` (``tcp://``, ``http://``, ``host:port``, ``ipc://``,
    ``inproc://``) cannot reach beyond this machine."""
    scheme, sep, _ = address.partition("://")
    if sep and scheme.lower() in _LOCAL_SCHEMES:
        return True
    return is_loopback(address_host(address))
