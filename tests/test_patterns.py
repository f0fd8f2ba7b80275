"""Masters and workers, pipelines, tees, routes and sinks, each server a real process."""

from __future__ import annotations

import collections
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import undertow
from tests._processes import ServedProcess

HERE = Path(__file__).parent
ROLES = str(HERE / "pattern_roles.py")
Role = Callable[..., ServedProcess]
STAGE_NAMES = ("step1", "step2", "last")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stages() -> Iterator[list[ServedProcess]]:
    """step1, step2 and last, the three services of the seed's pipeline, each a process."""
    procs = [ServedProcess([sys.executable, ROLES, "stage", name]) for name in STAGE_NAMES]
    yield procs
    for proc in procs:
        proc.stop()


def test_master_with_four_workers_answers_every_input_once_when_one_dies(role: Role) -> None:
    role("master", "squares", 1.0)
    workers = [role("worker", "squares", 1, 0.0002) for _ in range(4)]
    n = 10_000
    seen: collections.Counter[int] = collections.Counter()
    stream = undertow.stream(range(n), "squares.square", window=512, timeout=30)
    for r in stream:
        assert r.value == r.id * r.id
        seen[r.id] += 1
        if sum(seen.values()) == 2_000:
            workers[1].stop(signal.SIGKILL)  # mid-stream: it holds messages
    assert sorted(seen) == list(range(n))
    assert set(seen.values()) == {1}  # exactly once in the client's view
    assert (stream.sent, stream.answered, stream.failed) == (n, n, 0)
    stats = undertow.patterns.stats("squares")
    assert stats["requeued"] >= 1  # what the dead worker held went to the others
    assert len(stats["workers"]) == 3
    assert stats["received"] == n
    assert stats["answered"] + stats["failed"] == n


def test_three_stage_pipeline_answers_out_of_order_every_id_once(
    stages: list[ServedProcess],
) -> None:
    pipeline = undertow.Pipeline("step1.foo", "step2.bar", "last.baz")
    results = list(undertow.stream((f"m{i}" for i in range(600)), pipeline, timeout=30))
    ids = [r.id for r in results]
    assert sorted(ids) == list(range(600))
    assert ids != sorted(ids)  # random stage times: later inputs overtook earlier ones
    assert all(r.value == f"m{r.id} step1 step2 last" for r in results)


def test_ordered_streams_and_map_keep_input_order(stages: list[ServedProcess]) -> None:
    pipeline = undertow.Pipeline("step1.foo", "last.baz")
    results = list(undertow.stream((f"m{i}" for i in range(200)), pipeline, ordered=True))
    assert [r.id for r in results] == list(range(200))
    values = list(undertow.map("last.neg", range(50), ordered=True))
    assert values == [-i for i in range(50)]


def test_a_failing_stage_fails_only_its_inputs(stages: list[ServedProcess]) -> None:
    pipeline = undertow.Pipeline("step2.fail3", "last.neg")
    stream = undertow.stream(range(30), pipeline, timeout=30)
    results = {r.id: r for r in stream}
    assert sorted(results) == list(range(30))
    for i, r in results.items():
        if i % 3 == 0:
            with pytest.raises(ValueError, match=f"{i} is a multiple of three"):
                _ = r.value
        else:
            assert r.value == -i
    assert (stream.answered, stream.failed) == (20, 10)


def test_filters_routes_generators_and_tees(stages: list[ServedProcess]) -> None:
    kept = undertow.stream(range(10), undertow.Pipeline("step1.evens", "last.neg"))
    assert {r.id: r.value for r in kept} == {0: 0, 2: -2, 4: -4, 6: -6, 8: -8}
    assert kept.dropped == 5
    routed = undertow.Pipeline(
        "step1.kind", undertow.route({"small": "step2.double", "big": "last.neg"})
    )
    assert {r.id: r.value for r in undertow.stream(range(8), routed)} == {
        0: 0,
        1: 2,
        2: 4,
        3: 6,
        4: 8,
        5: -5,
        6: -6,
        7: -7,
    }
    spread = undertow.stream([3, 0, 2], undertow.Pipeline("step1.pieces", "step2.double"))
    by_id = collections.defaultdict(list)
    for r in spread:
        by_id[r.id].append(r.value)
    assert {k: sorted(v) for k, v in by_id.items()} == {0: [0, 2, 4], 2: [0, 2]}
    assert spread.dropped == 1  # 0 pieces: nothing came of input 1
    teed = undertow.Pipeline("step2.double", undertow.tee("last.neg", ["step2.double", "last.neg"]))
    tee_stream = undertow.stream(range(20), teed)
    answers = collections.defaultdict(list)
    for r in tee_stream:
        answers[r.id].append(r.value)
    assert {k: sorted(v) for k, v in answers.items()} == {i: [-4 * i, -2 * i] for i in range(20)}
    assert (tee_stream.sent, tee_stream.answered) == (20, 40)


def test_a_sink_collects_several_streams_and_acknowledges_as_it_is_read(
    stages: list[ServedProcess], role: Role
) -> None:
    role("sink", "results")
    first = undertow.stream(range(30), undertow.Pipeline("step2.double", sink="results"))
    second = undertow.stream(range(40), undertow.Pipeline("last.neg", sink="results"), window=8)
    runs = [threading.Thread(target=s.wait, daemon=True) for s in (first, second)]
    for run in runs:
        run.start()
    sink = undertow.connect("results")
    got: list[undertow.patterns.SinkItem] = []
    most = 0
    deadline = time.monotonic() + 30
    while len(got) < 70:
        assert time.monotonic() < deadline, f"the sink got {len(got)} of 70"
        most = max(most, sink.held())
        got.extend(sink.take(5, 0.1))
    for run in runs:
        run.join(30)
        assert not run.is_alive()  # every input was acknowledged once read
    assert collections.Counter(item.source for item in got) == {first.id: 30, second.id: 40}
    assert sorted(i.value for i in got if i.source == second.id) == sorted(-i for i in range(40))
    assert most <= 30 + 8  # what waits in the sink stays within the streams' windows
    assert (first.sent, first.answered, first.failed, second.sent) == (30, 0, 0, 40)
    assert sink.sources() == {first.id: 30, second.id: 40}
    sink.close()


def test_bad_inputs_fail_alone_and_the_stream_goes_on(stages: list[ServedProcess]) -> None:
    items = [1, 2j, 3]  # a complex number cannot travel with the numpy codec
    results = {r.id: r for r in undertow.stream(items, "last.neg")}
    assert results[0].value == -1
    assert results[2].value == -3
    with pytest.raises(undertow.SerializationError, match="input 1 \\(complex\\)"):
        _ = results[1].value
    answers = {r.id: r for r in undertow.stream(range(3), "last.unsendable")}
    assert answers[0].value == 0
    assert answers[2].value == 2
    with pytest.raises(undertow.SerializationError, match="an answer \\(complex\\)"):
        _ = answers[1].value
    missing = list(undertow.stream(range(2), "last.nothing"))
    assert all("no function 'nothing'" in str(r.error) for r in missing)
    with pytest.raises(undertow.ServiceNotFound):
        _ = next(undertow.stream(range(2), "nowhere.f")).value
