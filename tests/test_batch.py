"""Batches: a server answering calls that arrive back to back sends its small answers to one
client as one BATCH message, and every client takes it apart in order; a sync client that
submits calls while earlier ones are outstanding sends them as one BATCH, which the server
takes apart in order."""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq

import undertow
from undertow.errors import WireError
from undertow.rpc._calls import Description, FunctionInfo
from undertow.transport import ServerSocket, bind_router
from undertow.wire import Kind, decode_header, pack, pack_batch, split_batch, unbatch
from undertow.wire._header import BATCH_MAX_BYTES, BATCH_MAX_MESSAGES

from ._waiting import wait_until

WAIT = 10.0


def test_a_batch_keeps_its_messages_in_order() -> None:
    messages = [
        pack(Kind.OUTPUT, 3, [b"hello\n"], name="stdout", codec="text")[0],
        pack(Kind.RESULT, 3, [msgspec.msgpack.encode(42)], codec="msgpack")[0],
        pack(Kind.RESULT, 4, [], codec="")[0],
    ]
    items = unbatch(decode_header(pack_batch(messages)))
    assert [(h.kind, h.call_id, h.body) for h in items] == [
        (Kind.OUTPUT, 3, b"hello\n"),
        (Kind.RESULT, 3, msgspec.msgpack.encode(42)),
        (Kind.RESULT, 4, b""),
    ]


def test_malformed_batches_are_refused() -> None:
    nested = pack_batch([pack_batch([pack(Kind.END, 1)[0]])])
    with pytest.raises(WireError, match="inside a batch"):
        unbatch(decode_header(nested))
    not_a_list = pack(Kind.BATCH, 0, [b"\xc1"])[0]
    with pytest.raises(WireError, match="malformed batch"):
        unbatch(decode_header(not_a_list))
    not_headers = pack_batch([b"no magic here"])
    with pytest.raises(WireError):
        unbatch(decode_header(not_headers))


# -- the server side: holding answers during a burst -------------------------------------------


@pytest.fixture
def inproc_server() -> Iterator[tuple[ServerSocket, zmq.Socket[Any]]]:
    """A coalescing server socket, always in a burst, and an in-process peer: sends on inproc
    are queued before send() returns, so what the owner finds waiting is deterministic."""
    sock, _ = bind_router("tcp://127.0.0.1:0")
    endpoint = f"inproc://test-batch-{uuid.uuid4().hex}"  # id() of a closed socket recurs
    sock.bind(endpoint)
    served = ServerSocket(sock, coalesce=pack_batch, burst_gap=60.0, max_batch=3)
    served.own()
    peer: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    peer.connect(endpoint)
    yield served, peer
    peer.close()
    served.close()


def answers(peer: zmq.Socket[Any]) -> list[list[int]]:
    """Call ids of each message the peer has received, a batch giving several."""
    got = []
    while peer.poll(0):
        header = decode_header(peer.recv())
        items = unbatch(header) if header.kind == Kind.BATCH else [header]
        got.append([h.call_id for h in items])
    return got


def handle(served: ServerSocket, call_id: int, answer: list[bytes] | None = None) -> None:
    """Receive the next call, which must be ``call_id``, and answer it."""
    received = served.recv(int(WAIT * 1000))
    assert received is not None
    who, frames = received
    assert decode_header(frames[0].buffer).call_id == call_id
    served.send(who, answer or pack(Kind.RESULT, call_id), hold=True)


def test_answers_to_calls_that_wait_together_go_out_together(inproc_server):
    served, peer = inproc_server
    for i in range(5):
        peer.send(pack(Kind.CALL, i, name="f")[0])
    for i in range(5):
        handle(served, i)
    assert served.recv(0) is None  # what is held goes out before the owner waits
    # Every call was waiting when the owner asked for it: the answers go out together, at
    # most max_batch=3 at a time.
    assert answers(peer) == [[0, 1, 2], [3, 4]]


