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
"""

import contextlib

from undertow.errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectionClosed,
    DeserializationError,
    FunctionNotFound,
    RemoteError,
    RPCTimeout,
    SerializationError,
    TransportError,
    UndertowError,
    WireError,
)
from undertow.rpc import (
    AsyncClient,
    CallFuture,
    Client,
    FunctionOptions,
    Server,
    connect,
    connect_async,
    functions,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "CallFuture",
    "Client",
    "ConfigError",
    "ConnectError",
    "ConnectionClosed",
    "DeserializationError",
    "FunctionNotFound",
    "FunctionOptions",
    "RPCTimeout",
    "RemoteError",
    "SerializationError",
    "Server",
    "TransportError",
    "UndertowError",
    "WireError",
    "__version__",
    "connect",
    "connect_async",
    "functions",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
