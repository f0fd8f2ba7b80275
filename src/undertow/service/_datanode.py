"""``undertow data serve``: a node's data server on its own, registered as the service "data".

Every function server holds a data server already; this one serves nothing else, for nodes
that keep data without computing (and as the default target of :func:`undertow.put`).
"""

from __future__ import annotations

from typing import Any

from undertow.data import data_service
from undertow.errors import ConfigError
from undertow.rpc import Server
from undertow.service._expose import Expose

__all__ = ["DataNode"]


@Expose(name="data")
class DataNode:
    """A data server with nothing else on it: values are put, used through pointers,
    fetched and deleted with the functions every server has."""

    def __init__(self) -> None:
        self._server: Server | None = None

    def bind_server(self, server: Server) -> None:
        """Told by the service host which server serves it."""
        self._server = server

    @Expose()
    def stats(self) -> dict[str, Any]:
        """How many values this node keeps, and the bytes they take in memory."""
        if self._server is None:
            raise ConfigError("the data node is not served yet")
        store = data_service(self._server).kept
        if store is None:
            return {"objects": 0, "memory_used": 0, "memory_limit": None, "directory": None}
        return {
            "objects": len(store),
            "memory_used": store.memory_used,
            "memory_limit": store.memory_limit,
            "directory": str(store.directory),
        }
