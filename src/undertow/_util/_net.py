"""Small facts about network addresses."""

from __future__ import annotations

__all__ = ["address_host", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for a host name or IP address of this machine's loopback interface."""
    return host in ("localhost", "::1") or host.startswith("127.")


def address_host(address: str) -> str:
    """The host of ``scheme://host:port`` (IPv6 brackets removed)."""
    return address.partition("://")[2].rpartition(":")[0].strip("[]")
