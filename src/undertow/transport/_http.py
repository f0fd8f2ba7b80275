"""The HTTP transport's server side: a starlette app over a :class:`Gateway`, served by an
embedded uvicorn on the caller's event loop. starlette and uvicorn are imported only here; the
API's vocabulary (routes, media types, statuses, the error form) is in ``_http_api.py``.

A body must say what it is (``Content-Type``): a browser page from another site can send a
"simple" request without one, so such requests are refused, as are requests whose ``Host`` is
not this machine's when the server listens on loopback only (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib
import io
import pickle
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from undertow._util import is_loopback
from undertow.errors import ConnectError
from undertow.transport._http_api import (
    JSON,
    JSON_TYPES,
    METRICS_TYPE,
    MSGPACK,
    MSGPACK_TYPES,
    NDJSON,
    NPY,
    PICKLE,
    POINTER_HEADER,
    SECRET_HEADER,
    SSE,
    STATUS,
    CallFailed,
    Gateway,
    codec_of,
    failure,
    ndjson_as_json,
    openapi,
    signature_text,
)
from undertow.wire import wire_form

__all__ = ["HttpServer", "http_app", "serve_http"]


def _plain_form(obj: Any) -> Any:
    """A value JSON and msgpack lack as plain data: numpy's arrays as lists, its dtypes as
    their names, undertow's pointers as their JSON form."""
    if type(obj).__module__.partition(".")[0] == "numpy":
        np = importlib.import_module("numpy")
        return str(obj) if isinstance(obj, np.dtype) else obj.tolist()
    return wire_form(obj)


_json = msgspec.json.Encoder(enc_hook=_plain_form)
_msgpack = msgspec.msgpack.Encoder(enc_hook=_plain_form)
#: for the results of a function whose codec carries no arrays (a value of numpy's is an
#: error, as over ZeroMQ)
_strict_json = msgspec.json.Encoder(enc_hook=wire_form)
_strict_msgpack = msgspec.msgpack.Encoder(enc_hook=wire_form)
#: bytes of an array sent per chunk of a response
_CHUNK = 1 << 22


def _error(info: dict[str, Any]) -> Response:
    body = {"error": {k: info.get(k, "") for k in ("type", "message", "traceback", "code")}}
    if info.get("available"):
        body["error"]["available"] = info["available"]
    status = STATUS.get(str(info.get("code")), 500)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(_json.encode(body), status, headers=headers, media_type=JSON)


