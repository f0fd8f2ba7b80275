"""The dashboard's board, without I/O: health from heartbeats, processes that stop beating
kept (unhealthy) then forgotten, throughput and latency series, and no secret in a row."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from undertow.dashboard._board import Board, Reads
from undertow.data import DataRecord, Location
from undertow.storage import Instance, JobRecord, JobState, QueueInfo, WorkerInfo

pytestmark = pytest.mark.timeout(10)

T0 = 1_000_000.0


def worker(beat: float, ttl: float = 6.0) -> WorkerInfo:
    return WorkerInfo(name="host:1:abc", queues=["default"], beat=beat, ttl=ttl, running=1)


def test_a_worker_that_stops_beating_turns_unhealthy_before_its_ttl_then_goes():
    board = Board(keep_lost=60.0)
    seen = board.update(Reads(now=T0, workers=[worker(T0)]))
    assert [w["healthy"] for w in seen["workers"]] == [True]
    # the store still lists it (within its TTL), but it missed its beats: unhealthy
    late = board.update(Reads(now=T0 + 3.5, workers=[worker(T0)]))
    assert [w["healthy"] for w in late["workers"]] == [False]
    # the store forgot it: the page still shows it, unhealthy, for keep_lost seconds
    gone = board.update(Reads(now=T0 + 10, workers=[]))
    assert [(w["name"], w["healthy"]) for w in gone["workers"]] == [("host:1:abc", False)]
    assert board.update(Reads(now=T0 + 70, workers=[]))["workers"] == []
    back = board.update(Reads(now=T0 + 71, workers=[worker(T0 + 71)]))
    assert [w["healthy"] for w in back["workers"]] == [True]


def test_instances_are_grouped_by_service_with_their_health():
    def instance(service: str, beat: float) -> Instance:
        return Instance(
            service=service, id=uuid.uuid4().hex, addresses=["tcp://10.0.0.1:5000"],
            started=beat, heartbeat=beat, ttl=10.0,
        )  # fmt: skip

    snapshot = Board().update(
        Reads(now=T0, instances=[instance("b", T0), instance("a", T0), instance("a", T0 - 8)])
    )
    assert [(s["name"], len(s["instances"]), s["healthy"]) for s in snapshot["services"]] == [
        ("a", 2, 1),
        ("b", 1, 1),
    ]


def test_queue_throughput_is_finished_jobs_per_second_between_polls():
    board = Board()

    def poll(now: float, done: int, length: int) -> Any:
        queue = QueueInfo(name="q", length=length, states={"done": done, "queued": length})
        return board.update(Reads(now=now, queues=[queue]))["queues"][0]

    assert poll(T0, 10, 5)["throughput"] == [None]
    assert poll(T0 + 2, 30, 3)["throughput"] == [None, 10.0]
    row = poll(T0 + 3, 20, 1)  # purged jobs do not count as negative throughput
    assert row["throughput"] == [None, 10.0, 0.0]
    assert row["depth"] == [5.0, 3.0, 1.0]


def test_function_latency_is_the_mean_of_the_calls_since_the_last_poll():
    board = Board()

    def poll(now: float, calls: int, seconds: float) -> Any:
        figures = {"i1": {"server": "svc", "functions": {"f": {"calls": calls, "errors": 0,
                                                               "seconds": seconds}}}}  # fmt: skip
        return board.update(Reads(now=now, figures=figures))["functions"][0]

    assert poll(T0, 10, 1.0)["latency"] == [None]
    row = poll(T0 + 1, 20, 1.5)
    assert row["name"] == "svc.f"
    assert row["latency"] == [None, pytest.approx(50.0)]
    assert row["mean_ms"] == pytest.approx(75.0)
    # a function no server reports any more leaves the board
    assert board.update(Reads(now=T0 + 2))["functions"] == []


def test_rows_hold_no_secret_payload_or_result():
    record = DataRecord(
        key=uuid.uuid4().hex, secret="the-secret", type_name="bytes", size=3, created=T0,
        owner="alice", tags=["t"], locations=[Location(protocol="zmq", host="h", port=1)],
    )  # fmt: skip
    job = JobRecord(
        id=uuid.uuid4().hex, queues=["q"], function="f", payload=b"the-secret",
        result=b"the-secret", state=JobState.DONE,
    )  # fmt: skip
    snapshot = Board().update(Reads(now=T0, data=[record], jobs=[job]))
    assert "the-secret" not in repr(snapshot)
    assert snapshot["data"][0]["hosts"] == ["h"]
    assert snapshot["jobs"][0]["state"] == "done"


def test_each_worker_shows_what_it_runs():
    running = [
        JobRecord(id=uuid.uuid4().hex, queues=["q"], function=f, worker=w, state=JobState.RUNNING)
        for f, w in [("resize", "host:1:abc"), ("resize", "host:1:abc"), ("crop", "host:1:abc")]
    ]
    snapshot = Board().update(Reads(now=T0, workers=[worker(T0)], running=running))
    assert snapshot["workers"][0]["runs"] == [
        {"function": "crop", "count": 1},
        {"function": "resize", "count": 2},
    ]
