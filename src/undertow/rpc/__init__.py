"""Servers and clients: the function server, the sync and async clients, the low-level core.

What the layers above build on is exported here too: the function tables every client shares
(:class:`RemoteFunctions`, :class:`CallOptions`, :class:`FunctionInfo`), the glob options,
and :class:`DataPlane`, the interface through which a server reaches its data server (which
lives in :mod:`undertow.data`, above this layer).
"""

from undertow.rpc._aclient import AsyncClient, connect_async, rpc
from undertow.rpc._calls import Description, FunctionInfo, OutputCallback
from undertow.rpc._client import CallFuture, Client, connect, functions, stats
from undertow.rpc._core import MAX_FRAMES, HandlerServer, check_exposure
from undertow.rpc._functions import (
    CallOptions,
    RemoteFunctions,
    as_attributes,
    client_token,
    make_function,
    not_found,
)
from undertow.rpc._incoming import Incoming
from undertow.rpc._observe import MetricsServer, serve_metrics
from undertow.rpc._options import FunctionOptions, GlobTable
from undertow.rpc._output import OutputSink
from undertow.rpc._plane import DataPlane, JobPlane, PipePlane, plug_data, plug_jobs, plug_patterns
from undertow.rpc._receivers import Job
from undertow.rpc._server import Server
from undertow.rpc._timing import CallTiming, call_timing, explain_target

__all__ = [
    "MAX_FRAMES",
    "AsyncClient",
    "CallFuture",
    "CallOptions",
    "CallTiming",
    "Client",
    "DataPlane",
    "Description",
    "FunctionInfo",
    "FunctionOptions",
    "GlobTable",
    "HandlerServer",
    "Incoming",
    "Job",
    "JobPlane",
    "MetricsServer",
    "OutputCallback",
    "OutputSink",
    "PipePlane",
    "RemoteFunctions",
    "Server",
    "as_attributes",
    "call_timing",
    "check_exposure",
    "client_token",
    "connect",
    "connect_async",
    "explain_target",
    "functions",
    "make_function",
    "not_found",
    "plug_data",
    "plug_jobs",
    "plug_patterns",
    "rpc",
    "serve_metrics",
    "stats",
]
