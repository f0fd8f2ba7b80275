"""The HTTP transport: the same functions over HTTP/JSON, for curl, browsers and other languages.

Built on starlette (routing, requests, responses) and uvicorn (the ASGI server), imported only
here. The app knows nothing of undertow's servers: it talks to a :class:`Gateway`, which the
function server provides, and turns its answers into HTTP.

Routes::

    GET  /                 a page listing the functions, for people
    GET  /functions        JSON: name, signature, docstring and codecs of every function
    GET  /openapi.json     an OpenAPI 3.1 document generated from the signatures
    POST /call/{name}      call it: a JSON body {"args": [...], "kwargs": {...}} (or msgpack,
                           by Content-Type); the result as JSON (or msgpack, by Accept).
                           A pickle of (args, kwargs) (Content-Type:
                           application/python-pickle) is taken only from a caller with a
                           valid bearer token, for a function that takes pickle; such a
                           caller may also ask for a pickled result (Accept).

With ``Accept: application/x-ndjson`` the call streams, one JSON object per line, as it
happens: ``{"stdout": text}`` / ``{"stderr": text}`` for output, ``{"item": value}`` for each
item a generator yields, then ``{"result": value}``, ``{"end": true}`` (a generator) or
``{"error": {...}}``. With ``Accept: text/event-stream`` the same travel as server-sent events
(``event: stdout``, ``data: <JSON>``), for browsers' ``EventSource``-style readers.

Errors are JSON ``{"error": {"type", "message", "traceback", "code"}}`` with a status that
says what went wrong (400 bad input, 401 no or bad token, 403 denied, 404 no such function,
413 too large, 415 unsupported or missing Content-Type, 500 the function raised or its
result cannot be encoded, 504 the function's timeout).

A body must say what it is (``Content-Type``): a browser page from another site can send a
"simple" request without one, so such requests are refused, as are requests whose ``Host`` is
not this machine's when the server listens on loopback only (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib.metadata
import pickle
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from typing import Any, Protocol

import httpx
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from undertow.errors import ConnectError, RPCTimeout

__all__ = [
    "AsyncHttpCaller",
    "CallFailed",
    "Gateway",
    "HttpCaller",
    "HttpServer",
    "http_app",
    "serve_http",
]

JSON = "application/json"
MSGPACK = "application/msgpack"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
PICKLE = "application/python-pickle"
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()

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

    def identify(self, bearer: str | None) -> str | None:
        """The caller's identity from its bearer token (None: anonymous); raises
        :class:`CallFailed` (code ``auth``) for a bad token, or none where one is needed."""
        ...

    def call(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        pickled: bytes | None = None,
    ) -> Awaitable[Any]:
        """Run ``name`` and return its result; raises :class:`CallFailed`. ``pickled``: the
        arguments as a pickle, for a function that takes pickle (authenticated callers)."""
        ...

    def events(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        identity: str | None,
        pickled: bytes | None = None,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """Run ``name``, yielding ``("stdout"|"stderr", text)``, ``("item", value)`` and at
        last ``("result", value)`` or ``("items", [])``; raises :class:`CallFailed`."""
        ...


def _error(info: dict[str, Any]) -> Response:
    body = {"error": {k: info.get(k, "") for k in ("type", "message", "traceback", "code")}}
    if info.get("available"):
        body["error"]["available"] = info["available"]
    status = STATUS.get(str(info.get("code")), 500)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(_json.encode(body), status, headers=headers, media_type=JSON)


def _failure(code: str, type_: str, message: str) -> CallFailed:
    return CallFailed({"type": type_, "message": message, "code": code})


async def _read_body(request: Request, limit: int | None) -> bytes:
    """The request body, refused (413) past ``limit`` bytes without reading all of it."""
    declared = request.headers.get("content-length")
    if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
        raise _failure("too_large", "MessageTooLarge", f"the body is over {limit:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if limit is not None and size > limit:
            raise _failure("too_large", "MessageTooLarge", f"the body is over {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media(request: Request) -> str:
    """The body's media type; a request without one is refused: it is what a page from
    another site can send without the browser asking first."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in (JSON, "text/json", MSGPACK, "application/x-msgpack", PICKLE):
        raise _failure(
            "unsupported",
            "UnsupportedMediaType",
            f"Content-Type {media or '(none)'!r} is not taken; send {JSON} or {MSGPACK}",
        )
    return media


