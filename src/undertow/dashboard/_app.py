"""The dashboard's HTTP routes (starlette). Every route but the login page and the static
files needs a token or the session cookie (``_guard.py``); the page itself is static HTML
and JavaScript that reads ``/api/*``, so no data is ever in the HTML.

``/api/snapshot`` and ``/api/events`` (server-sent events, one per change) serve the board
the shared poll loop keeps; ``/api/jobs`` and ``/api/data`` read one page of the list from
the backend, chosen by the backend's query (``after``: the last id of the page before)."""

from __future__ import annotations

import asyncio
import html
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from undertow.dashboard._guard import HEADERS, Guard
from undertow.dashboard._poller import Poller
from undertow.dashboard._rows import data_row, error_text, job_row
from undertow.queue import JobQueue, JobState
from undertow.storage import Backend, check_job_id, check_queue_name

__all__ = ["build_app"]

STATIC = Path(__file__).parent / "static"
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}
#: the largest page a list request may ask for
MAX_PAGE = 200
#: seconds between keep-alive comments on a quiet event stream
KEEPALIVE = 15.0
#: bytes the login form's body may have (a token and a CSRF value)
MAX_FORM = 4096
#: the output pieces of a job its page shows (the last ones)
OUTPUT_TAIL = 200
_json = msgspec.json.Encoder()

Handler = Callable[[Request], Awaitable[Response]]


