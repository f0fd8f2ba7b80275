"""The HTTP API's own vocabulary, free of any HTTP library: media types, statuses, the error
form (:class:`CallFailed`), what a server must offer the app (:class:`Gateway`), and the
OpenAPI document generated from the functions' signatures.

The server side is in ``_http.py`` (starlette, uvicorn), the client side in
``_http_client.py`` (httpx). The routes::

    GET  /                 a page listing the functions, for people
    GET  /functions        JSON: what a ZeroMQ client is told on connect: the server's
                           name, its functions (name, signature, docstring and codecs of
                           each), whether it authenticates, its message size limit
    GET  /openapi.json     an OpenAPI 3.1 document generated from the signatures
    POST /call/{name}      call it: a JSON body {"args": [...], "kwargs": {...}} (or msgpack,
                           by Content-Type); the result as JSON (or msgpack, by Accept).
                           A pickle of (args, kwargs) (Content-Type:
                           application/python-pickle) is taken only from a caller with a
                           valid bearer token, for a function that takes pickle; such a
                           caller may also ask for a pickled result (Accept).

With ``X-Undertow-Return-Pointer: 1`` the result (a generator's items, each) stays on the
server and the answer is a pointer to it, its JSON form (``"type": "undertow.pointer"``), as
``.options(return_pointer=True)`` asks over ZeroMQ; ``0`` or no header: the value itself.

With ``Accept: application/x-ndjson`` the call streams, one JSON object per line, as it
happens: ``{"stdout": text}`` / ``{"stderr": text}`` for output, ``{"item": value}`` for each
item a generator yields, then ``{"result": value}``, ``{"end": true}`` (a generator) or
``{"error": {...}}``. With ``Accept: text/event-stream`` the same travel as server-sent events
(``event: stdout``, ``data: <JSON>``), for browsers' ``EventSource``-style readers.

Errors are JSON ``{"error": {"type", "message", "traceback", "code"}}`` with a status that
says what went wrong (400 bad input, 401 no or bad token, 403 denied, 404 no such function,
413 too large, 415 unsupported or missing Content-Type, 500 the function raised or its
result cannot be encoded, 504 the function's timeout).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, Protocol

import msgspec

__all__ = [
    "JSON",
    "JSON_TYPES",
    "METRICS_TYPE",
    "MSGPACK",
    "MSGPACK_TYPES",
    "NDJSON",
    "PICKLE",
    "POINTER_HEADER",
    "SSE",
    "STATUS",
    "CallFailed",
    "Gateway",
    "codec_of",
    "failure",
    "ndjson_as_json",
    "openapi",
    "signature_text",
]

JSON = "application/json"
MSGPACK = "application/msgpack"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
PICKLE = "application/python-pickle"
NPY = "application/x-npy"
#: the request header that carries a pointer's secret to ``GET /data/KEY``
SECRET_HEADER = "X-Undertow-Secret"  # noqa: S105 - a header's name
#: the request header of ``POST /call/NAME`` that asks for a pointer to the result
POINTER_HEADER = "X-Undertow-Return-Pointer"

#: HTTP status for each kind of error a call can end with
STATUS = {
    "bad_request": 400,
    "auth": 401,
    "denied": 403,
    "not_found": 404,
    "timeout": 504,
    "too_large": 413,
    "unsupported": 415,
    "serialization": 500,
    "remote": 500,
}


class CallFailed(Exception):
    """A call that ended in an error; ``info`` is its description for the HTTP body."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(info.get("message", ""))
        self.info = info


class Gateway(Protocol):
    """What the HTTP app needs from a function server."""

    name: str
    #: the largest request body accepted, in bytes (None: no limit)
    max_message_size: int | None
    #: callers must (or, with anonymous callers allowed, may) send a bearer token
    authenticates: bool

    def functions(self) -> list[dict[str, Any]]:
        """Every function: name, doc, params, returns, mode, input, output."""
        ...

    def description(self, challenge: str | None = None) -> dict[str, Any]:
        """What a client is told on connect, as over ZeroMQ: ``server``, ``functions`` (as
        :meth:`functions` gives them), ``authenticates``, ``max_message_size`` and any field
        the server adds (``user``, and ``proof`` of its token given a ``challenge``)."""
        ...

    def metrics(self) -> bytes:
        """The server's figures in Prometheus' text format."""
        ...

    def identify(self, bearer: str | None) -> str | None:
        """The caller's identity from its bearer token (None: anonymous); raises
        :class:`CallFailed` (code ``auth``) for a bad token, or none where one is needed."""
        ...

    def sends_arrays(self, name: str) -> bool:
        """True when ``name``'s results may hold numpy arrays and scalars (sent as lists and
        numbers); False when its codec carries none, so that such a result is an error, as
        it would be over ZeroMQ."""
        ...

    def call(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        *,
        body: bytes = b"",
        body_codec: str = "json",
        pointer: bool = False,
    ) -> Awaitable[Any]:
        """Run ``name`` and return its result, a Python value; raises :class:`CallFailed`.

        ``args`` and ``kwargs`` were decoded from ``body``, the request's body in
        ``body_codec`` (``"json"`` or ``"msgpack"``); with ``"pickle"`` the body is a pickle
        of them (for a function that takes pickle, from an authenticated caller), not
        unpickled yet, and they are empty. ``pointer``: the result is left on the server and
        its pointer's JSON form returned (:data:`POINTER_HEADER`)."""
        ...

    def events(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        *,
        body: bytes = b"",
        body_codec: str = "json",
        pointer: bool = False,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """Run ``name`` (arguments as for :meth:`call`), yielding ``("stdout"|"stderr",
        text)``, ``("item", value)`` and at last ``("result", value)`` or ``("items", [])``;
        raises :class:`CallFailed`."""
        ...


def failure(code: str, type_: str, message: str) -> CallFailed:
    """A :class:`CallFailed` with this error ``code``, exception ``type_`` and message."""
    return CallFailed({"type": type_, "message": message, "code": code})


#: JSON Schema of a Python annotation, by the annotation's text (others: any value)
_SCHEMAS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "None": {"type": "null"},
    "list": {"type": "array"},
    "tuple": {"type": "array"},
    "dict": {"type": "object"},
}
_POSITIONAL_ONLY, _VAR_POSITIONAL, _KEYWORD_ONLY, _VAR_KEYWORD = 0, 2, 3, 4


