"""The tags of a signed plain connection (``security/_stream.py``), as pure logic: the same
message cut into buffers anywhere gets the same tag; any change, reorder or replay fails."""

from __future__ import annotations

import itertools
import os

import pytest

from undertow.errors import AuthenticationError
from undertow.security import StreamSession
from undertow.security._stream import BLOCK


def _pair() -> tuple[StreamSession, StreamSession]:
    up, down = os.urandom(32), os.urandom(32)
    return StreamSession(up, down), StreamSession(down, up, "ada")


@pytest.mark.parametrize("size", [10, BLOCK - 1, BLOCK, 3 * BLOCK + 12345])
def test_a_message_cut_anywhere_gets_the_same_tag(size):
    message = os.urandom(size)
    cuts = sorted({0, size // 3, size // 3 + 7, (2 * size) // 3, size})
    pieces = [message[a:b] for a, b in itertools.pairwise(cuts)]
    client, server = _pair()
    server.check([message], client.tag(pieces))  # sent in pieces, checked whole
    server.check(pieces, client.tag([memoryview(message)]))  # and the other way


def test_a_changed_byte_in_a_large_message_fails_its_tag():
    message = bytearray(os.urandom(2 * BLOCK + 5))
    client, server = _pair()
    tag = client.tag([message])
    message[BLOCK + 17] ^= 1  # inside a block that goes in by its digest
    with pytest.raises(AuthenticationError, match="bad signature"):
        server.check([message], tag)


def test_a_repeated_or_reordered_message_fails():
    client, server = _pair()
    client.tag([b"one"])
    second = client.tag([b"two"])
    with pytest.raises(AuthenticationError):
        server.check([b"two"], second)  # out of order: its tag covers "one" before it
    client, server = _pair()
    first = client.tag([b"one"])
    server.check([b"one"], first)
    with pytest.raises(AuthenticationError):
        server.check([b"one"], first)  # the same again: its tag would cover "one" twice


def test_the_running_hashes_fed_directly_agree_with_tag_and_check():
    """The transport feeds a small message to ``sending``/``receiving`` itself."""
    up, down = os.urandom(32), os.urandom(32)
    general, direct = StreamSession(up, down), StreamSession(up, down)
    server = StreamSession(down, up, "ada")
    for data in (b"one", os.urandom(5000), b"three"):
        direct.sending.update(data)
        tag = direct.sending.digest()
        assert tag == general.tag([memoryview(data)])
        server.check([data], tag)
    forged = general.tag([b"four"])
    with pytest.raises(AuthenticationError, match="bad signature"):
        server.check([b"fouR"], forged)
