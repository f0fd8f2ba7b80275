"""Remote data: values left where they were computed, used from anywhere through pointers.

- :class:`Pointer` (``undertow.Pointer``): a value on some node's data server; slice it,
  pass it to another call, fetch it.
- :class:`DataService`: the data server inside every :class:`~undertow.Server` (plugged in
  through :class:`undertow.rpc.DataPlane`, the interface the rpc layer owns), over a
  :class:`DataStore` (memory, spilled to disk).
- :class:`DataRecord` and :class:`Location`: the data catalog's records (stored by
  :mod:`undertow.storage`, read through :mod:`undertow.catalog`), and
  :func:`catalog_listener`, which tells the catalog what a data server keeps.
- :func:`copy_to` and :func:`replicate_to`: copies of a value on other data servers, under
  the same key and secret (``Pointer.replicate`` finds a host group's servers through
  :func:`plug_replication`, which :mod:`undertow.service` calls).
"""

from undertow.data._catalog import catalog_listener, location_of, record_of
from undertow.data._dataserver import DataService, Listener, swap_pointers
from undertow.data._pointer import Pointer, client_for, close_clients, plug_replication, put
from undertow.data._records import DataRecord, Location, decode_data, encode_data, is_data_key
from undertow.data._replicate import copy_to, replicate_to
from undertow.data._store import DEFAULT_MEMORY_LIMIT, DataStore, Entry
from undertow.rpc import Server, plug_data

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "DataRecord",
    "DataService",
    "DataStore",
    "Entry",
    "Listener",
    "Location",
    "Pointer",
    "catalog_listener",
    "client_for",
    "close_clients",
    "copy_to",
    "data_service",
    "decode_data",
    "encode_data",
    "is_data_key",
    "location_of",
    "plug_replication",
    "put",
    "record_of",
    "replicate_to",
    "swap_pointers",
]

plug_data(DataService, Pointer)


def data_service(server: Server) -> DataService:
    """The data server of ``server``."""
    data = server.data
    if not isinstance(data, DataService):  # pragma: no cover - plugged in above
        raise TypeError(f"server {server.name!r} has no data server of undertow.data")
    return data