async def _read_body(request: Request, limit: int | None) -> bytes:
    """The request body, refused (413) past ``limit`` bytes without reading all of it."""
    declared = request.headers.get("content-length")
    if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
        raise failure("too_large", "MessageTooLarge", f"the body is over {limit:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if limit is not None and size > limit:
            raise failure("too_large", "MessageTooLarge", f"the body is over {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media(request: Request) -> str:
    """The body's media type; a request without one is refused: it is what a page from
    another site can send without the browser asking first."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == NDJSON:
        return media
    if media not in JSON_TYPES and media not in MSGPACK_TYPES and media != PICKLE:
        raise failure(
            "unsupported",
            "UnsupportedMediaType",
            f"Content-Type {media or '(none)'!r} is not taken; send {JSON}, {MSGPACK} or "
            f"{NDJSON} (a line per item: the function's one argument is their list)",
        )
    return media


def _arguments(body: bytes, media: str) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments from a JSON or msgpack body (``media``, checked)."""
    if not body.strip():
        return [], {}
    decode = msgspec.json.decode if media in JSON_TYPES else msgspec.msgpack.decode
    try:
        decoded = decode(body)
    except msgspec.DecodeError as exc:
        raise failure(
            "bad_request", "DeserializationError", f"the body is not {media}: {exc}"
        ) from None
    if isinstance(decoded, list):  # a bare list: the positional arguments
        return decoded, {}
    if not isinstance(decoded, dict) or not set(decoded) <= {"args", "kwargs"}:
        raise failure(
            "bad_request",
            "TypeError",
            'the body must be {"args": [...], "kwargs": {...}} (either may be left out) or a '
            "list of positional arguments",
        )
    args, kwargs = decoded.get("args", []), decoded.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise failure("bad_request", "TypeError", '"args" must be a list and "kwargs" an object')
    return args, kwargs


def _return_pointer(request: Request) -> bool:
    """True when the call asks for a pointer to its result (:data:`POINTER_HEADER`)."""
    value = request.headers.get(POINTER_HEADER, "").strip().lower()
    if value in ("", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise failure(
        "bad_request",
        "ValueError",
        f"{POINTER_HEADER}: {value!r} is not a flag; send 1 for a pointer to the result, "
        "or 0 (the default) for the value",
    )


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
    if not is_loopback(name):
        raise failure(
            "denied",
            "PermissionDenied",
            f"this server answers requests for 127.0.0.1 or localhost, not {host!r}",
        )


async def _unless_gone(request: Request, work: Awaitable[Any]) -> Any:
    """Await ``work``, cancelling it if the client hangs up first (the call then stops).

    ``work`` runs in this task; one watcher task reads the request's channel and cancels
    this one on a disconnect (fewer tasks and wake-ups than waiting on two)."""
    task = asyncio.current_task()
    assert task is not None
    watching = True

    def hung_up(gone: asyncio.Future[None]) -> None:
        if watching and not gone.cancelled():
            task.cancel()

    gone = asyncio.ensure_future(_disconnected(request))
    gone.add_done_callback(hung_up)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone.done() or gone.cancelled():
            raise  # cancelled from outside (the server stops): not ours to turn into an answer
        task.uncancel()
        raise failure("bad_request", "ConnectionClosed", "the client went away") from None
    finally:
        watching = False
        gone.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise failure("auth", "AuthenticationError", "use 'Authorization: Bearer <token>'")
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
        Route("/data/{key}", endpoints.data, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
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
            if media == NDJSON:
                body, media = ndjson_as_json(body), JSON
            codec = codec_of(media)
            args, kwargs = ([], {}) if codec == "pickle" else _arguments(body, media)
            arrays = gateway.sends_arrays(name)
            pointer = _return_pointer(request)
            if NDJSON in accept or SSE in accept:
                events = gateway.events(
                    name, args, kwargs, identity, body=body, body_codec=codec, pointer=pointer
                )
                # a call that cannot start gets its status
                first = await _unless_gone(request, anext(events))
                return _streamed(name, first, events, sse=SSE in accept, arrays=arrays)
            call = gateway.call(
                name, args, kwargs, identity, body=body, body_codec=codec, pointer=pointer
            )
            result = await _unless_gone(request, call)
        except CallFailed as failed:
            return _error(failed.info)
        return _answer(name, result, accept, authenticated=identity is not None, arrays=arrays)

    async def data(self, request: Request) -> Response:
        """A kept value, given its secret: an array as ``.npy`` (sent without copies),
        anything else as JSON (msgpack, or pickle for an authenticated caller, on request)."""
        accept = request.headers.get("accept", "")
        secret = request.headers.get(SECRET_HEADER, "")
        try:
            identity = self._admit(request)
            call = self.gateway.call(
                "_data_fetch", [request.path_params["key"], secret], {}, identity
            )
            value = await _unless_gone(request, call)
        except CallFailed as failed:
            return _error(failed.info)
        asked = JSON in accept or MSGPACK in accept or (PICKLE in accept and identity is not None)
        if _is_array(value) and not asked:
            return _npy(value)
        return _answer("fetch", value, accept, authenticated=identity is not None)

    async def metrics(self, request: Request) -> Response:
        """The server's figures for Prometheus (who may call it may read them)."""
        try:
            self._admit(request)
        except CallFailed as failed:
            return _error(failed.info)
        return Response(self.gateway.metrics(), media_type=METRICS_TYPE)

    async def functions(self, request: Request) -> Response:
        try:
            self._admit(request)
        except CallFailed as failed:
            return _error(failed.info)
        challenge = request.query_params.get("challenge") or None
        if challenge is not None and len(challenge) > 256:
            return _error(
                failure("bad_request", "ValueError", "challenge is over 256 characters").info
            )
        described = self.gateway.description(challenge)
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
            f"<li><code>{html.escape(f['name'])}({html.escape(signature_text(f))})</code>"
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


def _is_array(value: Any) -> bool:
    return type(value).__module__.partition(".")[0] == "numpy" and hasattr(value, "__array__")


def _npy(array: Any) -> StreamingResponse:
    """``array`` in numpy's ``.npy`` format: its header, then its memory, chunk by chunk."""
    np = importlib.import_module("numpy")  # it made the array, so it is there
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise TypeError("an array of Python objects has no .npy form without pickle")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    data = memoryview(array.reshape(-1).view(np.uint8))

    async def body() -> AsyncIterator[bytes | memoryview]:
        yield header.getvalue()
        for start in range(0, len(data), _CHUNK):
            yield data[start : start + _CHUNK]

    length = len(header.getvalue()) + len(data)
    return StreamingResponse(body(), media_type=NPY, headers={"Content-Length": str(length)})


def _answer(
    name: str, result: Any, accept: str, *, authenticated: bool, arrays: bool = True
) -> Response:
    """The result in the form asked for: a pickle only for an authenticated caller.
    ``arrays``: numpy's values are sent as lists and numbers (else they are an error)."""
    try:
        if PICKLE in accept and authenticated:
            return Response(pickle.dumps(result, protocol=5), media_type=PICKLE)
        if MSGPACK in accept:
            encoder = _msgpack if arrays else _strict_msgpack
            return Response(encoder.encode(result), media_type=MSGPACK)
        return Response((_json if arrays else _strict_json).encode(result), media_type=JSON)
    except Exception as exc:  # any encoder's failure: the result has no such form
        return _error(_unsendable(name, exc, arrays))


def _streamed(
    name: str,
    first: tuple[str, Any],
    events: AsyncGenerator[tuple[str, Any], None],
    *,
    sse: bool,
    arrays: bool = True,
) -> StreamingResponse:
    """The call's events as NDJSON lines or server-sent events, each sent as it happens."""
    encode = (_json if arrays else _strict_json).encode

    def frame(kind: str, value: Any) -> tuple[bytes, bool]:
        """The bytes of one event, and whether it is an error that ends the stream."""
        if kind == "items":
            kind, value = "end", True
        try:
            data = encode(value)
        except Exception as exc:  # a value with no JSON form
            kind, data = "error", _json.encode(_unsendable(name, exc, arrays))
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


def _unsendable(name: str, exc: BaseException, arrays: bool = True) -> dict[str, Any]:
    if arrays:
        fix = f"ask for Accept: {MSGPACK}"
    else:  # the function's own codec could not send it either
        fix = "return another type or configure output_serialization (e.g. 'pickle') for it"
    return {
        "type": "SerializationError",
        "message": f"a value of {name}() has no JSON form ({exc}); {fix}",
        "code": "serialization",
    }


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
