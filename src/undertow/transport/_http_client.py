"""The HTTP transport's client side: calls over a kept-alive httpx connection, a msgpack body
out and an NDJSON stream of events back (see ``_http_api.py``). httpx is imported only here."""

from __future__ import annotations

import contextlib
import importlib
import io
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import httpx
import msgspec

from undertow.errors import ConnectError, DeserializationError, RPCTimeout
from undertow.transport._http_api import (
    MSGPACK,
    NDJSON,
    NPY,
    POINTER_HEADER,
    SECRET_HEADER,
    CallFailed,
)

__all__ = ["AsyncHttpCaller", "HttpCaller", "fetch_data"]


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

    def functions(self, timeout: float | None, challenge: str | None = None) -> dict[str, Any]:
        """The server's description (``GET /functions``; a ``challenge`` asks a server that
        accepts its user's own token to prove it holds it)."""
        params = {} if challenge is None else {"challenge": challenge}
        with _translated(self.base_url, "/functions", timeout):
            response = self._client.get("/functions", params=params, timeout=timeout)
        if response.status_code != 200:
            raise _client_error(response)
        described: dict[str, Any] = msgspec.json.decode(response.content)
        return described

    def events(
        self,
        name: str,
        body: bytes,
        deadline: float | None,
        wait: float | None = None,
        *,
        pointer: bool = False,
    ) -> Generator[tuple[str, Any], None, None]:
        """Call ``name`` with a msgpack ``body``; yields its events as they arrive, all by
        ``deadline`` (a stream: each within ``wait`` seconds of the one before), else raises
        the builtin :class:`TimeoutError`. ``pointer``: the result (or each item) is left on
        the server, and a pointer to it comes back."""
        timeout = wait if deadline is None else max(0.001, deadline - time.monotonic())
        headers = _call_headers(pointer)
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
                    raise TimeoutError(f"{name}() at {self.base_url} did not finish in time")

    def close(self) -> None:
        self._client.close()

    @property
    def closed(self) -> bool:
        return bool(self._client.is_closed)


class AsyncHttpCaller:
    """The asyncio twin of :class:`HttpCaller`."""

    def __init__(self, base_url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        # every request gives its own timeout, from the call's deadline
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=None)  # noqa: S113

    async def functions(
        self, timeout: float | None, challenge: str | None = None
    ) -> dict[str, Any]:
        params = {} if challenge is None else {"challenge": challenge}
        with _translated(self.base_url, "/functions", timeout):
            response = await self._client.get("/functions", params=params, timeout=timeout)
        if response.status_code != 200:
            raise _client_error(response)
        described: dict[str, Any] = msgspec.json.decode(response.content)
        return described

    async def events(
        self,
        name: str,
        body: bytes,
        deadline: float | None,
        wait: float | None = None,
        *,
        pointer: bool = False,
    ) -> AsyncIterator[tuple[str, Any]]:
        timeout = wait if deadline is None else max(0.001, deadline - time.monotonic())
        headers = _call_headers(pointer)
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
                        raise TimeoutError(f"{name}() at {self.base_url} did not finish in time")

    async def aclose(self) -> None:
        await self._client.aclose()


def _call_headers(pointer: bool) -> dict[str, str]:
    """The headers of a call: a msgpack body, NDJSON events back, a pointer if asked for."""
    headers = {"Content-Type": MSGPACK, "Accept": NDJSON}
    if pointer:
        headers[POINTER_HEADER] = "1"
    return headers


@contextlib.contextmanager
def _translated(base_url: str, what: str, timeout: float | None) -> Generator[None, None, None]:
    """httpx's failures as undertow's errors; a timeout as the builtin :class:`TimeoutError`
    (the rpc layer words it for the call)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TimeoutError(
            f"{what} at {base_url} did not answer within {timeout:g} s" if timeout else str(exc)
        ) from exc
    except httpx.TransportError as exc:
        raise ConnectError(f"cannot reach {base_url}: {exc}") from exc


def fetch_data(url: str, secret: str, token: str | None, timeout: float | None) -> Any:
    """The value at ``url`` (``http://host:port/data/KEY``) given its secret: an array is
    read from its ``.npy`` form straight into its own memory, anything else from JSON."""
    headers = {SECRET_HEADER: secret, "Accept": NPY}  # JSON for anything else
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with (
        _fetch_timeout(),
        _translated(url, "fetch", timeout),
        httpx.stream("GET", url, headers=headers, timeout=timeout) as response,
    ):
        if response.status_code != 200:
            response.read()
            raise _client_error(response)
        if response.headers.get("content-type", "").startswith(NPY):
            return _read_npy(response.iter_raw())
        return msgspec.json.decode(response.read())


@contextlib.contextmanager
def _fetch_timeout() -> Generator[None, None, None]:
    """A fetch that timed out raises :class:`RPCTimeout`, as a pointer's other operations do."""
    try:
        yield
    except TimeoutError as exc:
        raise RPCTimeout(str(exc)) from exc


def _read_npy(chunks: Iterator[bytes]) -> Any:
    """An array from the chunks of its ``.npy`` form, each copied once, into place."""
    np = importlib.import_module("numpy")  # the server sent an array: numpy is wanted here
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= 10:
            # magic (6), version (2), header length (2 bytes in version 1, 4 after)
            size = 4 if head[6] >= 2 else 2
            end = 8 + size + int.from_bytes(head[8 : 8 + size], "little")
            if len(head) >= end:
                break
    else:
        raise DeserializationError("the .npy answer ended inside its header")
    reader = io.BytesIO(head[:end])
    version = np.lib.format.read_magic(reader)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(reader)
    if dtype.hasobject:
        raise DeserializationError("an array of Python objects is refused")
    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    into = memoryview(array.reshape(-1, order="A").view(np.uint8))
    filled = len(head) - end
    into[:filled] = head[end:]
    for chunk in chunks:
        into[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    if filled != len(into):
        raise DeserializationError(f"the .npy answer carried {filled:,} of {len(into):,} bytes")
    return array