class _Shield:
    """ASGI middleware: refuses a request whose Host is not this server's (400, no data)
    and adds the security headers to every answer (those a route set itself are kept)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                given = list(message.get("headers", []))
                named = {name.lower() for name, _ in given}
                message["headers"] = given + [h for h in HEADERS if h[0] not in named]
            await send(message)

        if not self.guard.host_ok(headers):
            refused = Response(
                "unknown Host: open the dashboard by the name it printed, or start it with "
                "--allow-host NAME for this one\n",
                status_code=400,
                media_type="text/plain",
            )
            await refused(scope, receive, send_guarded)
            return
        await self.app(scope, receive, send_guarded)


class _Routes:
    """The handlers, sharing the guard, the poll loop and the backend."""

    def __init__(
        self, guard: Guard, poller: Poller, pages: Backend, backend_url: str | None
    ) -> None:
        self.guard, self.poller, self.backend_url = guard, poller, backend_url
        #: a backend of its own for the pages of the lists, so that a page never waits
        #: behind the poll loop's read (SQLite: another connection and thread)
        self.pages = pages
        self._explainer: JobQueue | None = None
        #: the page's files, read once (no file is read while answering)
        self._files = {path.name: path.read_bytes() for path in STATIC.iterdir()}
        self._encoded: tuple[tuple[int, str], bytes] = ((-1, ""), b"")

    def authed(self, handler: Handler) -> Handler:
        """``handler`` behind the token: 401 and nothing else without it."""

        async def checked(request: Request) -> Response:
            if not self.guard.authenticated(dict(request.headers), dict(request.cookies)):
                return _json_response({"error": "token required"}, 401)
            return await handler(request)

        return checked

    async def index(self, request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:  # once: exchanged for the cookie, and taken out of the URL
            if not self.guard.token_ok(given):
                return self._login(401, "That token is not this dashboard's.")
            answer = RedirectResponse("/", status_code=303)
            answer.set_cookie(**self.guard.session_cookie())
            return answer
        if not self.guard.authenticated(dict(request.headers), dict(request.cookies)):
            return self._login(200, "")  # the form alone: nothing to refuse yet
        return Response(self._files["index.html"], media_type="text/html")

    async def login(self, request: Request) -> Response:
        if not self.guard.same_origin(dict(request.headers)):
            return Response("cross-origin request refused\n", 403, media_type="text/plain")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                return Response("form too large\n", 413, media_type="text/plain")
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if not self.guard.csrf_ok(dict(request.cookies), _first(form, "csrf")):
            return self._login(403, "The form expired; try again.")
        if not self.guard.token_ok(_first(form, "token")):
            return self._login(401, "That token is not this dashboard's.")
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(**self.guard.session_cookie())
        return answer

    def _login(self, status: int, message: str) -> Response:
        """The login form, with a new CSRF value in the form and in its cookie."""
        csrf, cookie = self.guard.new_csrf_cookie()
        page = self._files["login.html"].decode()
        page = page.replace("{csrf}", html.escape(csrf)).replace("{message}", html.escape(message))
        answer = HTMLResponse(page, status_code=status)
        answer.headers["referrer-policy"] = "same-origin"  # else its POST says Origin: null
        answer.set_cookie(**cookie)
        return answer

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in {"app.js", "app.css", "plot.js"}:  # (the HTML pages have their routes)
            return Response("not found\n", 404, media_type="text/plain")
        return Response(self._files[name], media_type=_TYPES[Path(name).suffix])

    def encoded(self) -> bytes:
        """The board's snapshot (with the poll loop's error) as JSON, encoded once per
        version however many pages ask for it."""
        key = (self.poller.board.version, self.poller.errors)
        if key != self._encoded[0]:
            snapshot = {**self.poller.board.snapshot, "error": self.poller.errors}
            self._encoded = (key, _json.encode(snapshot))
        return self._encoded[1]

    async def snapshot(self, request: Request) -> Response:
        self.poller.want()
        if not self.poller.board.version:
            await self.poller.next_snapshot(0, timeout=5.0)
        return Response(self.encoded(), media_type="application/json")

    async def events(self, request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            seen = -1
            while not self.poller.closing.is_set():
                if seen < 0 and self.poller.board.version:
                    snapshot: dict[str, Any] | None = self.poller.board.snapshot
                else:
                    snapshot = await self.poller.next_snapshot(max(seen, 0), KEEPALIVE)
                if await request.is_disconnected():
                    return
                if snapshot is None:
                    yield b": still here\n\n"
                    continue
                seen = snapshot["version"]
                yield b"event: snapshot\ndata: " + self.encoded() + b"\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def jobs(self, request: Request) -> Response:
        params = request.query_params
        try:
            state = JobState(params["state"]) if params.get("state") else None
            queue = check_queue_name(params["queue"]) if params.get("queue") else None
            after = check_job_id(params["after"]) if params.get("after") else None
            limit = _limit(params.get("limit"))
            found = await self.pages.jobs(
                state=state, queue=queue, limit=limit, after=after, newest_first=True
            )
        except (ValueError, LookupError) as exc:
            return _json_response({"error": str(exc)}, 400)
        rows = [job_row(job) for job in found]
        return _json_response(
            {"jobs": rows, "next": rows[-1]["id"] if len(rows) == limit else None}
        )

    async def job(self, request: Request) -> Response:
        try:
            job_id = check_job_id(request.path_params["job_id"])
        except ValueError as exc:
            return _json_response({"error": str(exc)}, 400)
        record = await self.pages.job(job_id)
        if record is None:
            return _json_response({"error": f"no job {job_id} (never, or purged)"}, 404)
        output = await self.pages.output(job_id)
        row = {
            **job_row(record),
            "error": error_text(record),
            "output": "".join(output[-OUTPUT_TAIL:]),
            "explain": await self._explain(job_id),
        }
        return _json_response(row)

    async def _explain(self, job_id: str) -> str:
        """``Job.explain()`` of the job, through a job queue of the backend (no token: it
        only reads)."""
        if self._explainer is None:
            self._explainer = JobQueue(self.backend_url, token=False)
        explainer = self._explainer
        try:
            return await asyncio.to_thread(lambda: explainer.job(job_id).explain())
        except Exception as exc:
            return f"(no explanation: {exc})"

    async def data(self, request: Request) -> Response:
        params = request.query_params
        try:
            limit = _limit(params.get("limit"))
            found = await self.pages.find_data(
                tags=[t for t in params.getlist("tag") if t],
                owner=params.get("owner") or None,
                limit=limit,
                after=params.get("after") or None,
                newest_first=True,
            )
        except (ValueError, LookupError) as exc:
            return _json_response({"error": str(exc)}, 400)
        rows = [data_row(record) for record in found]
        return _json_response(
            {"data": rows, "next": rows[-1]["key"] if len(rows) == limit else None}
        )

    def close(self) -> None:
        if self._explainer is not None:
            self._explainer.close()


def _first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _limit(text: str | None) -> int:
    """A page size from a query parameter: 1 to MAX_PAGE (default 50)."""
    try:
        limit = int(text) if text else 50
    except ValueError:
        raise ValueError(f"limit={text!r} is not a number; give 1 to {MAX_PAGE}") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit={limit} is out of range; give 1 to {MAX_PAGE}")
    return limit


def _json_response(value: Any, status: int = 200) -> Response:
    return Response(_json.encode(value), status, media_type="application/json")


def build_app(
    guard: Guard, poller: Poller, pages: Backend, backend_url: str | None
) -> tuple[ASGIApp, Callable[[], None]]:
    """The dashboard's ASGI app (``pages``: the backend the list pages are read from), and
    what closes its routes' resources."""
    routes = _Routes(guard, poller, pages, backend_url)
    app = Starlette(
        routes=[
            Route("/", routes.index),
            Route("/login", routes.login, methods=["POST"]),
            Route("/static/{name}", routes.static),
            Route("/api/snapshot", routes.authed(routes.snapshot)),
            Route("/api/events", routes.authed(routes.events)),
            Route("/api/jobs", routes.authed(routes.jobs)),
            Route("/api/jobs/{job_id}", routes.authed(routes.job)),
            Route("/api/data", routes.authed(routes.data)),
        ]
    )
    return _Shield(app, guard), routes.close
