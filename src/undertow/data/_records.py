"""The data catalog's records: a value kept by data servers, and where each offers it."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from undertow.data._pointer import Pointer, pointer_form

__all__ = ["DataRecord", "Location", "decode_data", "encode_data", "is_data_key"]

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


_data_encoder = msgspec.json.Encoder()
_data_decoder = msgspec.json.Decoder(DataRecord)


def encode_data(record: DataRecord) -> bytes:
    """JSON, as for instances; it includes the secret."""
    return _data_encoder.encode(record)


def decode_data(data: bytes | str) -> DataRecord:
    """The record encoded by :func:`encode_data`."""
    return _data_decoder.decode(data)
