"""What the pattern servers say to each other, and the routes their messages follow. Pure.

A message of a stream travels with its route: the function that takes it next, then the
*steps* after that, as plain data, so that any server can pass it on without knowing the
pipeline in advance. A step is one of::

    "step2.bar"                          # service step2, function bar
    ["tee", [branch, branch, ...]]       # a copy down each branch (a branch: a list of steps)
    ["route", {key: branch, ...}]        # one branch, chosen by the key the stage returned
    ["sink", "results"]                  # into the sink named results (only last)

An empty route means the stream's client. Each message also carries a *weight*: its input
starts with :data:`FULL_WEIGHT`, every copy a tee or a gather makes takes a share of it (the
shares always add up), and every end of the line (a result, an error, a message dropped or
taken by a sink) gives its weight back to the client. An input is finished when the weights
given back add up to the full weight, however many copies it became and in whatever order
they arrive.

The calls, all of them one argument (a list of groups) encoded by the stream's codec:

- ``_pipe``: ``[[stream, reply, function, steps, [[id, weight, value], ...]], ...]``: run
  ``function`` on each value (or, on a master, hand it to a worker), then pass the result on
  along ``steps``. ``reply``: the address of the stream's client.
- ``_pipe_end``: ``[[stream, [[id, status, weight, value], ...], ack], ...]``: ends of the line
  for the streams (or sinks) of the receiving process; ``ack`` is None, or ``[reply,
  stream]`` where a sink tells the client what it took.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from undertow.errors import ConfigError, StreamError
from undertow.wire import Blob, Codec, NumpyCodec

__all__ = [
    "DROP",
    "DROPPED",
    "ERR",
    "FULL_WEIGHT",
    "OK",
    "TAKEN",
    "Hop",
    "Pipeline",
    "To",
    "blobs_out",
    "check_steps",
    "codec_named",
    "count_option",
    "next_hops",
    "plain",
    "route",
    "size_of",
    "split",
    "tee",
    "zero_copy",
]

#: an answer: the value the line ended with
OK = 0
#: the stage, master or worker failed the message; the value is the encoded error
ERR = 1
#: a stage dropped the message (a filter); no value
DROPPED = 2
#: a sink took the message; no value
TAKEN = 3
#: the weight each input starts with (shares of it always add up to it exactly)
FULL_WEIGHT = 1 << 60
#: how deep tees and routes may nest, and how many steps a route may hold in all
MAX_DEPTH = 8
MAX_STEPS = 256

_codecs: dict[str, Codec] = {"numpy": NumpyCodec()}


def codec_named(name: str) -> Codec:
    codec = _codecs.get(name)
    if codec is None:  # pickle: made on first use (cloudpickle is imported then)
        from undertow.wire import PickleCodec

        codec = _codecs[name] = PickleCodec()
    return codec


_TARGET = re.compile(r"^[A-Za-z_][\w\-]*\.[A-Za-z_]\w*$")
_SINK = re.compile(r"^[A-Za-z_][\w\-]*$")


class _Drop:
    """The type of :data:`DROP`."""

    _made = False

    def __reduce__(self) -> str:
        return "DROP"

    def __repr__(self) -> str:
        return "undertow.DROP"


#: what a stage returns to drop a message (a filter): it goes no further, and its client is
#: told it was dropped (it yields nothing for it)
DROP = _Drop()


@dataclass(frozen=True)
class To:
    """What a stage returns to send its result down one branch of a route::

        def classify(doc):
            return To("image" if doc["png"] else "text", doc)

    ``key`` picks the branch (see :func:`route`); ``value`` is what goes down it.
    """

    key: str
    value: Any


@dataclass(frozen=True)
class _Tee:
    branches: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class _Route:
    branches: dict[str, tuple[Any, ...]]


def tee(*branches: str | Sequence[Any]) -> _Tee:
    """A step that sends a copy of each message down every branch (a ``"service.function"``
    or a list of steps); the steps after the tee follow each branch."""
    if len(branches) < 2:
        raise ConfigError(f"tee() needs two branches or more, not {len(branches)}")
    return _Tee(tuple(_branch(b) for b in branches))


def route(branches: Mapping[str, str | Sequence[Any]]) -> _Route:
    """A step that sends each message down one branch, chosen by the key its stage returned
    with :class:`To`; the steps after the route follow whichever branch it took."""
    if not branches:
        raise ConfigError("route() needs at least one branch: route({'key': 'service.fn'})")
    for key in branches:
        if not isinstance(key, str):
            raise ConfigError(f"route() keys must be strings, not {key!r}")
    return _Route({k: _branch(b) for k, b in branches.items()})


def _branch(branch: str | Sequence[Any]) -> tuple[Any, ...]:
    return (branch,) if isinstance(branch, str) else tuple(branch)


class Pipeline:
    """Stages a stream's messages pass through, each result going straight to the next::

        undertow.Pipeline("step1.foo", "step2.bar", "last.baz")
        undertow.Pipeline("parse.run", undertow.tee("index.add", "stats.count"), sink="out")

    Each stage is ``"service.function"``: any function of any service found by that name in
    the registry. ``sink``: the last results go to that sink instead of the client (which
    is still told each message arrived).
    """

    def __init__(self, *steps: Any, sink: Any = None) -> None:
        if not steps:
            raise ConfigError('a Pipeline needs at least one stage: Pipeline("service.function")')
        form = [_step_form(s) for s in steps]
        if sink is not None:
            if not isinstance(sink, str) or not _SINK.match(sink):
                raise ConfigError(f"sink={sink!r}: a sink's name is a word (letters, digits, _)")
            form.append(["sink", sink])
        check_steps(form)
        if not isinstance(form[0], str):
            raise ConfigError(
                f"a pipeline starts with a stage, not a {form[0][0]}: put the stage whose "
                "result it splits first"
            )
        self.steps: list[Any] = form

    @property
    def first(self) -> str:
        """The first stage, ``"service.function"``."""
        return str(self.steps[0])

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(map(repr, self.steps))})"


def _step_form(step: Any) -> Any:
    if isinstance(step, str):
        return step
    if isinstance(step, _Tee):
        return ["tee", [[_step_form(s) for s in b] for b in step.branches]]
    if isinstance(step, _Route):
        return ["route", {k: [_step_form(s) for s in b] for k, b in step.branches.items()}]
    raise ConfigError(
        f"a pipeline step must be 'service.function', tee(...) or route(...), not {step!r}"
    )


def check_steps(steps: Any) -> None:
    """Refuse a route that is not well formed (it may come from any peer)."""
    count = _check(steps, 0, [0])
    if count > MAX_STEPS:
        raise StreamError(f"a route of {count} steps is longer than {MAX_STEPS}")


def _check(steps: Any, depth: int, seen: list[int]) -> int:
    if depth > MAX_DEPTH:
        raise StreamError(f"a route nests tees and routes deeper than {MAX_DEPTH}")
    if not isinstance(steps, list):
        raise StreamError(f"a route must be a list of steps, not {type(steps).__name__}")
    for i, step in enumerate(steps):
        seen[0] += 1
        if seen[0] > MAX_STEPS:
            raise StreamError(f"a route longer than {MAX_STEPS} steps")
        if isinstance(step, str):
            if not _TARGET.match(step):
                raise StreamError(f"a stage is 'service.function', not {step!r}")
        else:
            _check_split(step, i == len(steps) - 1, depth, seen)
    return seen[0]


def _check_split(step: Any, last: bool, depth: int, seen: list[int]) -> None:
    """Check a tee, a route or a sink step."""
    if not (isinstance(step, list) and len(step) == 2 and isinstance(step[0], str)):
        raise StreamError(f"a route step must be a stage, a tee or a route, not {step!r}")
    kind, body = step
    if kind == "sink":
        if not last or not isinstance(body, str) or not _SINK.match(body):
            raise StreamError(f"a sink must be the last step and named by a word: {step!r}")
    elif kind == "tee" and isinstance(body, list) and len(body) >= 2:
        for branch in body:
            _check(branch, depth + 1, seen)
    elif kind == "route" and isinstance(body, dict) and body:
        for key, branch in body.items():
            if not isinstance(key, str):
                raise StreamError(f"a route's keys are strings, not {key!r}")
            _check(branch, depth + 1, seen)
    else:
        raise StreamError(f"a route step must be a stage, a tee or a route, not {step!r}")


@dataclass(frozen=True)
class Hop:
    """Where one result goes next: a stage (``service``, ``function``), a sink (``sink``),
    or the client (all None), with the steps after it and its share of the weight."""

    service: str | None
    function: str | None
    sink: str | None
    steps: list[Any]
    value: Any
    weight: int


def next_hops(steps: list[Any], value: Any, weight: int, stage: str) -> list[Hop]:
    """Where a result of ``stage`` goes: one hop, or one per branch of a tee (sharing the
    weight). Raises :class:`StreamError` when a route's key is missing or unknown."""
    if not steps:
        if isinstance(value, To):
            raise StreamError(
                f"{stage} returned To({value.key!r}, ...) but no route follows it in the pipeline"
            )
        return [Hop(None, None, None, [], value, weight)]
    head, rest = steps[0], steps[1:]
    if isinstance(head, str):
        if isinstance(value, To):
            raise StreamError(
                f"{stage} returned To({value.key!r}, ...) but the next step is {head}, not a route"
            )
        service, _, function = head.partition(".")
        return [Hop(service, function, None, rest, value, weight)]
    kind, body = head
    if kind == "sink":
        return [Hop(None, None, body, [], value, weight)]
    if kind == "tee":
        hops: list[Hop] = []
        for branch, share in zip(body, split(weight, len(body)), strict=True):
            hops.extend(next_hops([*branch, *rest], value, share, stage))
        return hops
    if not isinstance(value, To):
        raise StreamError(
            f"the step after {stage} routes by key ({', '.join(map(repr, body))}): return "
            "undertow.To(key, value) from it"
        )
    branch = body.get(value.key)
    if branch is None:
        raise StreamError(
            f"{stage} routed to {value.key!r}, which is not a branch of the route: "
            f"{', '.join(map(repr, body))}"
        )
    return next_hops([*branch, *rest], value.value, weight, stage)


