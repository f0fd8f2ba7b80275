"""The HTTP transport: the same functions over HTTP/JSON, for curl, browsers and other languages.

Built on starlette (routing, requests, responses) and uvicorn (the ASGI server), imported only
here. The app knows nothing of undertow's servers: it talks to a :class:`Gateway`, which the
function server provides, and turns its answers into HTTP.

Routes::

    GET  /                 a page listing the functions, for people
    GET  /functions        JSON: name, signature, docstring and codecs of every function
    POST /call/{name}      call it: a JSON body {"args": [...], "kwargs": {...}} (or msgpack,
                           by Content-Type); the result as JSON (or msgpack, by Accept)

Errors are JSON ``{"error": {"type", "message", "traceback", "code"}}`` with a status that
says what went wrong (400 bad input, 401 no or bad token, 403 denied, 404 no such function,
408 deadline, 413 too large, 415 unsupported body, 500 the function raised).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import socket
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from undertow.errors import ConnectError

__all__ = ["Gateway", "HttpServer", "http_app", "serve_http"]

JSON = "application/json"
MSGPACK = "application/msgpack"
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()

#: HTTP status for each kind of error a call can end with
STATUS = {
    "bad_request": 400,
    "auth": 401,
    "denied": 403,
    "not_found": 404,
    "timeout": 408,
    "too_large": 413,
    "unsupported": 415,
    "serialization": 400,
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

    def functions(self) -> list[dict[str, Any]]:
        """Every function: name, doc, params, returns, mode, input, output."""
        ...

    def identify(self, bearer: str | None) -> str | None:
        """The caller's identity from its bearer token (None: anonymous); raises
        :class:`CallFailed` (code ``auth``) for a bad token, or none where one is needed."""
        ...

    def call(
        self, name: str, args: list[Any], kwargs: dict[str, Any], identity: str | None
    ) -> Awaitable[Any]:
        """Run ``name`` and return its result; raises :class:`CallFailed`."""
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


def _arguments(body: bytes, content_type: str) -> tuple[list[Any], dict[str, Any]]:
    media = content_type.split(";", 1)[0].strip().lower() or JSON
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


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _failure("auth", "AuthenticationError", "use 'Authorization: Bearer <token>'")
    return token.strip()


def http_app(gateway: Gateway) -> Starlette:
    """The ASGI app serving ``gateway``'s functions."""

    async def call(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            identity = gateway.identify(_bearer(request))
            body = await _read_body(request, gateway.max_message_size)
            args, kwargs = _arguments(body, request.headers.get("content-type", JSON))
            result = await gateway.call(name, args, kwargs, identity)
        except CallFailed as failed:
            return _error(failed.info)
        if MSGPACK in request.headers.get("accept", ""):
            return Response(_msgpack.encode(result), media_type=MSGPACK)
        try:
            return Response(_json.encode(result), media_type=JSON)
        except (TypeError, ValueError) as exc:
            return _error(
                {
                    "type": "SerializationError",
                    "message": f"the result of {name}() has no JSON form ({exc}); ask for "
                    f"Accept: {MSGPACK}",
                    "code": "serialization",
                }
            )

    async def functions(request: Request) -> Response:
        try:
            gateway.identify(_bearer(request))
        except CallFailed as failed:
            return _error(failed.info)
        return Response(
            _json.encode({"server": gateway.name, "functions": gateway.functions()}),
            media_type=JSON,
        )

    async def index(request: Request) -> Response:
        rows = "".join(
            f"<li><code>{html.escape(f['name'])}({html.escape(_signature(f))})</code>"
            f"<pre>{html.escape(f['doc'])}</pre></li>"
            for f in gateway.functions()
        )
        page = (
            f"<!doctype html><title>{html.escape(gateway.name)}</title>"
            f"<h1>undertow server {html.escape(gateway.name)!s}</h1>"
            "<p>POST /call/NAME with a JSON body {\"args\": [...], \"kwargs\": {...}}; "
            "GET /functions for this list as JSON.</p>"
            f"<ul>{rows}</ul>"
        )
        return HTMLResponse(page)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/functions", functions, methods=["GET"]),
        Route("/call/{name}", call, methods=["POST"]),
    ]
    return Starlette(routes=routes)


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
    sock = socket.socket(family, socket.SOCK_STREAM)
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