def _arguments(body: bytes, media: str) -> tuple[list[Any], dict[str, Any]]:
    if not body.strip():
        return [], {}
    try:
        if media in (JSON, "text/json"):
            decoded = msgspec.json.decode(body)
        elif media in (MSGPACK, "application/x-msgpack"):
            decoded = msgspec.msgpack.decode(body)
        else:
            raise _failure(
                "unsupported",
                "UnsupportedMediaType",
                f"a body of type {media!r} is not understood; send {JSON} or {MSGPACK}",
            )
    except msgspec.DecodeError as exc:
        raise _failure(
            "bad_request", "DeserializationError", f"the body is not {media}: {exc}"
        ) from None
    if isinstance(decoded, list):  # a bare list: the positional arguments
        return decoded, {}
    if not isinstance(decoded, dict) or not set(decoded) <= {"args", "kwargs"}:
        raise _failure(
            "bad_request",
            "TypeError",
            'the body must be {"args": [...], "kwargs": {...}} (either may be left out) or a '
            "list of positional arguments",
        )
    args, kwargs = decoded.get("args", []), decoded.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise _failure("bad_request", "TypeError", '"args" must be a list and "kwargs" an object')
    return args, kwargs


_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def _check_host(request: Request, local_only: bool) -> None:
    """Refuse a request for another host name on a loopback server: a web page whose name
    was pointed at 127.0.0.1 (DNS rebinding) must not reach it."""
    if not local_only:
        return
    host = request.headers.get("host", "")
    if host.startswith("["):  # [::1]:8080
        name = host[: host.index("]") + 1] if "]" in host else host
    else:
        name = host.partition(":")[0]
    if name not in _LOCAL_HOSTS:
        raise _failure(
            "denied",
            "PermissionDenied",
            f"this server answers requests for 127.0.0.1 or localhost, not {host!r}",
        )


async def _unless_gone(request: Request, work: Awaitable[Any]) -> Any:
    """Await ``work``, cancelling it if the client hangs up first (the call then stops)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, CallFailed):
            await task
        raise _failure("bad_request", "ConnectionClosed", "the client went away")
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _failure("auth", "AuthenticationError", "use 'Authorization: Bearer <token>'")
    return token.strip()


def http_app(gateway: Gateway, *, local_only: bool = True) -> Starlette:
    """The ASGI app serving ``gateway``'s functions. ``local_only``: the server listens on
    loopback, so a request must name this machine in its ``Host`` header."""
    endpoints = _Endpoints(gateway, local_only)
    routes = [
        Route("/", endpoints.index, methods=["GET"]),
        Route("/functions", endpoints.functions, methods=["GET"]),
        Route("/openapi.json", endpoints.openapi_json, methods=["GET"]),
        Route("/call/{name}", endpoints.call, methods=["POST"]),
    ]
    return Starlette(routes=routes)


class _Endpoints:
    """The app's request handlers."""

    def __init__(self, gateway: Gateway, local_only: bool) -> None:
        self.gateway = gateway
        self.local_only = local_only

    def _admit(self, request: Request) -> str | None:
        """The caller's identity, once its request is one this server takes."""
        _check_host(request, self.local_only)
        return self.gateway.identify(_bearer(request))

    async def call(self, request: Request) -> Response:
        gateway, name = self.gateway, request.path_params["name"]
        accept = request.headers.get("accept", "")
        try:
            identity = self._admit(request)
            media = _media(request)
            body = await _read_body(request, gateway.max_message_size)
            pickled = body if media == PICKLE else None
            args, kwargs = ([], {}) if pickled is not None else _arguments(body, media)
            if NDJSON in accept or SSE in accept:
                events = gateway.events(name, args, kwargs, identity, pickled)
                # a call that cannot start gets its status
                first = await _unless_gone(request, anext(events))
                return _streamed(name, first, events, sse=SSE in accept)
            call = gateway.call(name, args, kwargs, identity, pickled)
            result = await _unless_gone(request, call)
        except CallFailed as failed:
            return _error(failed.info)
        return _answer(name, result, accept, authenticated=identity is not None)

    async def functions(self, request: Request) -> Response:
        try:
            self._admit(request)
        except CallFailed as failed:
            return _error(failed.info)
        described = {"server": self.gateway.name, "functions": self.gateway.functions()}
        return Response(_json.encode(described), media_type=JSON)

    async def openapi_json(self, request: Request) -> Response:
        try:
            self._admit(request)
        except CallFailed as failed:
            return _error(failed.info)
        return Response(_json.encode(openapi(self.gateway)), media_type=JSON)

    async def index(self, request: Request) -> Response:
        try:
            self._admit(request)
        except CallFailed as failed:
            return _error(failed.info)
        name = html.escape(self.gateway.name)
        rows = "".join(
            f"<li><code>{html.escape(f['name'])}({html.escape(_signature(f))})</code>"
            f"<pre>{html.escape(f['doc'])}</pre></li>"
            for f in self.gateway.functions()
        )
        page = (
            f"<!doctype html><title>{name}</title><h1>undertow server {name}</h1>"
            '<p>POST /call/NAME with a JSON body {"args": [...], "kwargs": {...}}; '
            'GET <a href="/functions">/functions</a> for this list as JSON, '
            '<a href="/openapi.json">/openapi.json</a> for an OpenAPI document.</p>'
            f"<ul>{rows}</ul>"
        )
        return HTMLResponse(page)


