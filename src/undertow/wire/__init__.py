"""The wire format: message header, codecs and error descriptions. Pure: no I/O."""

from undertow.wire._codec import (
    BUILTIN_CODECS,
    Codec,
    DumpsLoadsCodec,
    JsonCodec,
    MsgpackCodec,
    PickleCodec,
    resolve_codec,
)
from undertow.wire._errors import ErrorInfo, decode_error, encode_error, error_info, rebuild
from undertow.wire._header import (
    INLINE_BODY,
    MAGIC,
    PROTOCOL_VERSION,
    STREAM_WINDOW,
    Flags,
    Header,
    Kind,
    decode_header,
    encode_header,
    pack,
    payload_of,
)

__all__ = [
    "BUILTIN_CODECS",
    "INLINE_BODY",
    "MAGIC",
    "PROTOCOL_VERSION",
    "STREAM_WINDOW",
    "Codec",
    "DumpsLoadsCodec",
    "ErrorInfo",
    "Flags",
    "Header",
    "JsonCodec",
    "Kind",
    "MsgpackCodec",
    "PickleCodec",
    "decode_error",
    "decode_header",
    "encode_error",
    "encode_header",
    "error_info",
    "pack",
    "payload_of",
    "rebuild",
    "resolve_codec",
]
