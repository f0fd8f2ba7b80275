"""Results left where they were computed: a job submitted with ``return_pointer`` puts its
result on a data server of the worker's host and answers with a pointer to it.

The value goes to the worker's data server (``Worker(data=)``: an address, or the name of a
service in the registry, by default ``"data"``, this host's one first), tagged with the job's
id, owned by the worker's identity and shared with the submitter's when they differ, so that
only they (and whoever holds the pointer, on a server that does not authenticate) read it.
"""

from __future__ import annotations

import threading
from typing import Any

from undertow.data import Pointer
from undertow.errors import ConfigError, ServiceNotFound
from undertow.security import client_key, find_client_token
from undertow.service import put
from undertow.storage import JobRecord

__all__ = ["Keeper"]


class Keeper:
    """Puts job results on a data server (thread-safe; used from the job threads).

    Args:
        data: where: an address (``tcp://...``), or a service name (default ``"data"``).
        backend: the registry's URL, to find a service by name.
    """

    def __init__(self, data: str | None, backend: str | None) -> None:
        self.data = data or "data"
        self._backend = backend
        self._lock = threading.Lock()
        self._identity: str | bool | None = False  # (not looked up yet)

    def __repr__(self) -> str:
        return f"<Keeper to {self.data}>"

    def __reduce__(self) -> tuple[Any, ...]:  # (to a "process" child: its target, afresh)
        return (Keeper, (self.data, self._backend))

    def keep(self, value: Any, record: JobRecord) -> Pointer:
        """Leave ``value``, the result of ``record``, on the data server; its pointer."""
        try:
            pointer = put(value, to=self.data, tags=[f"job:{record.id}"], backend=self._backend)
        except ServiceNotFound as exc:
            raise ConfigError(
                f"job {record.id} asked for return_pointer, and its worker has no data server "
                f"to leave the result on ({exc}); run `undertow data serve` on this host, or "
                "give the worker one (undertow worker --data ADDRESS)"
            ) from None
        submitter = record.submitter
        if submitter and submitter != self._own_identity():
            pointer.share(submitter)
        return pointer

    def _own_identity(self) -> str | None:
        with self._lock:
            if self._identity is False:
                token = find_client_token(None)
                self._identity = client_key(token).identity if token else None
            return self._identity if isinstance(self._identity, str) else None
