"""Codecs turn a Python value into message frames and back.

A codec returns a list of buffers: the body first, then any out-of-band buffers. The numpy
and pickle codecs produce out-of-band buffers, so a numpy array (or, with pickle protocol 5,
any object exporting a contiguous buffer) travels as a frame of its own without being copied.

Built in: ``"json"`` and ``"msgpack"`` (msgspec; safe to decode from anyone), ``"numpy"``
(msgpack with numpy arrays as out-of-band frames, never copied; safe to decode from anyone)
and ``"pickle"`` (cloudpickle, so lambdas and closures from a notebook work; decoding runs
arbitrary code, so it travels only between authenticated peers). Any object with ``dumps``
and ``loads``, such as the stdlib :mod:`json` module, can be given where a codec is expected.
"""

from __future__ import annotations

import importlib
import math
import pickle
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import msgspec

from undertow.errors import ConfigError, DeserializationError, SerializationError, UndertowError

__all__ = [
    "BUILTIN_CODECS",
    "POINTER_TYPE",
    "Blob",
    "Codec",
    "DumpsLoadsCodec",
    "JsonCodec",
    "MsgpackCodec",
    "NumpyCodec",
    "PickleCodec",
    "resolve_codec",
    "wire_form",
]

Buffer = bytes | memoryview | bytearray | pickle.PickleBuffer


@runtime_checkable
class Codec(Protocol):
    """Encodes values to frames and back. ``name`` is how peers refer to it."""

    name: str
    #: True when decoding untrusted input can run code (pickle).
    unsafe: bool

    def encode(self, value: Any) -> list[Buffer]:
        """Encode ``value`` into a body frame followed by out-of-band buffers."""
        ...

    def decode(self, frames: Sequence[Buffer]) -> Any:
        """Decode the frames produced by :meth:`encode`."""
        ...


#: the ``type`` of a pointer's JSON form, which every codec carries as a plain dict
POINTER_TYPE = "undertow.pointer"


def wire_form(obj: Any) -> Any:
    """An object's own plain form, for the msgspec codecs: undertow's pointers have one
    (``__undertow_wire__``); anything else is unsupported."""
    form = getattr(type(obj), "__undertow_wire__", None)
    if form is None:
        raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")
    return form(obj)


def _type_error(value: Any, exc: Exception, codec: str) -> SerializationError:
    return SerializationError(
        f"cannot encode a value of type {type(value).__name__!r} with the {codec} codec: {exc}"
    )


class _MsgspecCodec:
    """A msgspec encoder/decoder pair: fast, and safe to decode from anyone.

    ``encode_body`` and ``decode_body`` are msgspec's own functions, for hot paths that handle
    one body frame and fall back to :meth:`encode`/:meth:`decode` to report a failure.
    """

    name = ""
    unsafe = False
    _enc: msgspec.msgpack.Encoder | msgspec.json.Encoder
    _dec: msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any]

    @property
    def encode_body(self) -> Callable[[Any], bytes]:
        return self._enc.encode

    @property
    def decode_body(self) -> Callable[[Buffer], Any]:
        return self._dec.decode

    def encode(self, value: Any) -> list[Buffer]:
        try:
            return [self._enc.encode(value)]
        except (TypeError, ValueError, OverflowError) as exc:
            raise _type_error(value, exc, self.name) from exc

    def decode(self, frames: Sequence[Buffer]) -> Any:
        if not frames:
            raise DeserializationError(f"no {self.name} payload: the body frame is missing")
        try:
            return self._dec.decode(frames[0])
        except (msgspec.DecodeError, ValueError) as exc:
            raise DeserializationError(f"invalid {self.name} payload: {exc}") from exc


class MsgpackCodec(_MsgspecCodec):
    """MessagePack through msgspec: fast, compact and safe to decode."""

    name = "msgpack"

    def __init__(self) -> None:
        self._enc = msgspec.msgpack.Encoder(enc_hook=wire_form)
        self._dec = msgspec.msgpack.Decoder()


class JsonCodec(_MsgspecCodec):
    """JSON through msgspec: interoperable with any language, safe to decode."""

    name = "json"

    def __init__(self) -> None:
        self._enc = msgspec.json.Encoder(enc_hook=wire_form)
        self._dec = msgspec.json.Decoder()


#: the msgpack extension type that stands for an out-of-band array
_ARRAY_EXT = 1
#: the msgpack extension type that stands for a numpy dtype
_DTYPE_EXT = 2
#: a Blob's frame (its index)
_BLOB_EXT = 3
_meta_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(tuple[int, str | list[Any], list[int]])
_np: Any = None
#: arrays smaller than this many bytes are copied into their frame
_INLINE_ARRAY = 65536


def _numpy() -> Any:
    """numpy, imported on first use (it is an optional dependency)."""
    global _np
    if _np is None:
        try:
            _np = importlib.import_module("numpy")
        except ImportError as exc:
            raise DeserializationError(
                "a numpy array arrived, but numpy is not installed: pip install numpy"
            ) from exc
    return _np


