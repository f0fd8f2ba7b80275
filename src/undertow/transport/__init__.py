"""Transports: frames over connections. ZeroMQ (tcp, ipc, inproc) for now."""

from undertow.transport._zmq import *  # noqa: F403 - the ZeroMQ transport's public names
from undertow.transport._zmq import __all__ as __all__