def _answer(name: str, result: Any, accept: str, *, authenticated: bool) -> Response:
    """The result in the form asked for: a pickle only for an authenticated caller."""
    try:
        if PICKLE in accept and authenticated:
            return Response(pickle.dumps(result, protocol=5), media_type=PICKLE)
        if MSGPACK in accept:
            return Response(_msgpack.encode(result), media_type=MSGPACK)
        return Response(_json.encode(result), media_type=JSON)
    except Exception as exc:  # any encoder's failure: the result has no such form
        return _error(_unsendable(name, exc))


def _streamed(
    name: str, first: tuple[str, Any], events: AsyncGenerator[tuple[str, Any], None], *, sse: bool
) -> StreamingResponse:
    """The call's events as NDJSON lines or server-sent events, each sent as it happens."""

    def frame(kind: str, value: Any) -> tuple[bytes, bool]:
        """The bytes of one event, and whether it is an error that ends the stream."""
        if kind == "items":
            kind, value = "end", True
        try:
            data = _json.encode(value)
        except Exception as exc:  # a value with no JSON form
            kind, data = "error", _json.encode(_unsendable(name, exc))
        if sse:
            return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n", kind == "error"
        return b'{"' + kind.encode() + b'": ' + data + b"}\n", kind == "error"

    async def body() -> AsyncIterator[bytes]:
        try:
            data, failed = frame(*first)
            yield data
            if failed:
                return
            async for event in events:
                data, failed = frame(*event)
                yield data
                if failed:  # a value that cannot be sent ends the stream, and the call
                    return
        except CallFailed as failure:
            info = {k: failure.info.get(k, "") for k in ("type", "message", "traceback", "code")}
            yield frame("error", info)[0]
        finally:
            await events.aclose()  # stops the call if it is still running

    return StreamingResponse(body(), media_type=SSE if sse else NDJSON)


