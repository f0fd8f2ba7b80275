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
from undertow.data import Pointer
from undertow.errors import (
    AuthenticationError,
    BackendError,
    ConfigError,
    ConnectError,
    ConnectionClosed,
    ConnectionLost,
    DataNotFound,
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
    TransportError,
    UndertowError,
    WireError,
)
from undertow.queue import Job, JobQueue, Worker
from undertow.rpc import (
    AsyncClient,
    CallFuture,
    Client,
    FunctionOptions,
    Server,
    connect_async,
    functions,
)
from undertow.service import connect, put

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BackendError",
    "CallFuture",
    "Client",
    "ConfigError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionLost",
    "DataNotFound",
    "DeserializationError",
    "FunctionNotFound",
    "FunctionOptions",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobQueue",
    "JobTimeout",
    "MessageTooLarge",
    "NotConnected",
    "PermissionDenied",
    "Pointer",
    "QueueError",
    "RPCTimeout",
    "RemoteError",
    "SerializationError",
    "Server",
    "ServiceNotFound",
    "TransportError",
    "UndertowError",
    "WireError",
    "Worker",
    "__version__",
    "catalog",
    "connect",
    "connect_async",
    "functions",
    "put",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
