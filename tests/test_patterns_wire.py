"""The patterns' routes and weights, as pure logic: no sockets."""

from __future__ import annotations

from typing import Any

import pytest

import undertow
from undertow.errors import ConfigError, StreamError
from undertow.patterns._wire import FULL_WEIGHT, check_steps, next_hops, split


def test_a_pipeline_is_its_stages_as_plain_data() -> None:
    p = undertow.Pipeline("a.f", undertow.tee("b.g", ["c.h", "d.i"]), "e.j", sink="out")
    assert p.first == "a.f"
    assert p.steps == ["a.f", ["tee", [["b.g"], ["c.h", "d.i"]]], "e.j", ["sink", "out"]]
    routed = undertow.Pipeline("a.f", undertow.route({"x": "b.g", "y": ["c.h", "d.i"]}))
    assert routed.steps[1] == ["route", {"x": ["b.g"], "y": ["c.h", "d.i"]}]


@pytest.mark.parametrize(
    ("steps", "kw", "says"),
    [
        ((), {}, "at least one stage"),
        (("nodot",), {}, "service.function"),
        (("a.f",), {"sink": "no spaces"}, "sink"),
        ((undertow.tee("a.f", "b.g"),), {}, "starts with a stage"),
        (("a.f", 42), {}, "a pipeline step"),
    ],
)
def test_bad_pipelines_are_refused_naming_the_fault(steps: Any, kw: Any, says: str) -> None:
    with pytest.raises((ConfigError, StreamError), match=says):
        undertow.Pipeline(*steps, **kw)


def test_tee_needs_two_branches_and_route_string_keys() -> None:
    with pytest.raises(ConfigError, match="two branches"):
        undertow.tee("a.f")
    with pytest.raises(ConfigError, match="strings"):
        undertow.route({1: "a.f"})  # type: ignore[dict-item]


def _deep(n: int) -> list[object]:
    steps: list[object] = ["a.f"]
    for _ in range(n):
        steps = [["tee", [["a.f"], steps]]]
    return steps


@pytest.mark.parametrize(
    "steps",
    [
        "a.f",
        ["a"],
        [["tee", [["a.f"]]]],
        [["sink", "x"], "a.f"],
        [["route", {}]],
        [["warp", "a.f"]],
        _deep(10),
        ["a.f"] * 300,
    ],
)
def test_routes_from_peers_are_checked(steps: Any) -> None:
    with pytest.raises(StreamError):
        check_steps(steps)


def test_shares_always_add_up() -> None:
    for weight in (FULL_WEIGHT, 7, 1, 0):
        for parts in (1, 2, 3, 7):
            shares = split(weight, parts)
            assert len(shares) == parts
            assert sum(shares) == weight
            assert all(s >= 0 for s in shares)


def test_next_hops_follow_stages_tees_routes_and_sinks() -> None:
    [hop] = next_hops(["b.g", "c.h"], 5, 100, "a.f")
    assert (hop.service, hop.function, hop.steps, hop.value, hop.weight) == (
        "b",
        "g",
        ["c.h"],
        5,
        100,
    )
    [home] = next_hops([], 5, 100, "a.f")
    assert (home.service, home.sink, home.weight) == (None, None, 100)
    hops = next_hops([["tee", [["b.g"], ["c.h", "d.i"]]], "e.j"], 5, 99, "a.f")
    assert [(h.service, h.steps) for h in hops] == [("b", ["e.j"]), ("c", ["d.i", "e.j"])]
    assert sum(h.weight for h in hops) == 99
    [sunk] = next_hops([["sink", "out"]], 5, 10, "a.f")
    assert sunk.sink == "out"
    route = [["route", {"x": ["b.g"], "y": []}], "e.j"]
    [routed] = next_hops(route, undertow.To("x", 7), 10, "a.f")
    assert (routed.service, routed.value, routed.steps) == ("b", 7, ["e.j"])
    [skipped] = next_hops(route, undertow.To("y", 7), 10, "a.f")
    assert skipped.service == "e"


def test_a_route_needs_a_key_it_knows() -> None:
    route = [["route", {"x": ["b.g"]}]]
    with pytest.raises(StreamError, match=r"undertow\.To"):
        next_hops(route, 7, 10, "a.f")
    with pytest.raises(StreamError, match="'z', which is not a branch"):
        next_hops(route, undertow.To("z", 7), 10, "a.f")
    with pytest.raises(StreamError, match=r"the next step is b\.g, not a route"):
        next_hops(["b.g"], undertow.To("z", 7), 10, "a.f")
    with pytest.raises(StreamError, match="no route follows"):
        next_hops([], undertow.To("z", 7), 10, "a.f")


def test_result_raises_its_own_error_only() -> None:
    good = undertow.Result(3, "x")
    bad = undertow.Result(4, error=ValueError("nope"))
    assert good.ok
    assert good.value == "x"
    assert not bad.ok
    with pytest.raises(ValueError, match="nope"):
        _ = bad.value
    assert "error=ValueError" in repr(bad)


def test_drop_survives_pickle() -> None:
    import pickle

    assert pickle.loads(pickle.dumps(undertow.DROP)) is undertow.DROP


def test_a_client_that_went_away_is_given_up_on_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Answers for a client that cannot be reached fail once after the connect wait, then at
    once: a stage does not wait on a dead client for every batch."""
    import socket
    import time

    from undertow.patterns import _send

    monkeypatch.setattr(_send, "CONNECT_WAIT", 0.3)
    with socket.socket() as sock:  # a port nobody listens on (it was free a moment ago)
        sock.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    sender = _send.Sender(None, None)
    try:
        for attempt in range(2):
            box = _send.Outbox("numpy")
            box.end(dead, "s1", [attempt, 0, 1, "answer"])
            started = time.monotonic()
            sender.send(box)
            took = time.monotonic() - started
            assert sender.failed == attempt + 1
            if attempt == 1:
                assert took < 0.1  # given up on: no second wait
    finally:
        sender.close()
        sender.directory.close()
