"""Servers and clients: the function server, the sync and async clients, the low-level core."""

from undertow.rpc._aclient import AsyncClient, connect_async, rpc
from undertow.rpc._client import CallFuture, Client, connect, functions
from undertow.rpc._core import MAX_FRAMES, HandlerServer, Incoming, check_exposure
from undertow.rpc._options import FunctionOptions
from undertow.rpc._server import Server

__all__ = [
    "MAX_FRAMES",
    "AsyncClient",
    "CallFuture",
    "Client",
    "FunctionOptions",
    "HandlerServer",
    "Incoming",
    "Server",
    "check_exposure",
    "connect",
    "connect_async",
    "functions",
    "rpc",
]