class Blob:
    """A bytes-like value the numpy codec sends as a frame of its own, never copied; it
    decodes as a ``memoryview`` of the frame that brought it."""

    __slots__ = ("data",)

    def __init__(self, data: Buffer) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> Any:
        # pickle 5 sends it out of band too, and it arrives as a memoryview of its frame
        return memoryview, (pickle.PickleBuffer(self.data),)


class NumpyCodec:
    """msgpack, with numpy arrays as out-of-band frames: fast, and safe to decode.

    Each array (any dtype but ``object``) travels as a frame of its own, never copied on
    either side (a non-contiguous array is made contiguous first); the body holds its dtype
    and shape. Decoding reads numbers and bytes only, so unlike pickle it is safe from anyone:
    arrays without pickle's risk, for callers that are not authenticated.
    """

    name = "numpy"
    unsafe = False

    def encode(self, value: Any) -> list[Buffer]:
        buffers: list[Buffer] = []

        def hook(obj: Any) -> Any:
            if type(obj) is Blob:
                buffers.append(obj.data)
                return msgspec.msgpack.Ext(_BLOB_EXT, _meta_encoder.encode(len(buffers)))
            np = _np if _np is not None else _numpy_if_array(obj)
            if np is not None and isinstance(obj, np.generic) and not obj.dtype.hasobject:
                return obj.item()  # a numpy scalar: its Python value
            if np is not None and isinstance(obj, np.dtype) and not obj.hasobject:
                return msgspec.msgpack.Ext(_DTYPE_EXT, _meta_encoder.encode(_descr(np, obj)))
            if np is None or not isinstance(obj, np.ndarray):
                return wire_form(obj)
            if obj.dtype.hasobject:
                raise TypeError("an array of Python objects can travel only with pickle")
            arr = obj if obj.flags.c_contiguous else np.ascontiguousarray(obj)
            descr = _descr(np, arr.dtype)
            # a small array is copied (cheaper for ZeroMQ than tracking it), a large one not
            small = arr.nbytes < _INLINE_ARRAY
            buffers.append(arr.tobytes() if small else memoryview(arr.reshape(-1).view(np.uint8)))
            meta = _meta_encoder.encode((len(buffers), descr, list(arr.shape)))
            return msgspec.msgpack.Ext(_ARRAY_EXT, meta)

        try:
            body = msgspec.msgpack.Encoder(enc_hook=hook).encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _type_error(value, exc, self.name) from exc
        return [body, *buffers]

    def decode(self, frames: Sequence[Buffer]) -> Any:
        if not frames:
            raise DeserializationError("no numpy payload: the body frame is missing")

        def ext_hook(code: int, data: memoryview) -> Any:
            if code == _DTYPE_EXT:
                return _dtype(_numpy(), _dtype_decoder.decode(data))
            if code == _BLOB_EXT:
                at = _blob_decoder.decode(data)
                if not 1 <= at < len(frames):
                    raise ValueError(f"blob frame {at} is missing")
                return memoryview(frames[at])
            if code != _ARRAY_EXT:
                raise ValueError(f"unknown msgpack extension type {code}")
            index, descr, shape = _meta_decoder.decode(data)
            if not 1 <= index < len(frames):
                raise ValueError(f"array frame {index} is missing")
            np = _numpy()
            dtype = _dtype(np, descr)
            buffer = memoryview(frames[index])
            if any(n < 0 for n in shape) or math.prod(shape) * dtype.itemsize != buffer.nbytes:
                raise ValueError(
                    f"array of shape {tuple(shape)} and dtype {dtype} does not fit its "
                    f"{buffer.nbytes}-byte frame"
                )
            return np.frombuffer(buffer, dtype=dtype).reshape(shape)

        try:
            return msgspec.msgpack.Decoder(ext_hook=ext_hook).decode(frames[0])
        except UndertowError:
            raise
        except Exception as exc:  # a hostile payload can fail anywhere in dtype parsing
            raise DeserializationError(f"invalid numpy payload: {exc}") from exc


_dtype_decoder = msgspec.msgpack.Decoder(str | list[Any])
_blob_decoder = msgspec.msgpack.Decoder(int)


def _descr(np: Any, dtype: Any) -> Any:
    """A dtype as plain data: its string, or numpy's description of a structured one."""
    return dtype.str if dtype.fields is None else np.lib.format.dtype_to_descr(dtype)


def _dtype(np: Any, descr: str | list[Any]) -> Any:
    """The dtype :func:`_descr` described; Python objects are refused."""
    if isinstance(descr, str):
        dtype = np.dtype(descr)
    else:
        dtype = np.lib.format.descr_to_dtype([tuple(d) for d in descr])
    if dtype.hasobject:
        raise ValueError("an array of Python objects is refused")
    return dtype


def _numpy_if_array(obj: Any) -> Any:
    """numpy, if ``obj`` comes from it (no import otherwise)."""
    if type(obj).__module__.partition(".")[0] == "numpy":
        return _numpy()
    return None