def _unsendable(name: str, exc: BaseException) -> dict[str, Any]:
    return {
        "type": "SerializationError",
        "message": f"a value of {name}() has no JSON form ({exc}); ask for Accept: {MSGPACK}",
        "code": "serialization",
    }


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
    error = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, Any] = {}
    for function in gateway.functions():
        name = function["name"]
        doc = function.get("doc") or ""
        returns = _schema(function.get("returns"))
        if function.get("mode") in ("generator", "asyncgen"):
            returns = {"type": "array", "items": returns}
        operation: dict[str, Any] = {
            "operationId": name,
            "summary": doc.splitlines()[0] if doc else name,
            "description": doc,
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
        paths[f"/call/{name}"] = {"post": operation}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": f"undertow server {gateway.name}", "version": version},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
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
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    if gateway.authenticates:
        document["security"] = [{"bearer": []}]
    return document


def _signature(function: dict[str, Any]) -> str:
    parts = []
    for name, _kind, default, annotation in function.get("params", []):
        text = name + (f": {annotation}" if annotation else "")
        parts.append(text + (f" = {default}" if default is not None else ""))
    return ", ".join(parts)


class _Embedded(uvicorn.Server):
    """uvicorn inside a process that handles its own signals (SIGINT stops the server that
    owns this one, which then stops it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """An HTTP server running on the current event loop; :meth:`close` stops it."""

    def __init__(self, server: _Embedded, task: asyncio.Task[None], address: str) -> None:
        self._server = server
        self._task = task
        #: ``http://host:port``
        self.address = address

    async def close(self) -> None:
        """Stop accepting, finish the requests under way (briefly), and stop."""
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def serve_http(app: Callable[..., Any], host: str, port: int) -> HttpServer:
    """Serve ``app`` on ``host:port`` (0: a free port) from the running loop."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # the protocol said outright: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto is IPPROTO_TCP, and with Nagle on every response waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConnectError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=2,
    )
    server = _Embedded(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:  # uvicorn says when it accepts
        if task.done():
            await task  # raises its error
        await asyncio.sleep(0.005)
    real_host, real_port = sock.getsockname()[:2]
    shown = f"[{real_host}]" if ":" in real_host else real_host
    return HttpServer(server, task, f"http://{shown}:{real_port}")


# -- the client side -------------------------------------------------------------------------


def _client_error(response: httpx.Response) -> CallFailed:
    """The error an HTTP server answered with, as a :class:`CallFailed`."""
    try:
        info = msgspec.json.decode(response.content).get("error", {})
    except (msgspec.DecodeError, AttributeError):
        info = {}
    if not isinstance(info, dict) or "message" not in info:
        info = {
            "type": "HTTPError",
            "message": f"HTTP {response.status_code}: {response.content[:200]!r}",
            "code": "remote",
        }
    return CallFailed(info)


def _event(line: str) -> tuple[str, Any]:
    try:
        decoded = msgspec.json.decode(line)
        ((kind, value),) = decoded.items()
    except (msgspec.DecodeError, AttributeError, ValueError) as exc:
        raise CallFailed(
            {"type": "WireError", "message": f"a malformed stream line {line[:80]!r}: {exc}"}
        ) from None
    return str(kind), value


class HttpCaller:
    """A client's kept-alive connection to an undertow HTTP server (httpx); thread-safe.

    Calls go out with a msgpack body and come back as an NDJSON stream, so output and items
    arrive while the call runs. Transport failures become undertow's own errors.
    """

    def __init__(self, base_url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        # every request gives its own timeout, from the call's deadline
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=None)  # noqa: S113

    def functions(self, timeout: float | None) -> dict[str, Any]:
        """The server's description (``GET /functions``)."""
        with _translated(self.base_url, "/functions", timeout):
            response = self._client.get("/functions", timeout=timeout)
        if response.status_code != 200:
            raise _client_error(response)
        described: dict[str, Any] = msgspec.json.decode(response.content)
        return described

    def events(
        self, name: str, body: bytes, deadline: float | None, wait: float | None = None
    ) -> Generator[tuple[str, Any], None, None]:
        """Call ``name`` with a msgpack ``body``; yields its events as they arrive, all by
        ``deadline`` (a stream: each within ``wait`` seconds of the one before)."""
        timeout = wait if deadline is None else max(0.001, deadline - time.monotonic())
        headers = {"Content-Type": MSGPACK, "Accept": NDJSON}
        with (
            _translated(self.base_url, name, timeout),
            self._client.stream(
                "POST", f"/call/{name}", content=body, headers=headers, timeout=timeout
            ) as response,
        ):
            if response.status_code != 200:
                response.read()
                raise _client_error(response)
            for line in response.iter_lines():
                if line:
                    yield _event(line)
                if deadline is not None and time.monotonic() > deadline:
                    raise RPCTimeout(f"{name}() at {self.base_url} did not finish in time")

    def close(self) -> None:
        self._client.close()


class AsyncHttpCaller:
    """The asyncio twin of :class:`HttpCaller`."""

    def __init__(self, base_url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        # every request gives its own timeout, from the call's deadline
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=None)  # noqa: S113

    async def functions(self, timeout: float | None) -> dict[str, Any]:
        with _translated(self.base_url, "/functions", timeout):
            response = await self._client.get("/functions", timeout=timeout)
        if response.status_code != 200:
            raise _client_error(response)
        described: dict[str, Any] = msgspec.json.decode(response.content)
        return described

    async def events(
        self, name: str, body: bytes, deadline: float | None, wait: float | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        timeout = wait if deadline is None else max(0.001, deadline - time.monotonic())
        headers = {"Content-Type": MSGPACK, "Accept": NDJSON}
        with _translated(self.base_url, name, timeout):
            async with self._client.stream(
                "POST", f"/call/{name}", content=body, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _client_error(response)
                async for line in response.aiter_lines():
                    if line:
                        yield _event(line)
                    if deadline is not None and time.monotonic() > deadline:
                        raise RPCTimeout(f"{name}() at {self.base_url} did not finish in time")

    async def aclose(self) -> None:
        await self._client.aclose()


@contextlib.contextmanager
def _translated(base_url: str, what: str, timeout: float | None) -> Generator[None, None, None]:
    """httpx's failures as undertow's errors."""
    try:
        yield
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise RPCTimeout(
            f"{what} at {base_url} did not answer within {timeout:g} s" if timeout else str(exc)
        ) from exc
    except httpx.TransportError as exc:
        raise ConnectError(f"cannot reach {base_url}: {exc}") from exc
