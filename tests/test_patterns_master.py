"""A master's hooks, cache, bounds and protocol; the client's options; the HTTP gateway."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import undertow
from tests._processes import ServedProcess
from tests._waiting import wait_until
from undertow.errors import StreamError
from undertow.patterns._master import PROTOCOL
from undertow.rpc import CallOptions, FunctionInfo

HERE = Path(__file__).parent
ROLES = str(HERE / "pattern_roles.py")
Role = Callable[..., ServedProcess]
STAGES = str(HERE / "pattern_stages.py")

pytestmark = pytest.mark.timeout(120)


def _take(client: undertow.Client, payload: list[Any]) -> Any:
    info = FunctionInfo("_pipe_take", input="numpy", output="numpy")
    return client._invoke(info, (payload,), {}, CallOptions(timeout=10, output=False))


def test_scatter_and_gather_hooks_shape_what_workers_see_and_send(role: Role) -> None:
    role("master", "hooked", 10, "hooks")  # scatter: str.split; gather: str.upper
    role("worker", "hooked", 2)
    by_id: dict[int, list[str]] = {}
    for r in undertow.stream(["a bc", "def", ""], "hooked.echo", timeout=30):
        by_id.setdefault(r.id, []).append(r.value)
    assert {k: sorted(v) for k, v in by_id.items()} == {0: ["A", "BC"], 1: ["DEF"]}


def test_the_cache_is_shared_by_clients_and_workers(role: Role) -> None:
    role("master", "cachy")
    role("worker", "cachy")
    master = undertow.connect("cachy")
    master.set("table", {"rows": [1, 2, 3]})
    assert [r.value for r in undertow.stream(["table"], "cachy.cached")] == [{"rows": [1, 2, 3]}]
    assert master.keys() == ["table"]
    assert master.delete("table") is True
    [missing] = list(undertow.stream(["table"], "cachy.cached"))
    with pytest.raises(KeyError, match="keeps nothing under 'table'"):
        _ = missing.value
    with pytest.raises(StreamError, match="cache limit"):
        master.set("huge", b"x" * (300 << 20))
    master.close()


def test_a_slow_consumer_keeps_the_master_within_the_window(role: Role) -> None:
    role("master", "bounded")
    role("worker", "bounded", 2)
    window, most, seen, pulled = 64, 0, 0, 0

    def inputs() -> Iterator[int]:
        nonlocal pulled
        for i in range(3000):
            pulled += 1
            yield i

    stats: dict[str, Any] = {}

    def idle() -> bool:
        stats.update(undertow.patterns.stats("bounded"))
        held = sum(w["held"] for w in stats["workers"].values())
        return bool(stats["pending"] + held == 0 and stats["in_flight"] == 0)

    for r in undertow.stream(inputs(), "bounded.square", window=window, timeout=30):
        assert r.value == r.id * r.id
        seen += 1
        if seen % 100 == 0:  # the consumer stops taking until the workers have run dry
            assert wait_until(idle, 10), stats  # everything the window let in is answered
            most = max(most, stats["received"] - seen)
            # the generator is read, and the master sent, only as far as answers are taken
            assert pulled <= seen + window
            assert stats["received"] <= seen + window
    assert seen == 3000
    assert 0 < most <= window  # answers waited for the consumer, never more than the window


def test_undertow_status_shows_what_masters_and_stages_did(role: Role) -> None:
    from click.testing import CliRunner

    from undertow.cli import main

    role("master", "counted")
    role("worker", "counted", 2)
    assert len(list(undertow.stream(range(500), "counted.fail3"))) == 500
    shown = CliRunner().invoke(main, ["status", "--json"])
    assert shown.exit_code == 0, shown.output
    [row] = json.loads(shown.output)["patterns"]
    assert row["service"] == "counted"
    assert (row["received"], row["answered"], row["failed"]) == (500, 333, 167)
    assert row["in_flight"] == row["pending"] == 0
    assert len(row["workers"]) == 2
    assert set(row["latency_ms"]["fail3"]) == {"p50", "p90", "p99"}
    table = CliRunner().invoke(main, ["status"])
    assert "patterns" in table.output
    assert "fail3 " in table.output


def test_a_worker_speaking_another_protocol_is_refused(role: Role) -> None:
    address = role("master", "strict").address
    with undertow.Client(address) as client:
        with pytest.raises(StreamError, match="take protocol 99"):
            _take(client, [99, "odd-worker", 1, ["square"], []])
        with pytest.raises(StreamError, match="not \\[version"):
            _take(client, [PROTOCOL, 42])


def test_a_bad_answer_fails_that_input_and_the_rest_go_on(role: Role) -> None:
    address = role("master", "judged", 10).address
    results: list[undertow.Result] = []
    stream = undertow.stream(range(20), "judged.square", timeout=30)
    consumer = threading.Thread(target=lambda: results.extend(stream), daemon=True)
    consumer.start()
    with undertow.Client(address) as client:
        tasks: list[Any] = []
        deadline = time.monotonic() + 20
        while not tasks:  # the lone taker: it gets the first messages
            assert time.monotonic() < deadline
            tasks, _pickle_waiting = _take(client, [PROTOCOL, "liar", 1, ["square"], []])
        key, function, value, _zero = tasks[0]
        assert function == "square"
        _take(client, [PROTOCOL, "liar", 0, ["square"], [[key, 7, "not an answer"]]])
    role("worker", "judged")
    consumer.join(30)
    assert not consumer.is_alive()
    by_id = {r.id: r for r in results}
    assert sorted(by_id) == list(range(20))
    with pytest.raises(StreamError, match="with status 7, which is not an answer"):
        _ = by_id[value].value
    assert all(by_id[i].value == i * i for i in range(20) if i != value)


def test_pickle_streams_progress_bars_and_the_pylm_client(
    role: Role, capsys: pytest.CaptureFixture[str]
) -> None:
    role("master", "picky")
    role("worker", "picky")
    values = [1j, {1, 2}, frozenset({3})]  # only pickle carries these
    got = {r.id: r.value for r in undertow.stream(values, "picky.echo", codec="pickle")}
    assert got == dict(enumerate(values))
    client = undertow.patterns.Client(window=16)
    answers = sorted(r.value for r in client.job(range(200), "picky.square", progress=True))
    assert answers == sorted(i * i for i in range(200))
    assert "200/200" in capsys.readouterr().err  # tqdm's bar, on stderr outside Jupyter


def test_the_http_gateway_streams_ndjson_answers_as_they_finish() -> None:
    stages = ServedProcess([sys.executable, "-m", "undertow.service", STAGES], lines=3)
    gateway = undertow.patterns.Gateway("front", undertow.Pipeline("step2.fail3", "last.neg"))
    try:
        url = gateway.start(http_port=0)
        body = "".join(f"{i}\n" for i in range(10))
        headers = {"Content-Type": "application/x-ndjson", "Accept": "application/x-ndjson"}
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", f"{url}/call/run", content=body, headers=headers) as reply:
                assert reply.status_code == 200
                events = [json.loads(line) for line in reply.iter_lines() if line.strip()]
            whole = http.post(f"{url}/call/run", json=[[4, 5]]).json()
    finally:
        gateway.stop()
        stages.stop()
    assert events[-1] == {"end": True}
    answers = {event["item"]["id"]: event["item"] for event in events[:-1]}
    assert sorted(answers) == list(range(10))
    for i, line in answers.items():
        if i % 3 == 0:
            assert line["error"]["type"] == "ValueError"
            assert f"{i} is a multiple of three" in line["error"]["message"]
        else:
            assert line["value"] == -i
    assert sorted(whole, key=lambda a: a["id"]) == [{"id": 0, "value": -4}, {"id": 1, "value": -5}]


def test_undertow_master_worker_serves_a_module_until_sigterm(role: Role, tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text("def cube(x):\n    return x ** 3\n")
    role("master", "cubes")
    worker = ServedProcess(
        [sys.executable, "-m", "undertow.cli", "master-worker", "cubes", "--module", "tasks",
         "--slots", "2"],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        assert sorted(undertow.map("cubes.cube", range(50))) == sorted(i**3 for i in range(50))
    finally:
        assert worker.stop() == 0  # SIGTERM: it hands back what it holds and exits


def test_undertow_gateway_fronts_a_pipeline_from_the_shell(role: Role) -> None:
    for name in ("step2", "last"):
        role("stage", name)
    gateway = ServedProcess(
        [sys.executable, "-m", "undertow.cli", "gateway", "shellfront", "step2.fail3",
         "last.neg", "--http", "0"]
    )  # fmt: skip
    try:
        url = gateway.address  # the announcement's last word: its HTTP address
        assert url.startswith("http://127.0.0.1:")
        headers = {"Content-Type": "application/x-ndjson", "Accept": "application/x-ndjson"}
        reply = httpx.post(f"{url}/call/run", content="1\n2\n3\n", headers=headers, timeout=30)
        events = [json.loads(line) for line in reply.text.splitlines() if line.strip()]
        items = {e["item"]["id"]: e["item"] for e in events if "item" in e}
        assert items[0] == {"id": 0, "value": -1}
        assert items[1] == {"id": 1, "value": -2}
        assert items[2]["error"]["type"] == "ValueError"
    finally:
        assert gateway.stop() == 0
