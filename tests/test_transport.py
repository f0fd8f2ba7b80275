"""The server socket: one owner receives, other threads send through the in-process relay."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from undertow.transport import ServerSocket, bind_router

WAIT_MS = 10_000


@pytest.fixture
def server() -> Iterator[tuple[ServerSocket, str]]:
    sock, address = bind_router("tcp://127.0.0.1:0")
    served = ServerSocket(sock)
    served.own()
    yield served, address
    served.close()


def dealer(address: str, routing_id: bytes) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.setsockopt(zmq.RCVTIMEO, WAIT_MS)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def recv_from_peer(served: ServerSocket) -> list[bytes]:
    """The next message, which must come from a peer (not be relayed and forwarded)."""
    received = served.recv(WAIT_MS)
    assert received is not None, "the message was taken for a relayed one, or none came"
    peer, frames = received
    return [peer, *(f.bytes for f in frames)]


def test_a_send_from_another_thread_is_relayed_by_the_owner(server):
    served, address = server
    victim = dealer(address, b"client-1")
    victim.send(b"hello")
    assert recv_from_peer(served) == [b"client-1", b"hello"]

    sender = threading.Thread(target=served.send, args=(b"client-1", [b"reply", b"more"]))
    sender.start()
    sender.join(WAIT_MS / 1000)
    assert served.recv(WAIT_MS) is None  # the relayed message was forwarded, not returned
    assert victim.recv_multipart() == [b"reply", b"more"]
    victim.close(linger=0)


def test_a_peer_cannot_pose_as_the_relay(server):
    served, address = server
    victim = dealer(address, b"victim")
    victim.send(b"present")
    assert recv_from_peer(served) == [b"victim", b"present"]
    # A remote peer with a 16-byte id sends what a relayed message looks like. It is handed
    # to the server as an ordinary message from that peer, never forwarded to the victim.
    forger_id = b"\x01" + os.urandom(15)
    forger = dealer(address, forger_id)
    forger.send_multipart([b"victim", b"forged"])
    assert recv_from_peer(served) == [forger_id, b"victim", b"forged"]
    assert victim.poll(0) == 0
    forger.close(linger=0)
    victim.close(linger=0)


def test_wake_ends_a_wait_in_recv(server):
    served, _ = server
    waker = threading.Thread(target=served.wake)
    waker.start()
    assert served.recv(WAIT_MS) is None
    waker.join(WAIT_MS / 1000)


def test_a_new_owner_sends_directly_and_the_old_one_through_the_relay(server):
    served, address = server
    peer = dealer(address, b"peer")
    peer.send(b"hi")
    assert recv_from_peer(served) == [b"peer", b"hi"]

    took_over = threading.Event()
    release = threading.Event()

    def new_owner() -> None:
        served.own()
        took_over.set()
        assert release.wait(WAIT_MS / 1000)
        # the message the old owner sent after losing the socket arrives relayed
        assert served.recv(WAIT_MS) is None
        served.send(b"peer", [b"from the new owner"])

    thread = threading.Thread(target=new_owner)
    thread.start()
    assert took_over.wait(WAIT_MS / 1000)
    served.send(b"peer", [b"from the old owner"])  # no longer the owner: relayed
    release.set()
    thread.join(WAIT_MS / 1000)
    assert peer.recv() == b"from the old owner"
    assert peer.recv() == b"from the new owner"
    served.own()  # back to this thread, which closes it in the fixture
    peer.close(linger=0)


def test_a_large_received_frame_passed_on_whole_is_shared_not_tracked(server):
    # A stage passes a large value on as a memoryview of the frame that brought it: the
    # frame itself goes out (ZeroMQ shares the buffer by reference count), so pyzmq's
    # garbage-collecting thread is not woken for it. A slice is sent as what it is.
    from undertow.transport._zmq import _outgoing

    served, address = server
    peer = dealer(address, b"peer")
    big = os.urandom(1 << 20)
    peer.send_multipart([b"small", big])
    _, frames = served.recv(WAIT_MS) or (b"", [])
    _, large = frames
    view = memoryview(large)
    assert _outgoing(view) == (large, False)
    assert _outgoing(view[1:])[0] is not large
    assert _outgoing(b"x" * 10) == (b"x" * 10, True)
    assert _outgoing(big) == (big, False)
    served.send(b"peer", [b"echo", view])
    assert peer.recv_multipart() == [b"echo", big]
    peer.close(linger=0)
