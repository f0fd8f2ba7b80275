"""Transports: frames over connections. ZeroMQ (tcp, ipc, inproc), plain sockets (TCP, with
or without TLS, and Unix) and HTTP.

The HTTP names (the server app on starlette and uvicorn, the callers on httpx) are imported
on first use, so that a program that never speaks HTTP never loads the ``http`` extra.
"""

import importlib
from typing import TYPE_CHECKING, Any

from undertow.transport._curve import curve_available, keygen, load_public, load_secret
from undertow.transport._http_api import CallFailed, Gateway, failure
from undertow.transport._lasting import SharedValue, shared_copy, shared_of
from undertow.transport._plain import PlainFrame, PlainSocket, local_address
from undertow.transport._plain_hub import PlainHub
from undertow.transport._plain_tls import ServerTls, cert_refused, client_tls, is_tls, server_tls
from undertow.transport._router import ServerSocket, bind_router
from undertow.transport._shm import SHM_ABOVE
from undertow.transport._shm import sending as shm_sending
from undertow.transport._zmq import (
    LockedSocket,
    OwnedSocket,
    connect_dealer,
    context,
    parse_address,
)

if TYPE_CHECKING:
    from undertow.transport._http import HttpServer, http_app, serve_http
    from undertow.transport._http_client import AsyncHttpCaller, HttpCaller, fetch_data

__all__ = [
    "SHM_ABOVE",
    "AsyncHttpCaller",
    "CallFailed",
    "Gateway",
    "HttpCaller",
    "HttpServer",
    "LockedSocket",
    "OwnedSocket",
    "PlainFrame",
    "PlainHub",
    "PlainSocket",
    "ServerSocket",
    "ServerTls",
    "SharedValue",
    "bind_router",
    "cert_refused",
    "client_tls",
    "connect_dealer",
    "context",
    "curve_available",
    "failure",
    "fetch_data",
    "http_app",
    "is_tls",
    "keygen",
    "load_public",
    "load_secret",
    "local_address",
    "parse_address",
    "serve_http",
    "server_tls",
    "shared_copy",
    "shared_of",
    "shm_sending",
]

#: names imported on first use, and the module each comes from
_LAZY = {
    "HttpServer": "_http",
    "http_app": "_http",
    "serve_http": "_http",
    "AsyncHttpCaller": "_http_client",
    "HttpCaller": "_http_client",
    "fetch_data": "_http_client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
