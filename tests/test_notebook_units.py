"""The notebook glue's logic outside a kernel: kernel detection, the cell sink with fake
ipykernel streams, HTML forms, the job follower and the progress bar (tests/test_notebook.py
drives a real kernel)."""

from __future__ import annotations

import concurrent.futures
import sys
import threading
from pathlib import Path
from typing import Any

import numpy
import pytest

import undertow
from undertow._util import _notebook
from undertow._util._notebook import CellOutput, cell_output, html_table, in_kernel, kernel
from undertow.queue import JobQueue
from undertow.queue._cluster import _link
from undertow.queue._job import _progress
from undertow.queue._notebook import _Follower, follow_in_cell, wait_with_bar
from undertow.rpc._calls import write_output
from undertow.rpc._functions import CallOptions
from undertow.rpc._output import RoutedStream
from undertow.storage import JobRecord, JobState

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0


class FakeOutStream:
    """ipykernel's OutStream as the cell sink uses it: a parent per thread."""

    def __init__(self, parent: dict[str, Any]) -> None:
        self.parent_header = parent
        self.local = threading.local()
        self.written: list[tuple[str, str]] = []

    def set_thread_parent(self, parent: dict[str, Any]) -> object:
        self.local.parent = parent
        return "token"

    def reset_thread_parent(self, token: object) -> None:
        assert token == "token"
        self.local.parent = None

    def write(self, text: str) -> int:
        self.written.append((self.local.parent["msg_id"], text))
        return len(text)


class FakeSession:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, socket: object, msg_type: str, content: Any, *, parent: Any, ident: Any) -> None:
        self.sent.append((socket, msg_type, content, parent["msg_id"], ident))


class FakeKernel:
    def __init__(self, request: dict[str, Any] | None = None) -> None:
        self.session = FakeSession()
        self.iopub_socket = "iopub"
        self.request = request

    def get_parent(self) -> dict[str, Any] | None:
        return self.request


@pytest.fixture
def fake_kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    """This process seen as a kernel (its streams: see :func:`in_cell`)."""
    found = FakeKernel()
    monkeypatch.setattr(_notebook, "_kernel", found)
    return found


def in_cell(monkeypatch: pytest.MonkeyPatch, msg_id: str) -> tuple[FakeOutStream, FakeOutStream]:
    """Fake OutStreams of cell ``msg_id`` as sys.stdout and sys.stderr. Set in the test's
    body: pytest puts its own capture back between a fixture's setup and the test."""
    out, err = FakeOutStream({"msg_id": msg_id}), FakeOutStream({"msg_id": msg_id})
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    return out, err


def test_outside_a_kernel_nothing_is_found_and_the_answer_is_kept() -> None:
    assert kernel() is None
    assert not in_kernel()
    assert _notebook._kernel is None  # cached: later calls cost one comparison
    assert cell_output() is None


def test_outside_a_kernel_calls_print_as_before(serve: Any) -> None:
    server = undertow.Server(name="units")
    with undertow.connect(serve(server), timeout=WAIT) as client:
        assert client._settings(CallOptions())[2] is write_output
        assert client._settings(CallOptions(output=False))[2] is None
        mine = undertow.connect(client.address, timeout=WAIT, output=print)
        with mine:
            assert mine._settings(CallOptions())[2] is print  # a sink given is kept


