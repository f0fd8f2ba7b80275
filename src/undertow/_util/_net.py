"""Small facts about network addresses."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
import sys

__all__ = ["address_host", "interface_addresses", "is_local_address", "is_loopback"]

#: loopback as it is usually written
_COMMON = frozenset(("127.0.0.1", "localhost", "::1"))
#: Linux's ioctl that reads an interface's IPv4 address
_SIOCGIFADDR = 0x8915
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


def interface_addresses() -> list[str]:
    """The addresses of this machine's network interfaces, loopback aside (Linux: IPv4 and
    IPv6; elsewhere none: callers also resolve the host's name)."""
    if not sys.platform.startswith("linux"):
        return []
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):  # (an interface without an IPv4 address)
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                found.append(socket.inet_ntoa(answer[20:24]))
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as table:
        for line in table:
            raw = line.split()[0]
            text = ":".join(raw[i : i + 4] for i in range(0, 32, 4))
            found.append(str(ipaddress.ip_address(text)))
    usable = (a for a in found if not is_loopback(a) and not ipaddress.ip_address(a).is_link_local)
    return list(dict.fromkeys(usable))
