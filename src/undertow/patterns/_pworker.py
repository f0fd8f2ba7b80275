"""A master's worker: takes messages from the master found by name, runs them, answers.

Each slot is a thread with a loop of its own: one ``_pipe_take`` call carries the answers to
the last batch and asks for the next (as many as the slot gets through in about
:data:`BATCH_TIME` at the pace it has run so far, at least one), so one round trip serves a
batch. A beat thread tells the master, every ``beat`` seconds, that slots busy with long
messages are still alive. When the master cannot be reached, a slot looks it up again in the
registry and retries, with a growing pause, until it is stopped.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from undertow.errors import ConfigError, SerializationError, StreamError, UndertowError
from undertow.patterns._master import PROTOCOL, TAKE_WAIT
from undertow.patterns._send import Directory
from undertow.patterns._wire import ERR, OK, blobs_out, codec_named, count_option, plain
from undertow.rpc import CallOptions, FunctionInfo, client_token
from undertow.wire import encode_error, error_info

__all__ = ["MasterWorker"]

log = logging.getLogger(__name__)

#: seconds of work a slot asks for at once
BATCH_TIME = 0.02
_TAKE = {
    c: FunctionInfo("_pipe_take", input=c, output=c, needs_auth=c == "pickle")
    for c in ("numpy", "pickle")
}


def _functions(
    functions: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]],
) -> dict[str, Callable[..., Any]]:
    table = (
        dict(functions)
        if isinstance(functions, Mapping)
        else {getattr(f, "__name__", ""): f for f in functions}
    )
    for name, fn in table.items():
        if not name.isidentifier() or not callable(fn):
            raise ConfigError(f"a worker serves functions by name: {name!r} -> {fn!r} is not one")
    if not table:
        raise ConfigError("a worker needs at least one function to serve")
    return table


class MasterWorker:
    """Serves functions for a master: ``MasterWorker("squares", [square]).run()``.

    Args:
        master: the master's name in the registry (or its address, ``tcp://host:port``).
        functions: the functions it runs, a list (by their names) or a dict name -> function;
            each takes a message's value and returns the answer (a generator: several).
        slots: messages run at once (threads).
        token: what its calls are signed with (None: the user's own, on loopback).
        registry: the registry URL the master is found in (None: the default).
        beat: seconds between the signs of life sent while messages run.

    A worker whose calls are signed (a token, or the user's own on loopback) takes and
    answers in pickle, so it serves streams of either codec; one that signs nothing uses
    numpy and serves only streams in numpy.
    """

    def __init__(
        self,
        master: str,
        functions: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]],
        *,
        slots: int = 1,
        token: str | None = None,
        registry: str | None = None,
        beat: float = 1.0,
    ) -> None:
        count_option("slots", slots, "how many messages may run at once")
        self.master = master
        self.functions = _functions(functions)
        self.slots = slots
        self.beat = beat
        self._directory = Directory(token, registry)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy: dict[str, bool] = {}
        base = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self._ids = [f"{base}-{i}" for i in range(slots)]
        self._name = base
        #: messages answered and failed by this worker
        self.answered = self.failed = 0
        self._counting = threading.Lock()  # slots add their batch's counts under it

    def __repr__(self) -> str:
        return f"<MasterWorker for {self.master!r} {sorted(self.functions)} slots={self.slots}>"

    def stats(self) -> dict[str, Any]:
        """Its figures: slots, those running messages now, messages answered and failed
        (``undertow.serve_metrics(worker, port)`` serves them for Prometheus)."""
        busy = sum(1 for running in list(self._busy.values()) if running)
        with self._counting:
            answered, failed = self.answered, self.failed
        figures = {"master": self.master, "worker": self._name, "slots": self.slots}
        return {"pattern_worker": {**figures, "busy": busy, "answered": answered, "failed": failed}}

    def start(self) -> MasterWorker:
        """Run in background threads; :meth:`stop` ends them."""
        for wid in self._ids:
            t = threading.Thread(
                target=self._slot, args=(wid,), name=f"undertow-{wid}", daemon=True
            )
            t.start()
            self._threads.append(t)
        beat = threading.Thread(target=self._beats, name="undertow-worker-beat", daemon=True)
        beat.start()
        self._threads.append(beat)
        return self

    def run(self) -> None:
        """Run until :meth:`stop` (or Ctrl-C)."""
        self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Ask the slots to stop (from a signal handler, say); :meth:`run` then returns."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages; wait up to ``timeout`` for the slots to hand back answers."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        if not any(t.is_alive() for t in self._threads):
            self._directory.close()  # its connections to the master, once no slot uses them

    def __enter__(self) -> MasterWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- a slot -------------------------------------------------------------------------------

    def _address(self) -> str:
        if self.master.startswith("tcp://"):
            return self.master
        return self._directory.address_of(self.master)

    def _slot(self, wid: str) -> None:
        answers: list[list[Any]] = []
        pace, pause = 0.001, 0.05
        pickled = False  # the answers in hand came in pickle, or pickle work waits
        names = sorted(self.functions)
        while True:
            stopping = self._stop.is_set()
            want = 0 if stopping else max(1, min(1024, int(BATCH_TIME / pace)))
            try:
                address = self._address()
                signed = self._directory.client(address)
                # pickle (signed, each frame hashed) only while messages in pickle need it
                can_pickle = client_token(signed) is not None
                codec = "pickle" if pickled and can_pickle else "numpy"
                client = signed if codec == "pickle" else self._directory.client_for(address, codec)
                options = CallOptions(timeout=TAKE_WAIT + 30.0, output=False)
                payload = [PROTOCOL, wid, want, names, answers]
                tasks, waiting = client._invoke(_TAKE[codec], (payload,), {}, options)
                answers, pause = [], 0.05
                pickled = bool(waiting) or (codec == "pickle" and bool(tasks))
            except UndertowError as exc:
                if isinstance(exc, StreamError):
                    log.warning("worker %s: the master refused it: %s", wid, exc)
                if stopping:  # what it held goes to another worker once its time runs out
                    log.info("worker %s: stopped without handing back %d answers: %s",
                             wid, len(answers), exc)  # fmt: skip
                    return
                log.info(
                    "worker %s: master %s not reachable (%s); trying again", wid, self.master, exc
                )
                self._directory.forget(self.master, "")
                self._stop.wait(pause)
                pause = min(pause * 2, 2.0)
                continue
            if stopping:
                return
            if tasks:
                start = time.perf_counter()
                self._busy[wid] = True
                answers = self._run(tasks, codec)
                self._busy[wid] = False
                pace = 0.8 * pace + 0.2 * max(1e-6, (time.perf_counter() - start) / len(tasks))

    def _run(self, tasks: list[Any], codec: str) -> list[list[Any]]:
        answers: list[list[Any]] = []
        failed = 0
        for key, function, value, zero in tasks:
            fn = self.functions.get(function)
            try:
                if fn is None:
                    raise StreamError(f"this worker does not serve {function!r}")
                result = fn(value if zero else plain(value))
                if inspect.isgenerator(result):
                    raise StreamError(f"{function} is a generator; a master's worker answers once")
                answers.append([key, OK, result])
            except Exception as exc:  # the function's error, for this message only
                answers.append([key, ERR, encode_error(error_info(exc))])
                failed += 1
        with self._counting:
            self.answered += len(answers) - failed
            self.failed += failed
        blobs_out(answers, 2)
        return _encodable(answers, codec)

    def _beats(self) -> None:
        while not self._stop.wait(self.beat):
            for wid in self._ids:
                if not self._busy.get(wid):
                    continue
                try:
                    client = self._directory.client(self._address())
                    options = CallOptions(timeout=self.beat * 5, output=False)
                    payload = [PROTOCOL, wid, 0, sorted(self.functions), []]
                    client._invoke(_TAKE["numpy"], (payload,), {}, options)
                except UndertowError as exc:
                    log.debug("worker %s: beat not taken: %s", wid, exc)


def _encodable(answers: list[list[Any]], codec: str) -> list[list[Any]]:
    """``answers`` with each answer ``codec`` cannot carry replaced by its error."""
    encode = codec_named(codec).encode
    try:
        encode(answers)
        return answers
    except SerializationError:
        pass
    for answer in answers:
        try:
            encode(answer[2])
        except SerializationError as exc:
            why = SerializationError(
                f"the answer ({type(answer[2]).__name__}) cannot travel with the {codec} "
                f"codec: {exc}; return numbers, strings, bytes, lists, dicts or arrays"
                + ("" if codec == "pickle" else ", or give the worker a token (pickle)")
            )
            answer[1:] = [ERR, encode_error(error_info(why))]
    return answers
