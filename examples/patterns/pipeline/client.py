"""The pipeline's client: streams messages through step1.foo, step2.bar and last.baz.

Run:  python client.py [N]        (with ``python -m undertow.service stages.py`` running)

The client sends its messages as fast as the pipeline takes them (at most ``window`` out at
once) and gets each answer as soon as the last stage is done with it, from the last stage
itself: no request waits for the one before it, so answers may come back in another order
than their messages went in. ``Result.id`` tells which message an answer belongs to.
"""

import itertools
import sys
from collections.abc import Iterator

import undertow

PIPELINE = undertow.Pipeline("step1.foo", "step2.bar", "last.baz")


def messages(n: int) -> Iterator[str]:
    """The messages to send: a generator, read only as the pipeline has room for more."""
    for i in range(n):
        yield f"message {i}"


def main(n: int) -> None:
    arrivals: list[int] = []
    # window: at most 64 messages out at once; batch: sent 4 at a time. A stage runs the
    # messages of one batch in order, and several batches side by side, so with small
    # batches a quick message overtakes slower ones sent before it.
    for result in undertow.stream(messages(n), PIPELINE, window=64, batch=4):
        if len(arrivals) < 3:
            print("Client got:", result.value)
        assert result.value == f"baz(bar(foo(message {result.id})))"
        arrivals.append(result.id)

    print(f"answers: {len(arrivals)}, messages answered: {len(set(arrivals))} of {n}")
    overtaking = sum(1 for a, b in itertools.pairwise(arrivals) if b < a)
    print(f"out of order: {overtaking} answers came right after that of a later message")

    # ordered=True: the same pipeline, answers handed out in the messages' order.
    ordered = [r.value for r in undertow.stream(messages(3), PIPELINE, ordered=True)]
    print("In order:", ordered)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
