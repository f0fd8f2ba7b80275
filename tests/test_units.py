"""Unit tests of small pure pieces: output line buffering and stream credit."""

from __future__ import annotations

import threading

from undertow.rpc._flow import StreamCredit
from undertow.rpc._output import OutputSink
from undertow.wire import STREAM_WINDOW


def test_output_is_sent_line_by_line_and_the_rest_at_the_end():
    sent: list[tuple[str, str]] = []
    sink = OutputSink(lambda stream, text: sent.append((stream, text)))
    sink.write("stdout", "hello ")
    assert sent == []  # a partial line waits
    sink.write("stdout", "world\n")
    sink.write("stderr", "50%\r")  # progress bars redraw with \r: sent at once
    sink.write("stdout", "tail")
    assert sent == [("stdout", "hello world\n"), ("stderr", "50%\r")]
    sink.flush()
    assert sent[-1] == ("stdout", "tail")


def test_a_long_partial_line_is_not_held_forever():
    sent: list[str] = []
    sink = OutputSink(lambda stream, text: sent.append(text))
    sink.write("stdout", "x" * 10_000)
    assert sent == ["x" * 10_000]


def test_stream_credit_allows_a_window_then_waits_for_the_consumer():
    credit = StreamCredit()
    for _ in range(STREAM_WINDOW):
        assert credit.take(timeout=0)
    assert not credit.take(timeout=0)  # the window is used up
    credit.grant(consumed=10)
    for _ in range(10):
        assert credit.take(timeout=0)
    assert not credit.take(timeout=0)


def test_stream_credit_wakes_a_waiting_producer_and_stops_on_close():
    credit = StreamCredit()
    for _ in range(STREAM_WINDOW):
        credit.take(timeout=0)
    results: list[bool] = []
    producer = threading.Thread(target=lambda: results.append(credit.take(timeout=10)))
    producer.start()
    credit.grant(consumed=1)
    producer.join(10)
    assert results == [True]
    credit.close()
    assert not credit.take(timeout=10)  # returns at once once closed