def test_the_cell_sink_writes_under_the_cell_of_the_call_from_any_thread(
    fake_kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, err = in_cell(monkeypatch, "A")
    sink = cell_output()
    assert isinstance(sink, CellOutput)
    assert sink.msg_id == "A"
    out.parent_header = {"msg_id": "B"}  # a later cell runs
    writer = threading.Thread(target=sink, args=("stdout", "late\n"))
    writer.start()
    writer.join(WAIT)
    sink("stderr", "oops\n")
    assert out.written == [("A", "late\n")]
    assert err.written == [("A", "oops\n")]


def test_the_cell_sink_finds_the_kernels_stream_under_undertows_routing(
    fake_kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner, _ = in_cell(monkeypatch, "A")
    monkeypatch.setattr(sys, "stdout", RoutedStream("stdout", inner))  # type: ignore[arg-type]
    sink = cell_output()
    assert isinstance(sink, CellOutput)
    sink("stdout", "x\n")
    assert inner.written == [("A", "x\n")]


def test_without_a_parent_per_thread_the_sink_publishes_on_iopub(
    fake_kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OldOutStream:  # ipykernel before set_thread_parent
        def __init__(self) -> None:
            self.parent_header = {"msg_id": "A"}

    monkeypatch.setattr(sys, "stdout", OldOutStream())
    sink = cell_output()
    assert sink is not None
    sink("stdout", "hi\n")
    assert fake_kernel.session.sent == [
        ("iopub", "stream", {"name": "stdout", "text": "hi\n"}, "A", b"stream.stdout")
    ]


def test_no_cell_running_means_no_cell_sink(
    fake_kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdout", FakeOutStream({}))
    assert cell_output() is None
    fake_kernel.request = {"header": {"msg_id": "C"}}  # the kernel knows one after all
    sink = cell_output()
    assert isinstance(sink, CellOutput)
    assert sink.msg_id == "C"


def test_html_tables_escape_what_they_are_given_to_escape() -> None:
    shown = html_table("<T>", [("<k>", "<b>v</b>")], note="n")
    assert "&lt;T&gt;" in shown
    assert "&lt;k&gt;" in shown
    assert "<b>v</b>" in shown  # values are HTML already
    assert "cluster.dashboard_link" in _link(None)
    assert _link("http://h/?a=1&b='2'") == (
        "<a href='http://h/?a=1&amp;b=&#x27;2&#x27;' target='_blank'>"
        "http://h/?a=1&amp;b=&#x27;2&#x27;</a>"
    )


def test_a_pointers_html_shows_the_value_and_never_the_secret(serve: Any) -> None:
    server = undertow.Server(name="units")
    with undertow.connect(serve(server), timeout=WAIT) as client:
        array = undertow.put(numpy.zeros((2, 5), dtype="float32"), to=client)
        listed = undertow.put({"a": 1, "b": 2}, to=client)
        shown = array._repr_html_()
        for expected in ("numpy.ndarray", "(2, 5)", "float32", "40 bytes", "memory", array.key):
            assert expected in shown
        assert array.to_json()["secret_key"] not in shown
        assert "<th style='text-align:left;vertical-align:top'>length</th>" in listed._repr_html_()
        server.stop()  # gone: the form shows what the pointer itself knows
        assert "numpy.ndarray" in array._repr_html_()


def test_a_queued_jobs_html_and_its_progress_in_words(tmp_path: Path) -> None:
    with JobQueue(f"sqlite:///{tmp_path / 'jobs.db'}") as queue:
        job = queue.submit("resize", "a.png")
        assert job._cell is None  # not in a kernel: not followed
        shown = job._repr_html_()
    assert "queued" in shown
    assert "waiting for a worker" in shown
    assert "none yet" in shown
    record = JobRecord(id="x", queues=["q"], function="f", state=JobState.RUNNING)
    record.attempts, record.started, record.worker = 1, 10.0, "w1"
    assert _progress(record, 12.5) == "attempt 1 of 1, running for 2.5 s on w1"
    record.state, record.finished, record.reason = JobState.DEAD, 20.0, "lost"
    assert _progress(record, 30.0) == "ended 20.0 s after submit, attempt 1 of 1: lost"


class FakeJob:
    """What the follower needs of a job: one look that prints and tells the state."""

    def __init__(self, states: list[JobState]) -> None:
        self.states = states
        self.looks = 0
        self.ended = threading.Event()

    def _print_new(self, output: bool) -> JobRecord:
        state = self.states[min(self.looks, len(self.states) - 1)]
        self.looks += 1
        if state is JobState.DONE:
            self.ended.set()
        return JobRecord(id="x", queues=["q"], function="f", state=state)


def test_the_follower_looks_until_each_job_ends_then_its_thread_ends() -> None:
    follower = _Follower()
    first = FakeJob([JobState.QUEUED, JobState.RUNNING, JobState.DONE])
    second = FakeJob([JobState.DONE])
    follower.add(first)  # type: ignore[arg-type]
    follower.add(second)  # type: ignore[arg-type]
    thread = follower._thread
    assert thread is not None
    assert first.ended.wait(WAIT)
    assert second.ended.wait(WAIT)
    thread.join(WAIT)
    assert not thread.is_alive()
    assert follower._thread is None
    assert first.looks == 3
    assert second.looks == 1


def test_follow_in_cell_outside_a_kernel_leaves_the_job_alone() -> None:
    fake = FakeJob([JobState.DONE])
    job: Any = fake
    followed: Any = follow_in_cell(job)
    assert followed is fake
    assert fake.looks == 0


def test_the_progress_bar_counts_every_end_up_to_the_total() -> None:
    counted: list[int] = []

    class Bar:
        def __init__(self, total: int, desc: str, unit: str) -> None:
            assert (total, desc, unit) == (3, "work", "job")

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            counted.append(-1)  # closed

        def update(self, n: int) -> None:
            counted.append(n)

    futures: list[concurrent.futures.Future[int]] = [concurrent.futures.Future() for _ in range(3)]
    for i, future in enumerate(futures):
        future.set_result(i)
    wait_with_bar(futures, "work", bar=Bar)
    assert counted == [1, 1, 1, -1]