#: bytes-like values this large travel in frames of their own, never copied on the way
BLOB_MIN = 64 * 1024


def size_of(value: Any) -> int:
    """The bytes a value's buffer holds (bytes-like values, numpy arrays); 0 for others."""
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    nbytes = getattr(value, "nbytes", 0)
    return nbytes if isinstance(nbytes, int) else 0


def blobs_out(entries: list[Any], at: int) -> None:
    """Mark the large bytes-like values at position ``at`` of ``entries`` to travel as frames
    of their own (they arrive as ``memoryview`` s; :func:`plain` makes them bytes again)."""
    for entry in entries:
        value = entry[at]
        if isinstance(value, bytes | bytearray | memoryview) and size_of(value) >= BLOB_MIN:
            entry[at] = Blob(value)


def plain(value: Any, stream: str = "") -> Any:
    """A value as a function or a consumer of ``stream`` should see it: a frame that brought
    bytes, as bytes; left a memoryview for a zero-copy stream (:func:`zero_copy`)."""
    if type(value) is memoryview and not stream.startswith(ZERO_COPY):
        return value.tobytes()
    return value


#: how the id of a zero-copy stream starts: its large bytes reach every function and the
#: consumer as read-only memoryviews of the frames that brought them, never copied
ZERO_COPY = "z"


def zero_copy(stream: str) -> bool:
    """True for a stream whose large bytes are handed on as memoryviews, never copied."""
    return stream.startswith(ZERO_COPY)


def count_option(name: str, value: object, what: str) -> int:
    """``value`` if it is a whole number of at least one, else a :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r}: give {what} (a whole number, at least 1)")
    return value


def split(weight: int, parts: int) -> list[int]:
    """``weight`` in ``parts`` integer shares that add up to it exactly (the first takes
    what is left over). A weight too small to share stays whole in the first part."""
    if parts <= 1:
        return [weight]
    share = weight // parts
    return [weight - share * (parts - 1), *([share] * (parts - 1))]
