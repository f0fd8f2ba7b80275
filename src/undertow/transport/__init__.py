"""Transports: frames over connections. ZeroMQ (tcp, ipc, inproc) for now."""

from undertow.transport._curve import curve_available, keygen, load_public, load_secret
from undertow.transport._router import ServerSocket, bind_router
from undertow.transport._zmq import (
    LockedSocket,
    OwnedSocket,
    connect_dealer,
    context,
    parse_address,
)

__all__ = [
    "LockedSocket",
    "OwnedSocket",
    "ServerSocket",
    "bind_router",
    "connect_dealer",
    "context",
    "curve_available",
    "keygen",
    "load_public",
    "load_secret",
    "parse_address",
]
