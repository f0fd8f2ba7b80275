"""Inside a job's child process (a worker's "process" and "fork" modes).

The child opens the job as a worker's thread would: the payload's signature is checked
before anything is unpickled, and the unpickling happens here, never in the worker. It runs
the function (a coroutine function with :func:`asyncio.run`) and sends the worker, each as
a msgpack message on its pipe, what the job prints as it prints it, then how it ended::

    ["o", text]                output, stdout and stderr in order, a line or more at a time
    ["r", result]              the encoded result
    ["e", error, delay|None]   the encoded error, and the retry delay (None: no retry)

A "process" child (:func:`serve`) is started once per slot and runs one job after another,
each sent to it as ``[id, function, codec, payload, attempts]``; an empty message ends it. A
"fork" child (:func:`run_forked`) runs the one job it was forked for and exits.

Each child leads a process group of its own: a Ctrl-C at the worker's terminal (which drains
the worker) does not interrupt its jobs, and the worker stops a job together with whatever it
started. A child whose worker died kills its group.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import inspect
import io
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any, NoReturn

import msgspec

from undertow.queue._payload import encode_result
from undertow.queue._runner import (
    Functions,
    Keep,
    Opened,
    Outcome,
    Retry,
    RetryPolicy,
    failure,
    kept,
    open_job,
)
from undertow.queue._worker_state import WorkerState
from undertow.security import Authenticator, TokenAuth
from undertow.storage import JobRecord
from undertow.wire import PickleCodec

__all__ = [
    "Channel",
    "decode_message",
    "encode_setup",
    "encode_task",
    "run_forked",
    "run_job",
    "serve",
]

_enc = msgspec.msgpack.Encoder()
_task_dec = msgspec.msgpack.Decoder(tuple[str, str, str, bytes, int])
#: output is sent at each line end, or once this much is waiting
_OUTPUT_CHUNK = 8192


def encode_task(record: JobRecord) -> bytes:
    """A job as the worker sends it to its process."""
    return _enc.encode((record.id, record.function, record.codec, record.payload, record.attempts))


def _decode_task(data: bytes) -> JobRecord:
    job_id, function, codec, payload, attempts = _task_dec.decode(data)
    return JobRecord(
        id=job_id, queues=[], function=function, codec=codec, payload=payload, attempts=attempts
    )


def decode_message(data: bytes) -> list[Any]:
    """A message from a child: ``["o", text]``, ``["r", result]`` or ``["e", error, delay]``."""
    message: list[Any] = msgspec.msgpack.decode(data)
    return message


def encode_setup(
    functions: Mapping[str, Callable[..., Any]],
    auth: Authenticator | None,
    retry_max: float,
    keep: Keep | None = None,
) -> list[bytes]:
    """What a "process" child needs, pickled once by the worker (the functions by reference
    where they can be imported, by value otherwise): the functions jobs may name, the
    authenticator (a TokenAuth as its tokens), the longest retry delay and the environment.
    SerializationError names what cannot be pickled."""
    if isinstance(auth, TokenAuth):  # its keys hold HMAC objects, which do not pickle
        keys = [auth.signing_key(name) for name in auth.identities]
        portable: Any = ("tokens", [key.secret.decode() for key in keys if key is not None])
    else:
        portable = ("auth", auth)
    setup = (dict(functions), portable, retry_max, dict(os.environ), keep)
    return [bytes(frame) for frame in PickleCodec().encode(setup)]


class Channel:
    """The child's end of its pipe: whole messages, one sender at a time (a job's own
    threads may print while it returns), output first."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._size = 0

    def write(self, text: str) -> None:
        with self._lock:
            self._pending.append(text)
            self._size += len(text)
            if "\n" in text or self._size >= _OUTPUT_CHUNK:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._flush()
            self._conn.send_bytes(_enc.encode(message))

    def _flush(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._size = 0
            self._conn.send_bytes(_enc.encode(("o", text)))


class _Output(io.TextIOBase):
    """``sys.stdout`` and ``sys.stderr`` while a job runs: what it prints goes to the worker."""

    encoding = "utf-8"

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._channel.write(text)
        return len(text)

    def flush(self) -> None:
        self._channel.flush()


def run_job(
    record: JobRecord,
    lookup: Callable[[str], Callable[..., Any]],
    auth: Authenticator | None,
    retry: RetryPolicy,
    channel: Channel,
    keep: Keep | None = None,
) -> Outcome:
    """Open and run one job in this process, its output sent on ``channel`` (``keep``: how
    results asked as pointers are kept)."""
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = _Output(channel)  # one stream: what it prints stays in order
    try:
        return _call(record, lookup, auth, retry, keep)
    finally:
        sys.stdout, sys.stderr = saved
        channel.flush()


def _call(
    record: JobRecord,
    lookup: Callable[[str], Callable[..., Any]],
    auth: Authenticator | None,
    retry: RetryPolicy,
    keep: Keep | None,
) -> Outcome:
    opened = open_job(record, auth, lookup)  # the signature first, then the unpickling
    if not isinstance(opened, Opened):
        return opened
    try:
        value = opened.fn(*opened.args, **opened.kwargs)
        if inspect.isawaitable(value):  # a coroutine function's job, or a partial of one
            value = asyncio.run(_awaited(value))
        value = kept(keep, opened.call, value, record)
        return encode_result(record.id, record.function, record.codec, value, opened.key)
    except Exception as exc:
        return failure(record, opened.call, exc, retry, skip_frames=1)


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


def _send_outcome(channel: Channel, outcome: Outcome) -> None:
    if isinstance(outcome, bytes):
        channel.send(("r", outcome))
    else:
        channel.send(("e", *outcome))


def _detach(parent_gone: int | None) -> None:
    """Lead a process group of our own, with the default signal handlers, and die with our
    whole group when ``parent_gone`` (a descriptor) reads end-of-file: the worker died."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):  # then the worker can stop only this process
        os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)  # a forked child must not wake the worker's loop with its signals
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent_gone is not None:  # a bare thread: no wait for it to start
        _thread.start_new_thread(_die_with_parent, (parent_gone,))


def _die_with_parent(fd: int) -> None:
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    if os.getpgrp() == os.getpid():
        os.killpg(0, signal.SIGKILL)  # this process and whatever its job started
    os._exit(1)


def _parent_sentinel() -> int | None:
    parent = multiprocessing.parent_process()
    return parent.sentinel if parent is not None and os.name == "posix" else None


def serve(conn: Connection, setup: list[bytes]) -> None:
    """A "process" child's life: run the jobs sent on ``conn`` until it closes."""
    functions, (kind, auth), retry_max, env, keep = PickleCodec().decode(setup)
    os.environ.clear()  # the worker's environment now (a fork server keeps its first one)
    os.environ.update(env)
    if kind == "tokens":
        auth = TokenAuth(auth)
    _detach(_parent_sentinel())
    channel = Channel(conn)
    lookup = Functions(functions, "in the job's process")
    retry = Retry(WorkerState(retry_max=retry_max).retry_delay)
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        if not data:
            return
        outcome = run_job(_decode_task(data), lookup, auth, retry, channel, keep)
        _send_outcome(channel, outcome)


def run_forked(
    record: JobRecord,
    conn: Connection,
    *,
    lookup: Callable[[str], Callable[..., Any]],
    auth: Authenticator | None,
    retry: RetryPolicy,
    parent_gone: int,
    close: tuple[int, ...],
    keep: Keep | None = None,
) -> NoReturn:
    """A "fork" child's life, just forked from the worker: run ``record`` and exit, never
    returning into the worker's code (nor running its exit handlers). ``close``: the
    worker's descriptors this child must not keep (its end of the liveness pipe)."""
    code = 70  # EX_SOFTWARE: something went wrong before the job could end
    try:
        for fd in close:
            os.close(fd)
        _detach(parent_gone)
        channel = Channel(conn)
        _send_outcome(channel, run_job(record, lookup, auth, retry, channel, keep))
        code = 0
    except SystemExit as exc:  # the job called sys.exit(): end as it asked
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # not the job's error (that is its outcome): ours, say what
        traceback.print_exc()
        raise
    finally:
        os._exit(code)
