"""Remote stdout/stderr reaches the caller live, per call, and can be switched off."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

import undertow

from ._threads import run_in_threads

WAIT = 10.0


class Collector:
    """An output callback that records (stream, text) and signals each new chunk."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.seen = threading.Condition(self.lock)

    def __call__(self, stream: str, text: str) -> None:
        with self.seen:
            self.chunks.append((stream, text))
            self.seen.notify_all()

    def wait_for(self, text: str) -> bool:
        with self.seen:
            return self.seen.wait_for(lambda: any(text in t for _, t in self.chunks), WAIT)

    def text(self, stream: str | None = None) -> str:
        return "".join(t for s, t in self.chunks if stream is None or s == stream)


def test_a_line_arrives_before_the_call_returns(serve):
    server = undertow.Server(name="out")
    release = threading.Event()

    @server.register
    def chatty() -> str:
        print("step 1")
        assert release.wait(WAIT), "the caller never saw step 1 while the call ran"
        print("step 2")
        return "done"

    address = serve(server)
    seen = Collector()
    with undertow.connect(address, timeout=WAIT, output=seen) as client:
        future = client.chatty.submit()
        assert seen.wait_for("step 1\n")
        assert not future.done()
        release.set()
        assert future.result(WAIT) == "done"
    assert seen.text("stdout") == "step 1\nstep 2\n"


def test_every_kind_of_output_in_order(serve):
    server = undertow.Server(name="out")
    handler = logging.StreamHandler(sys.stderr)
    logger = logging.getLogger("undertow.tests.remote")
    logger.addHandler(handler)
    logger.propagate = False

    @server.register
    def noisy() -> None:
        print("one")
        sys.stdout.write("two\n")
        print("three", file=sys.stderr)
        logger.error("four")
        sys.stderr.write("partial")

    address = serve(server)
    seen = Collector()
    try:
        with undertow.connect(address, timeout=WAIT, output=seen) as client:
            client.noisy()
    finally:
        logger.removeHandler(handler)
    assert seen.text("stdout") == "one\ntwo\n"
    assert seen.text("stderr") == "three\nfour\npartial"
    assert [t for _, t in seen.chunks][-1] == "partial"


def test_default_output_goes_to_the_local_streams(serve, capsys):
    server = undertow.Server(name="out")

    @server.register
    def hello() -> None:
        print("hello from afar")
        print("oops", file=sys.stderr)

    address = serve(server)
    with undertow.connect(address, timeout=WAIT) as client:
        client.hello()
    captured = capsys.readouterr()
    assert "hello from afar\n" in captured.out
    assert "oops\n" in captured.err


def test_concurrent_calls_never_see_each_others_output(serve):
    server = undertow.Server(name="out", max_workers=4)
    barrier = threading.Barrier(2, timeout=WAIT)

    @server.register
    def shout(tag: str) -> None:
        barrier.wait()
        for i in range(200):
            print(f"{tag}{i}")

    address = serve(server)
    seen = {"a": Collector(), "b": Collector()}

    def run(tag: str) -> None:
        with undertow.connect(address, timeout=WAIT, output=seen[tag]) as client:
            client.shout(tag)

    run_in_threads(run, seen, timeout=WAIT * 2)
    for tag, collector in seen.items():
        assert collector.text() == "".join(f"{tag}{i}\n" for i in range(200))


def test_output_can_be_switched_off_per_call_and_per_glob(serve):
    server = undertow.Server(name="out")

    @server.register
    def talk() -> int:
        print("talking")
        return 1

    @server.register
    def quiet_talk() -> int:
        print("should not travel")
        return 2

    server.config({"quiet_*": {"output": False}})
    address = serve(server)
    seen = Collector()
    with undertow.connect(address, timeout=WAIT, output=seen) as client:
        assert client.talk.options(output=False)() == 1
        assert client.quiet_talk() == 2
        assert seen.chunks == []
        assert client.talk() == 1
    assert seen.text() == "talking\n"
    assert server.describe()["quiet_talk"]["output"] is False


def test_output_from_async_functions(serve):
    server = undertow.Server(name="out")

    @server.register
    async def atalk(n: int) -> int:
        for i in range(n):
            print(f"async {i}")
        return n

    address = serve(server)
    seen = Collector()
    with undertow.connect(address, timeout=WAIT, output=seen) as client:
        assert client.atalk(3) == 3
    assert seen.text() == "async 0\nasync 1\nasync 2\n"


def test_output_outside_calls_stays_local(serve, capsys):
    server = undertow.Server(name="out")
    server.register("noop", lambda: None)
    address = serve(server)
    with undertow.connect(address, timeout=WAIT, output=False) as client:
        client.noop()
    print("local line")
    assert "local line" in capsys.readouterr().out


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_client_with_output_false_asks_server_not_to_send(serve, stream):
    server = undertow.Server(name="out")

    @server.register
    def say() -> str:
        print("x", file=getattr(sys, stream))
        return "ok"

    address = serve(server)
    with undertow.connect(address, timeout=WAIT, output=False) as client:
        assert client.say() == "ok"
