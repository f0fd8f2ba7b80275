"""Every exception undertow raises, in one tree.

```
UndertowError
├── ConfigError                 a bad option, glob or codec name; names the value and the fix
├── WireError                   a frame or header that cannot be read
│   ├── SerializationError      an argument or result that its codec cannot encode
│   ├── DeserializationError    a payload that its codec cannot decode
│   └── MessageTooLarge         a call over the server's max_message_size (nothing was sent)
├── TransportError
│   ├── ConnectError            the address is malformed or cannot be bound
│   │   └── NotConnected        no connection came up in time; the call was not sent
│   ├── ConnectionLost          the connection dropped while a call ran (it may have run)
│   ├── ConnectionClosed        the client or server was closed while a call waited
│   └── RPCTimeout              (also a builtin TimeoutError) a call missed its deadline
├── RemoteError                 the remote function raised a type we do not rebuild
├── FunctionNotFound            (also an AttributeError) no such function on the server
├── AuthenticationError         (also a PermissionError) credentials missing, wrong or
│                               refused, or an unsigned pickle payload
├── PermissionDenied            (also a PermissionError) the server's rule for the function
│                               does not allow this caller
├── BackendError                the cluster backend (SQLite file, Redis) cannot be used
│   └── BrokerUnavailable       it did not answer within the deadline (down, unreachable)
├── ClusterError                a session cluster's process did not start, or it was closed
├── DataNotFound                (also a LookupError) no object under that key in a data store
├── DataUnavailable             (also a LookupError) the data server holding it cannot be reached
├── ServiceNotFound             (also a LookupError) no live instance of a service
├── QueueError                  a job of the queue did not give a result
│   ├── JobFailed               it failed for good (dead letter, or no error to rebuild)
│   ├── JobCancelled            it was cancelled
│   └── JobTimeout              (also a builtin TimeoutError) no result within the timeout
└── StreamError                 a message of a stream (master, pipeline) went wrong on its way
    └── StreamTimeout           (also a builtin TimeoutError) no answer came within the timeout
```

A remote exception whose type is a builtin (``ValueError``, ``KeyError``...) or a type
registered as safe is raised in the client as that type, with the remote traceback
chained beneath it; any other type becomes :class:`RemoteError`.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BrokerUnavailable",
    "ClusterError",
    "ConfigError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionLost",
    "DataNotFound",
    "DataUnavailable",
    "DeserializationError",
    "FunctionNotFound",
    "JobCancelled",
    "JobFailed",
    "JobTimeout",
    "MessageTooLarge",
    "NotConnected",
    "PermissionDenied",
    "QueueError",
    "RPCTimeout",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "ServiceNotFound",
    "StreamError",
    "StreamTimeout",
    "TransportError",
    "UndertowError",
    "WireError",
]


class UndertowError(Exception):
    """The root of every error undertow raises itself."""


class ConfigError(UndertowError, ValueError):
    """An option, glob pattern or codec name is not valid."""


class WireError(UndertowError):
    """A message cannot be framed or read."""


class SerializationError(WireError):
    """A value cannot be encoded by the codec chosen for it."""


class DeserializationError(WireError):
    """A payload cannot be decoded by the codec it claims."""


class MessageTooLarge(WireError):
    """A message is larger than the receiving server accepts (``max_message_size``)."""


class TransportError(UndertowError):
    """A problem with the connection rather than the call."""


class ConnectError(TransportError):
    """An address cannot be parsed, bound or connected to."""


class NotConnected(ConnectError):
    """No connection to the server was up in time, so the call was not sent (a client that
    fails over, such as a service proxy, then tries another instance)."""


class ConnectionLost(TransportError):
    """The connection to the server dropped while a call was running: the call may or may
    not have completed on the server."""


class ConnectionClosed(TransportError):
    """The client or server closed while a call was waiting on it."""


class BackendError(UndertowError):
    """The cluster backend (SQLite file or Redis server) cannot be used."""


class DataNotFound(UndertowError, LookupError):
    """No object under that key: deleted, never put, or lost with a restart.

    Attributes:
        key: the key that was asked for.
    """

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class DataUnavailable(UndertowError, LookupError):
    """The data server that holds a value cannot be reached (stopped, or its host cut off),
    so a call that needs the value fails at once instead of at its deadline.

    Attributes:
        key: the value's key.
        address: the data server that holds it.
    """

    def __init__(self, message: str, *, key: str = "", address: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.address = address


class ServiceNotFound(UndertowError, LookupError):
    """No live instance of a service is registered (within the deadline)."""


class RPCTimeout(TransportError, TimeoutError):
    """A call did not complete before its deadline.

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """


class FunctionNotFound(UndertowError, AttributeError):
    """The server has no function by that name.

    Attributes:
        name: the name that was asked for.
        available: the names the server does offer.
    """

    def __init__(self, message: str, *, name: str = "", available: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.available = available


class AuthenticationError(UndertowError, PermissionError):
    """The call needs credentials that were missing or wrong, the server refused the
    client's messages, or a payload that only an authenticated peer may send came unsigned."""


class PermissionDenied(UndertowError, PermissionError):
    """The server's authorization rule for the function does not allow this caller."""


class BrokerUnavailable(BackendError):
    """The backend (Redis, the SQLite file's owner) did not answer within the deadline of
    the operation: down, restarting or unreachable. Nothing is known to have been stored;
    a submit with an ``idempotency_key`` may be repeated safely."""


class ClusterError(UndertowError):
    """A session cluster (:class:`undertow.Cluster`) could not start one of its processes
    (the message holds its output), or was used after it was closed; or ``undertow up`` /
    ``undertow down`` could not check, start or stop a host's part (the message names the
    host, what failed and the end of the process's log)."""


class QueueError(UndertowError):
    """A job did not give a result.

    Attributes:
        job_id: the job's id.
    """

    def __init__(self, message: str, *, job_id: str = "") -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailed(QueueError):
    """A job failed for good: dead-lettered (its attempts spent, or its leases expired), or
    failed without an error that could be rebuilt. The last error, if any, is chained as its
    ``__cause__``. (A job whose function raised, without retries left, raises that error
    itself, rebuilt as for a call.)"""


class JobCancelled(QueueError):
    """A job was cancelled before it gave a result."""


class JobTimeout(QueueError, TimeoutError):
    """A job gave no result within the time its caller waited (the job itself goes on).

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """


class StreamError(UndertowError):
    """A message of a stream (through a master, a pipeline, to a sink) could not be handled:
    a stage or master refused it (full, not there, not allowed), it could not be encoded, or
    a worker answered it with something that is not an answer. Raised for that message only;
    the stream goes on.

    Attributes:
        item: the message's id in its stream (its input's position), or None.
    """

    def __init__(self, message: str, *, item: int | None = None) -> None:
        super().__init__(message)
        self.item = item


class StreamTimeout(StreamError, TimeoutError):
    """No answer of a stream arrived within the time its consumer waited; the messages still
    out may yet be answered.

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """


class RemoteTraceback(Exception):
    """Carries the remote traceback text; chained as the ``__cause__`` of a remote error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text.rstrip("\n")


class RemoteError(UndertowError):
    """The remote function raised an exception of a type the client does not rebuild.

    Attributes:
        remote_type: the qualified name of the remote exception's type.
        remote_message: ``str()`` of the remote exception.
        remote_traceback: the full remote traceback, as text.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str) -> None:
        super().__init__(f"{remote_type}: {remote_message}" if remote_message else remote_type)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