def _polling(thread: threading.Thread) -> bool:
    """True once ``thread`` sleeps in poll(), as ZeroMQ's blocking receive does (Linux, where
    the kernel shows it); elsewhere, after a short pause."""
    try:
        with open(f"/proc/self/task/{thread.native_id}/wchan") as wchan:
            where = wchan.read()
    except OSError:
        where = "0"
    if where in ("", "0"):  # not shown
        return not threading.Event().wait(0.05)
    return "poll" in where


def test_an_answer_to_a_call_the_owner_waited_for_goes_out_at_once():
    sock, _ = bind_router("tcp://127.0.0.1:0")
    endpoint = f"inproc://test-batch-waited-{uuid.uuid4().hex}"
    sock.bind(endpoint)
    # a receive that had to sleep lasts far longer than this
    served = ServerSocket(sock, coalesce=pack_batch, burst_gap=1e-6)
    peer: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    peer.connect(endpoint)
    try:
        for i in range(3):

            def own_and_handle(call_id: int = i) -> None:
                served.own()
                handle(served, call_id)

            owner = threading.Thread(target=own_and_handle)
            owner.start()
            in_receive = functools.partial(_polling, owner)
            assert wait_until(in_receive, WAIT, interval=0.001)
            peer.send(pack(Kind.CALL, i, name="f")[0])
            owner.join(WAIT)
            # not held for a batch: it went out although the owner has not received again
            assert answers(peer) == [[i]]
    finally:
        served.own()
        peer.close()
        served.close()


def test_output_goes_out_at_once_during_a_burst(inproc_server):
    served, peer = inproc_server
    for i in range(2):
        peer.send(pack(Kind.CALL, i, name="f")[0])
    handle(served, 0)
    received = served.recv(int(WAIT * 1000))  # call 1, found waiting: a burst
    assert received is not None
    who = received[0]
    served.send(who, pack(Kind.OUTPUT, 1, [b"working\n"], name="stdout", codec="text"))
    served.send(who, pack(Kind.RESULT, 1), hold=True)
    got = [decode_header(peer.recv()) for _ in range(2)]
    assert [(h.kind, h.call_id) for h in got] == [(Kind.RESULT, 0), (Kind.OUTPUT, 1)]
    assert peer.poll(0) == 0  # the result of call 1 is held ...
    assert served.recv(0) is None
    assert decode_header(peer.recv()).call_id == 1  # ... until the owner would wait


def test_a_large_answer_goes_out_at_once_after_what_was_held(inproc_server):
    served, peer = inproc_server
    for i in range(3):
        peer.send(pack(Kind.CALL, i, name="f")[0])
    handle(served, 0)  # held
    handle(served, 1)  # held
    handle(served, 2, pack(Kind.RESULT, 2, [b"x" * 100_000], codec="raw"))  # two frames
    assert [h.call_id for h in unbatch(decode_header(peer.recv()))] == [0, 1]
    assert decode_header(peer.recv()).call_id == 2


def test_closing_sends_what_is_held(inproc_server):
    served, peer = inproc_server
    for i in range(2):
        peer.send(pack(Kind.CALL, i, name="f")[0])
    handle(served, 0)  # held
    handle(served, 1)  # held
    served.close()
    assert [h.call_id for h in unbatch(decode_header(peer.recv()))] == [0, 1]


# -- the client side: every receive path takes batches apart -----------------------------------


