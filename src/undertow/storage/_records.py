"""What the registry holds: each running service instance, as JSON (sqlite3, redis-cli)."""

from __future__ import annotations

import logging
import time

import msgspec

from undertow.rpc import FunctionInfo

__all__ = ["Instance", "decode_instance", "encode_instance", "readable"]

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