def _schema(annotation: str | None) -> dict[str, Any]:
    if not annotation:
        return {}
    options = [part.strip() for part in annotation.split("|")]
    schemas = [_SCHEMAS.get(part.partition("[")[0], {}) for part in options]
    if any(not schema for schema in schemas):
        return {}
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _request_schema(function: dict[str, Any]) -> dict[str, Any]:
    """``{"args": [...], "kwargs": {...}}`` for this function's parameters."""
    positional: list[dict[str, Any]] = []
    named: dict[str, Any] = {}
    required: list[str] = []
    open_args = open_kwargs = False
    for name, kind, default, annotation in function.get("params", []):
        schema = {**_schema(annotation), "title": name}
        if kind == _VAR_POSITIONAL:
            open_args = True
        elif kind == _VAR_KEYWORD:
            open_kwargs = True
        else:
            if kind != _KEYWORD_ONLY:
                positional.append(schema)
            if kind != _POSITIONAL_ONLY:
                named[name] = schema
                if default is None:
                    required.append(name)
    args: dict[str, Any] = {"type": "array", "prefixItems": positional}
    if not open_args:
        args["maxItems"] = len(positional)
    kwargs: dict[str, Any] = {
        "type": "object",
        "properties": named,
        "additionalProperties": open_kwargs,
    }
    return {
        "type": "object",
        "properties": {"args": args, "kwargs": kwargs},
        "additionalProperties": False,
        "description": "arguments by position (args), by name (kwargs), or both; a required "
        f"parameter may come either way: {required}",
    }


def openapi(gateway: Gateway) -> dict[str, Any]:
    """An OpenAPI 3.1 document for the gateway's functions."""
    try:
        version = importlib.metadata.version("undertow")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    paths = {
        f"/call/{function['name']}": {"post": _operation(function)}
        for function in gateway.functions()
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": f"undertow server {gateway.name}", "version": version},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    if gateway.authenticates:
        document["security"] = [{"bearer": []}]
    return document


#: the body of every error answer
_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "traceback": {"type": "string"},
                "code": {"type": "string"},
                "available": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["type", "message"],
        }
    },
}


#: the header that asks for a pointer to the result, as a parameter of every call
_POINTER_PARAMETER = {
    "name": POINTER_HEADER,
    "in": "header",
    "required": False,
    "description": "1: leave the result (or each item) on the server and answer with a "
    "pointer to it (its JSON form); 0 or left out: the value itself",
    "schema": {"type": "string", "enum": ["0", "1"]},
}


def _operation(function: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI operation of ``POST /call/NAME`` for one described function."""
    name = function["name"]
    doc = function.get("doc") or ""
    returns = _schema(function.get("returns"))
    if function.get("mode") in ("generator", "asyncgen"):
        returns = {"type": "array", "items": returns}
    error = {"$ref": "#/components/schemas/Error"}
    return {
        "operationId": name,
        "summary": doc.splitlines()[0] if doc else name,
        "description": doc,
        "parameters": [_POINTER_PARAMETER],
        "requestBody": {
            "required": False,
            "content": {
                JSON: {"schema": _request_schema(function)},
                MSGPACK: {"schema": _request_schema(function)},
            },
        },
        "responses": {
            "200": {
                "description": f"what {name}() returned (NDJSON or server-sent events "
                "as they happen, by Accept)",
                "content": {JSON: {"schema": returns}, NDJSON: {}, SSE: {}},
            },
            "default": {"description": "an error", "content": {JSON: {"schema": error}}},
        },
    }


def signature_text(function: dict[str, Any]) -> str:
    """The parameters of a described function, as Python would write them."""
    parts = []
    for name, _kind, default, annotation in function.get("params", []):
        text = name + (f": {annotation}" if annotation else "")
        parts.append(text + (f" = {default}" if default is not None else ""))
    return ", ".join(parts)


#: the body types taken for arguments, with the names some clients use
JSON_TYPES = (JSON, "text/json")
MSGPACK_TYPES = (MSGPACK, "application/x-msgpack")
#: Prometheus' text format, version 0.0.4 (``GET /metrics``)
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def ndjson_as_json(body: bytes) -> bytes:
    """An NDJSON body (a JSON value per line) as the JSON body of one argument, their list."""
    try:
        items = [msgspec.json.decode(line) for line in body.splitlines() if line.strip()]
    except msgspec.DecodeError as exc:
        raise failure(
            "bad_request", "DeserializationError", f"a line of the body is not JSON: {exc}"
        ) from None
    return msgspec.json.encode([items])


def codec_of(media: str) -> str:
    """The name of the codec a body of ``media`` (one of those taken) is in."""
    if media in JSON_TYPES:
        return "json"
    return "msgpack" if media in MSGPACK_TYPES else "pickle"
