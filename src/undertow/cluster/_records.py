"""What the registry holds: each running service instance, and the data objects kept on nodes."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import msgspec

from undertow.rpc._calls import FunctionInfo
from undertow.rpc._pointer import Pointer, pointer_form

__all__ = [
    "DataRecord",
    "Instance",
    "Location",
    "decode_data",
    "decode_instance",
    "encode_data",
    "encode_instance",
    "is_data_key",
    "readable",
]

log = logging.getLogger(__name__)


class Instance(msgspec.Struct, frozen=True, kw_only=True):
    """One running instance of a service, as registered."""

    #: the service's name (clients find it by this)
    service: str
    #: unique per instance (a random hex string)
    id: str
    #: where clients reach it, best first (``tcp://host:port``)
    addresses: list[str]
    #: each exposed method's name, signature, docstring and options
    methods: list[FunctionInfo] = []
    host: str = ""
    pid: int = 0
    #: Unix time the instance started serving
    started: float = 0.0
    #: Unix time of its last heartbeat
    heartbeat: float = 0.0
    #: seconds without a heartbeat after which it counts as dead
    ttl: float = 10.0
    #: callers must sign their messages with a token the service knows
    authenticates: bool = False
    #: the CURVE public key (Z85) connections are encrypted to; empty: no encryption
    curve_key: str = ""

    @property
    def address(self) -> str:
        """The address clients use first."""
        return self.addresses[0]

    def alive(self, now: float | None = None) -> bool:
        """True while the last heartbeat is younger than the TTL."""
        return (time.time() if now is None else now) < self.heartbeat + self.ttl

    def beat(self, now: float | None = None) -> Instance:
        """This record with a fresh heartbeat."""
        return msgspec.structs.replace(self, heartbeat=time.time() if now is None else now)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Instance)


def encode_instance(instance: Instance) -> bytes:
    """JSON, so that the records can be read with ``sqlite3`` or ``redis-cli``."""
    return _encoder.encode(instance)


def decode_instance(data: bytes | str) -> Instance:
    """The record encoded by :func:`encode_instance`."""
    return _decoder.decode(data)


def readable(data: bytes | str, instance_id: str, where: str) -> Instance | None:
    """The record, or None (logged) if it cannot be read: one bad record (written by another
    version, say) must not hide every other service."""
    try:
        return decode_instance(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning(
            "registry %s: skipped the unreadable record of instance %s: %s", where, instance_id, exc
        )
        return None


#: the protocols a data server speaks, and the URL scheme of each
_SCHEMES = {"zmq": "tcp", "http": "http"}
_DATA_KEY = re.compile(r"[0-9a-f]{32}")


def is_data_key(key: str) -> bool:
    """True for a well-formed data key (a UUID4 as 32 lowercase hex digits)."""
    return _DATA_KEY.fullmatch(key) is not None


class Location(msgspec.Struct, frozen=True, kw_only=True):
    """Where a data server offers an object; two locations with equal fields are the same."""

    #: "zmq" or "http"
    protocol: str
    host: str
    port: int
    #: the URL path of an HTTP location (unused for zmq)
    path: str = ""

    def __post_init__(self) -> None:
        if self.protocol not in _SCHEMES:
            raise ValueError(
                f"location protocol {self.protocol!r} is unknown; use one of {sorted(_SCHEMES)}"
            )

    @property
    def url(self) -> str:
        """``tcp://host:port`` for zmq, ``http://host:port/path`` for http (IPv6 bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = self.path if self.protocol == "http" else ""
        return f"{_SCHEMES[self.protocol]}://{host}:{self.port}{path}"


class DataRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A data object kept by data servers, as the catalog lists it.

    The secret is the capability to use the object: it is stored, but never shown by
    ``repr()``.
    """

    #: a UUID4 as 32 lowercase hex digits
    key: str
    secret: str
    type_name: str
    #: bytes
    size: int
    #: Unix time the object was made
    created: float
    owner: str
    tags: list[str] = []
    #: where it can be fetched, in the order they were recorded
    locations: list[Location] = []

    def __post_init__(self) -> None:
        # a key is part of Redis key names: anything else could name another record's keys
        if not is_data_key(self.key):
            raise ValueError(f"data key {self.key!r} is not a UUID4 as 32 lowercase hex digits")

    def __repr__(self) -> str:  # never the secret
        where = ", ".join(location.url for location in self.locations)
        return (
            f"DataRecord({self.key}, {self.type_name}, {self.size:,} bytes, "
            f"owner={self.owner!r}, tags={self.tags!r}, at=[{where}])"
        )

    def __rich_repr__(self) -> list[tuple[str, Any]]:  # msgspec's lists every field
        return [(name, getattr(self, name)) for name in self.__struct_fields__ if name != "secret"]

    def pointer(self, location: Location | None = None) -> Pointer:
        """A pointer to the object at ``location`` (default: where it was first kept)."""
        if location is None:
            if not self.locations:
                raise LookupError(f"the catalog knows no location of object {self.key!r}")
            location = self.locations[0]
        return Pointer(
            pointer_form(
                key=self.key,
                host=location.host,
                protocol=location.protocol,
                port=location.port,
                path=location.path,
                secret_key=self.secret,
                size=self.size,
                type_name=self.type_name,
            )
        )


_data_decoder = msgspec.json.Decoder(DataRecord)


def encode_data(record: DataRecord) -> bytes:
    """JSON, as for instances; it includes the secret."""
    return _encoder.encode(record)


def decode_data(data: bytes | str) -> DataRecord:
    """The record encoded by :func:`encode_data`."""
    return _data_decoder.decode(data)
