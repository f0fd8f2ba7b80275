"""undertow: call Python on other machines as if it were local.

::

    import undertow

    server = undertow.Server(name="lab")

    @server.register
    def add(x, y):
        return x + y

    address = server.start()                  # or server.serve_forever(port=5555)
    client = undertow.connect(address)
    client.add(1, 2)                          # 3

    undertow.connect("MemKeyValue")           # a service, found through the cluster registry
"""

import contextlib

from undertow import catalog
from undertow._util import setup_logging
from undertow.data import Pointer
from undertow.errors import (
    AuthenticationError,
    BackendError,
    BrokerUnavailable,
    ClusterError,
    ConfigError,
    ConnectError,
    ConnectionClosed,
    ConnectionLost,
    DataNotFound,
    DataUnavailable,
    DeserializationError,
    FunctionNotFound,
    JobCancelled,
    JobFailed,
    JobTimeout,
    MessageTooLarge,
    NotConnected,
    PermissionDenied,
    QueueError,
    RemoteError,
    RPCTimeout,
    SerializationError,
    ServiceNotFound,
    StreamError,
    StreamTimeout,
    TransportError,
    UndertowError,
    WireError,
)
from undertow.patterns import (
    DROP,
    Master,
    MasterWorker,
    Pipeline,
    Result,
    Sink,
    Stream,
    To,
    map,
    route,
    stream,
    tee,
)
from undertow.queue import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Cluster,
    Job,
    JobQueue,
    Worker,
    as_completed,
    explain,
    job,
    local,
    wait,
)
from undertow.rpc import (
    AsyncClient,
    CallFuture,
    Client,
    FunctionOptions,
    Server,
    connect_async,
    functions,
    serve_metrics,
    stats,
)
from undertow.service import connect, put

__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "DROP",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "AsyncClient",
    "AuthenticationError",
    "BackendError",
    "BrokerUnavailable",
    "CallFuture",
    "Client",
    "Cluster",
    "ClusterError",
    "ConfigError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionLost",
    "DataNotFound",
    "DataUnavailable",
    "DeserializationError",
    "FunctionNotFound",
    "FunctionOptions",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobQueue",
    "JobTimeout",
    "Master",
    "MasterWorker",
    "MessageTooLarge",
    "NotConnected",
    "PermissionDenied",
    "Pipeline",
    "Pointer",
    "QueueError",
    "RPCTimeout",
    "RemoteError",
    "Result",
    "SerializationError",
    "Server",
    "ServiceNotFound",
    "Sink",
    "Stream",
    "StreamError",
    "StreamTimeout",
    "To",
    "TransportError",
    "UndertowError",
    "WireError",
    "Worker",
    "__version__",
    "as_completed",
    "catalog",
    "connect",
    "connect_async",
    "explain",
    "functions",
    "job",
    "local",
    "map",
    "put",
    "route",
    "serve_metrics",
    "setup_logging",
    "stats",
    "stream",
    "tee",
    "wait",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
