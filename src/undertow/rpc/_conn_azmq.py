"""The async client's ZeroMQ connection: one DEALER socket read by the event loop."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from undertow.rpc._async_conn import AsyncConnection
from undertow.rpc._calls import Call, Description, FunctionInfo
from undertow.rpc._conn_zmq import DESCRIBE_INFO, END, StreamItems, ZmqLinked
from undertow.rpc._connection import ConnectOptions, Settings, timeout_error

__all__ = ["AsyncZmqConnection"]


class AsyncZmqConnection(ZmqLinked):
    """An async client's connection to a server's ZeroMQ address; made on a running loop."""

    link: AsyncConnection

    def __init__(self, address: str, options: ConnectOptions) -> None:
        super().__init__(address, options, AsyncConnection)

    async def describe(self, timeout: float | None, challenge: str | None = None) -> Description:
        try:
            body = await self.call(DESCRIBE_INFO, (), {}, (timeout, False, None, False))
        except TimeoutError:
            raise timeout_error(self.address, timeout, connecting=True) from None
        return self._described(body)

    def _request(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> tuple[Call, list[Any], float | None]:
        timeout, output, sink, pointer = how
        call = Call(self.proto.next_id(), info.name, sink)
        frames = self.proto.request(
            call.call_id, info, args, kwargs, timeout=timeout, output=output, pointer=pointer
        )
        return call, frames, timeout

    def call(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> Awaitable[Any]:
        """Send the call now (unless it must wait for a connection) and return what waits
        for its outcome."""
        call, frames, timeout = self._request(info, args, kwargs, how)
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.link.connect_wait is not None:
            return self._start_and_finish(call, frames, deadline, timeout)
        self.link.start(call, frames)
        return self._finish(call, deadline, timeout)

    def stream(
        self, info: FunctionInfo, args: tuple[Any, ...], kwargs: dict[str, Any], how: Settings
    ) -> AsyncIterator[Any]:
        call, frames, timeout = self._request(info, args, kwargs, how)
        if self.link.connect_wait is None:
            self.link.start(call, frames)
            return _AsyncStream(self, call, timeout)
        return _AsyncStream(self, call, timeout, unsent=frames)  # sent on the first item

    async def _start_and_finish(
        self, call: Call, frames: list[Any], deadline: float | None, timeout: float | None
    ) -> Any:
        await self.link.start_connected(call, frames)
        return await self._finish(call, deadline, timeout)

    async def _finish(self, call: Call, deadline: float | None, timeout: float | None) -> Any:
        try:
            done = await self.link.wait(call, lambda: call.done, deadline)
        except BaseException:  # cancelled, the connection lost: stop the call, forget it
            self.abandon(call)
            raise
        if not done:
            self.abandon(call)
            raise timeout_error(self.proto.where(call.name), timeout)
        return self.proto.outcome(call)

    def abandon(self, call: Call) -> None:
        """Stop waiting for ``call`` and ask the server to stop it."""
        if not self.link.closed:
            self.link.forget(call)
            self.link.send(self.proto.cancel_frames(call.call_id))

    async def aclose(self) -> None:
        self.link.close()


class _AsyncStream(StreamItems, AsyncIterator[Any]):
    """Iterates over the items a remote generator yields, as they arrive."""

    _owner: AsyncZmqConnection

    def __init__(
        self,
        owner: AsyncZmqConnection,
        call: Call,
        timeout: float | None,
        unsent: list[Any] | None = None,
    ) -> None:
        self._owner = owner
        self._call = call
        #: the request, when it goes out with the first item (a connection to wait for)
        self._unsent = unsent
        self._timeout = timeout
        self._finished = False
        self._consumed = 0

    async def __anext__(self) -> Any:
        call, owner = self._call, self._owner
        if self._finished:
            raise StopAsyncIteration
        if self._unsent is not None:
            frames, self._unsent = self._unsent, None
            try:
                await owner.link.start_connected(call, frames)
            except BaseException:
                self._finished = True
                raise
        if not call.items and not call.done:
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            try:
                ready = await owner.link.wait(call, lambda: bool(call.items) or call.done, deadline)
            except BaseException:  # the awaiting task was cancelled: stop the generator too
                await self.aclose()
                raise
            if not ready:
                await self.aclose()
                raise timeout_error(owner.proto.where(call.name), self._timeout)
        return self._next_item()

    def _next_item(self) -> Any:
        item = self._take_item()
        if item is END:
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop the stream early; the server stops the generator at its next item."""
        if not self._finished:
            self._finished = True
            if not self._call.done:
                self._owner.abandon(self._call)