class BatchingServer:
    """A scripted server on a real socket: it answers ``_describe``, then waits for ``n``
    calls to ``echo`` and answers them all in one BATCH, each with a line of output first."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sock, self.address = bind_router("tcp://127.0.0.1:0")
        #: how many calls each message the server received carried (a batch: several)
        self.received: list[int] = []
        self.sock.setsockopt(zmq.RCVTIMEO, 50)  # to look at `stopping` (only this thread
        self.stopping = threading.Event()  # may touch the socket, close it included)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self._loop()
        finally:
            self.sock.close(linger=0)

    def _loop(self) -> None:
        held: list[bytes] = []
        while not self.stopping.is_set():
            try:
                peer, frame = self.sock.recv_multipart()
            except zmq.Again:
                continue
            first = decode_header(frame)  # futures submitted together come as a batch too
            inner = unbatch(first) if first.kind == Kind.BATCH else [first]
            self.received.append(len(inner))
            for header in inner:
                self._answer(peer, header, held)

    def _answer(self, peer: bytes, header: Any, held: list[bytes]) -> None:
        """Answer ``_describe`` at once; hold echo's answers until ``n`` calls came."""
        if header.name == "_describe":
            info = FunctionInfo("echo", params=[("x", 1, None, None)])
            body = msgspec.msgpack.encode(Description("batching", [info]))
            self.sock.send_multipart(
                [peer, *pack(Kind.RESULT, header.call_id, [body], codec="msgpack")]
            )
            return
        (x,), _ = msgspec.msgpack.decode(header.body)
        line = f"echo {x}\n".encode()
        held.append(pack(Kind.OUTPUT, header.call_id, [line], name="stdout", codec="text")[0])
        held.append(
            pack(Kind.RESULT, header.call_id, [msgspec.msgpack.encode(x)], codec="msgpack")[0]
        )
        if len(held) == 2 * self.n:
            self.sock.send_multipart([peer, pack_batch(held)])
            held.clear()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(WAIT)


@pytest.fixture
def batching() -> Iterator[BatchingServer]:
    server = BatchingServer(n=5)
    yield server
    server.close()


def test_futures_take_a_batch_apart(batching):
    lines: list[tuple[str, str]] = []
    with undertow.connect(batching.address, timeout=WAIT, output=lambda *o: lines.append(o)) as c:
        futures = [c.echo.submit(i) for i in range(5)]
        assert [f.result(WAIT) for f in futures] == list(range(5))
    assert lines == [("stdout", f"echo {i}\n") for i in range(5)]


def test_blocking_calls_take_a_batch_apart():
    server = BatchingServer(n=1)  # a blocking call's output and result in one batch
    try:
        lines: list[tuple[str, str]] = []
        with undertow.connect(server.address, timeout=WAIT, output=lambda *o: lines.append(o)) as c:
            assert [c.echo(i) for i in range(3)] == [0, 1, 2]
        assert lines == [("stdout", f"echo {i}\n") for i in range(3)]
    finally:
        server.close()


def test_the_async_client_takes_a_batch_apart(batching):
    lines: list[tuple[str, str]] = []

    async def main() -> list[int]:
        async with undertow.AsyncClient(
            batching.address, timeout=WAIT, output=lambda *o: lines.append(o)
        ) as client:
            return list(await asyncio.gather(*(client.echo(i) for i in range(5))))

    assert asyncio.run(main()) == list(range(5))
    assert sorted(lines) == [("stdout", f"echo {i}\n") for i in range(5)]


def test_pipelined_calls_to_a_real_server_keep_their_output_and_results(serve):
    server = undertow.Server(name="pipelined")

    @server.register
    def shout(i: int) -> int:
        print(f"call {i}")
        return i * 10

    lines: list[str] = []
    with undertow.connect(serve(server), timeout=WAIT, output=lambda s, t: lines.append(t)) as c:
        futures = [c.shout.submit(i) for i in range(300)]
        assert [f.result(WAIT) for f in futures] == [i * 10 for i in range(300)]
    assert sorted(lines) == sorted(f"call {i}\n" for i in range(300))


# -- the client's batches of calls ---------------------------------------------------------