class PickleCodec:
    """Pickle protocol 5 with out-of-band buffers, through cloudpickle.

    cloudpickle pickles functions defined in ``__main__`` or a notebook by value, so lambdas
    and closures reach the other side. Large buffers (numpy arrays, bytes-like objects that
    support protocol 5) are not copied into the body: each becomes its own frame.
    """

    name = "pickle"
    unsafe = True

    def __init__(self) -> None:
        import cloudpickle  # fenced: only the pickle codec needs it

        self._dumps = cloudpickle.dumps

    def encode(self, value: Any) -> list[Buffer]:
        buffers: list[pickle.PickleBuffer] = []
        try:
            body = self._dumps(value, protocol=5, buffer_callback=buffers.append)
        except Exception as exc:  # pickling runs user __reduce__ code; any error can come out
            raise _type_error(value, exc, self.name) from exc
        frames: list[Buffer] = [body]
        frames.extend(buf.raw() for buf in buffers)
        return frames

    def decode(self, frames: Sequence[Buffer]) -> Any:
        try:
            return pickle.loads(frames[0], buffers=frames[1:])  # noqa: S301 - callers gate who may send pickle
        except Exception as exc:  # unpickling runs arbitrary code; report any failure the same way
            raise DeserializationError(f"cannot unpickle payload: {exc!r}") from exc


#: modules whose ``loads`` runs code: as codecs they need authenticated peers, like pickle
_UNSAFE_MODULES = frozenset({"pickle", "_pickle", "cloudpickle", "dill", "jsonpickle", "marshal"})


class DumpsLoadsCodec:
    """Adapts any object with ``dumps``/``loads`` (the :mod:`json` module, say) into a codec.

    ``unsafe``: True when decoding untrusted input can run code, so that only authenticated
    peers may send it. By default the object's own ``unsafe`` attribute says, else whether
    it is (or comes from) a module known to run code when loading (dill, jsonpickle, ...).
    """

    def __init__(self, obj: Any, name: str | None = None, *, unsafe: bool | None = None) -> None:
        self._obj = obj
        self.name = name or _name_of(obj)
        if unsafe is None:
            unsafe = getattr(obj, "unsafe", None)
        if unsafe is None:
            module = getattr(obj, "__name__", None) if isinstance(obj, ModuleType) else None
            module = module or getattr(type(obj), "__module__", "")
            unsafe = str(module).partition(".")[0] in _UNSAFE_MODULES
        self.unsafe = bool(unsafe)

    def encode(self, value: Any) -> list[Buffer]:
        try:
            out = self._obj.dumps(value)
        except Exception as exc:  # a user-supplied dumps may raise anything
            raise _type_error(value, exc, self.name) from exc
        return [out.encode() if isinstance(out, str) else out]

    def decode(self, frames: Sequence[Buffer]) -> Any:
        data = frames[0]
        try:
            return self._obj.loads(bytes(data))
        except Exception as exc:  # a user-supplied loads may raise anything
            raise DeserializationError(
                f"the {self.name} codec cannot decode payload: {exc}"
            ) from exc


def _name_of(obj: Any) -> str:
    name = getattr(obj, "name", None) or getattr(obj, "__name__", None)
    return str(name) if name else type(obj).__name__


BUILTIN_CODECS: dict[
    str, type[MsgpackCodec] | type[JsonCodec] | type[NumpyCodec] | type[PickleCodec]
] = {
    "msgpack": MsgpackCodec,
    "json": JsonCodec,
    "numpy": NumpyCodec,
    "pickle": PickleCodec,
}

_INSTANCES: dict[str, Codec] = {}


def resolve_codec(spec: Any, extra: dict[str, Codec] | None = None) -> Codec:
    """Turn a codec spec (a name, a codec, or an object with dumps/loads) into a codec.

    The stdlib ``json`` module maps to the built-in JSON codec, and the ``pickle`` and
    ``cloudpickle`` modules to the pickle codec, so peers agree on the name.
    """
    if isinstance(spec, str):
        if extra and spec in extra:
            return extra[spec]
        if spec in BUILTIN_CODECS:
            codec = _INSTANCES.get(spec)
            if codec is None:
                codec = _INSTANCES[spec] = BUILTIN_CODECS[spec]()
            return codec
        known = sorted({*BUILTIN_CODECS, *(extra or {})})
        raise ConfigError(
            f"unknown serialization {spec!r}; use one of {known} or an object with dumps/loads"
        )
    if isinstance(spec, Codec):
        return spec
    if getattr(spec, "__name__", None) == "json" and hasattr(spec, "JSONDecoder"):
        return resolve_codec("json")
    if isinstance(spec, ModuleType) and spec.__name__ in ("pickle", "cloudpickle"):
        return resolve_codec("pickle")  # the same thing, with out-of-band buffers
    if callable(getattr(spec, "dumps", None)) and callable(getattr(spec, "loads", None)):
        return DumpsLoadsCodec(spec)
    raise ConfigError(
        f"{spec!r} is not a serialization: give 'json', 'msgpack', 'numpy', 'pickle' "
        "or an object with dumps() and loads()"
    )