def test_split_batch_takes_a_client_batch_apart_and_leaves_other_messages_alone() -> None:
    calls = [pack(Kind.CALL, i, [msgspec.msgpack.encode([[i], {}])], name="f")[0] for i in (1, 2)]
    inner = split_batch([_Frame(pack_batch(calls))])
    assert inner is not None
    assert [decode_header(m[0].buffer).call_id for m in inner] == [1, 2]
    assert split_batch([_Frame(calls[0])]) is None  # a lone call
    assert split_batch([_Frame(calls[0]), _Frame(b"buffer")]) is None  # several frames
    assert split_batch([_Frame(b"UA\x01" + bytes(40))]) is None  # a signature envelope
    broken = pack(Kind.BATCH, 0, [b"\xc1 not msgpack"])[0]
    assert split_batch([_Frame(broken)]) == []  # malformed: nothing in it is taken
    # a flood of tiny messages in one batch, or a huge one, is dropped whole
    assert split_batch([_Frame(pack_batch([b"x"] * (BATCH_MAX_MESSAGES + 1)))]) == []
    assert len(split_batch([_Frame(pack_batch([b"x"] * BATCH_MAX_MESSAGES))]) or []) == 1024
    huge = pack_batch([b"x" * 4096] * (BATCH_MAX_BYTES // 4096 + 1))
    assert split_batch([_Frame(huge)]) == []


class _Frame:
    """A received frame as the server sees one (``buffer``)."""

    def __init__(self, data: bytes) -> None:
        self.buffer = memoryview(data)


def test_futures_submitted_while_others_run_go_out_as_one_message(monkeypatch) -> None:
    # the pump would send a batch held longer than this: here only result() sends it
    monkeypatch.setattr(undertow.rpc._sync_pump, "_HOLD_MAX", 60.0)
    server = BatchingServer(n=8)  # answers only once all 8 came: all stay outstanding
    try:
        with undertow.connect(server.address, timeout=WAIT, output=False) as c:
            futures = [c.echo.submit(i) for i in range(8)]
            assert [f.result(WAIT) for f in futures] == list(range(8))
        # _describe alone, the first call alone (nothing outstanding), then the 7 held
        # behind it in one message
        assert server.received == [1, 1, 7]
    finally:
        server.close()


def test_held_calls_go_out_when_nobody_waits() -> None:
    server = BatchingServer(n=6)
    try:
        with undertow.connect(server.address, timeout=WAIT, output=False) as c:
            done = threading.Semaphore(0)
            for i in range(6):  # never result(): only the pump can send what is held
                c.echo.submit(i).add_done_callback(lambda f: done.release())
            for _ in range(6):
                assert done.acquire(timeout=WAIT)
    finally:
        server.close()


def test_a_batch_with_broken_messages_serves_the_good_ones(serve) -> None:
    server = undertow.Server(name="partly")

    @server.register
    def echo(x: int) -> int:
        return x

    address = serve(server)
    dealer: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    dealer.connect(address)
    try:
        good = [
            pack(Kind.CALL, i, [msgspec.msgpack.encode([[i], {}])], name="echo", codec="msgpack")[0]
            for i in (1, 2)
        ]
        nested = pack_batch([good[0]])
        dealer.send(pack_batch([good[0], b"UT\xff garbage", nested, b"", good[1]]))
        got: dict[int, Any] = {}
        while len(got) < 2:
            header = decode_header(dealer.recv())
            for one in unbatch(header) if header.kind == Kind.BATCH else [header]:
                assert one.kind == Kind.RESULT
                got[one.call_id] = msgspec.msgpack.decode(one.body)
        assert got == {1: 1, 2: 2}
        with undertow.connect(address, timeout=WAIT) as c:  # and it still serves
            assert c.echo(3) == 3
    finally:
        dealer.close()


def test_signed_futures_in_a_batch_are_each_checked(serve) -> None:
    token = undertow.security.new_token("batcher")
    server = undertow.Server(name="signed-batch", token=token)

    @server.register
    def echo(x: int) -> int:
        return x

    address = serve(server)
    with undertow.connect(address, token=token, timeout=WAIT) as c:
        futures = [c.echo.submit(i) for i in range(200)]
        assert [f.result(WAIT) for f in futures] == list(range(200))


def test_a_blocking_call_sends_the_held_calls_first(serve, monkeypatch) -> None:
    monkeypatch.setattr(undertow.rpc._sync_pump, "_HOLD_MAX", 60.0)  # the pump sends nothing
    server = undertow.Server(name="ordered")
    noted = threading.Event()

    @server.register
    def note() -> None:
        noted.set()

    @server.register
    def saw_note() -> bool:
        return noted.wait(WAIT)

    @server.register
    async def slow() -> None:
        await asyncio.sleep(0.5)  # the function's work: outstanding while the test calls

    with undertow.connect(serve(server), timeout=WAIT, output=False) as c:
        first = c.slow.submit()  # outstanding: what follows is held
        later = c.note.submit()
        assert c.saw_note()  # the held call went out before this one
        assert later.result(WAIT) is None
        assert first.result(WAIT) is None


def test_a_client_batch_is_answered_as_one_before_the_next_message() -> None:
    sock, _ = bind_router("tcp://127.0.0.1:0")
    endpoint = f"inproc://test-batch-{uuid.uuid4().hex}"
    sock.bind(endpoint)
    served = ServerSocket(sock, coalesce=pack_batch, burst_gap=60.0, split=split_batch)
    served.own()
    peer: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    peer.connect(endpoint)
    try:
        peer.send(pack_batch([pack(Kind.CALL, i, name="f")[0] for i in (0, 1, 2)]))
        peer.send(pack_batch([pack(Kind.CALL, i, name="f")[0] for i in (3, 4)]))
        for i in range(5):  # the second batch is waiting all along
            handle(served, i)
        assert served.recv(0) is None
        # each batch's answers went out as it ended, not held across the next one
        assert answers(peer) == [[0, 1, 2], [3, 4]]
    finally:
        peer.close()
        served.close()


def test_a_batch_of_calls_holds_at_most_sixteen(monkeypatch) -> None:
    monkeypatch.setattr(undertow.rpc._sync_pump, "_HOLD_MAX", 60.0)
    server = BatchingServer(n=40)
    try:
        with undertow.connect(server.address, timeout=WAIT, output=False) as c:
            futures = [c.echo.submit(i) for i in range(40)]
            assert [f.result(WAIT) for f in futures] == list(range(40))
        # the server starts on a batch while the caller still submits the next
        assert server.received == [1, 1, 16, 16, 7]
    finally:
        server.close()


def test_a_thread_waiting_on_a_future_spins_before_it_sleeps(monkeypatch) -> None:
    from undertow.transport import _spin

    monkeypatch.setattr(_spin._spin, "budget", 0.02)  # 20 ms: far shorter than the nap
    server = undertow.Server(name="spinning")

    @server.register
    def echo(x: int) -> int:
        return x

    @server.register
    def nap(seconds: float) -> float:
        threading.Event().wait(seconds)  # a slow function, not a wait for readiness
        return seconds

    # no plain socket: its receiving thread, in this process, would spin after messages too,
    # and one thread of a process spins at a time
    address = server.start("tcp://127.0.0.1:0", plain=None)
    try:
        _spinning_future_waits(address)
    finally:
        server.stop()


def _spinning_future_waits(address: str) -> None:
    with undertow.connect(address, timeout=WAIT, output=False) as c:
        sock = c._conn.link._sock
        assert c.echo.submit(1).result(WAIT) == 1
        assert sock._spinner.misses == 0  # a quick answer: found while spinning
        assert c.nap.submit(0.2).result(WAIT) == 0.2
        assert sock._spinner.misses >= 1  # spun 20 ms, found nothing, slept
        for i in range(200):  # quick answers again: one wait in eight spins, then all do
            assert c.echo.submit(i).result(WAIT) == i
            if sock._spinner.misses == 0:
                break
        assert sock._spinner.misses == 0
