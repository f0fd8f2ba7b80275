"""Three services, ``step1``, ``step2`` and ``last``, whose functions a pipeline chains.

Run:  python -m undertow.service stages.py        (or: undertow serve stages.py)

One process serves the three, each on a port of its own and registered under its name; it
prints one ``... serving on tcp://...`` line per service and stops on Ctrl-C or SIGTERM.
They could as well run in three files, processes or machines: a pipeline only names them.

Nothing here knows about pipelines. Each function takes a value and returns one, like any
service function; a pipeline ``Pipeline("step1.foo", "step2.bar", "last.baz")`` sends what
``foo`` returns straight to ``bar``, what ``bar`` returns to ``baz``, and what ``baz``
returns back to the client that streamed the messages in.
"""

import random
import time

from undertow.service import Expose


def _work() -> None:
    """Stand in for work that takes a varying time (up to 5 ms)."""
    time.sleep(random.random() * 0.005)


@Expose()
class step1:  # a service is named after its class: "step1"
    @Expose()
    def foo(self, message: str) -> str:
        _work()
        return f"foo({message})"


@Expose()
class step2:
    @Expose()
    def bar(self, message: str) -> str:
        _work()
        return f"bar({message})"


@Expose()
class last:
    @Expose()
    def baz(self, message: str) -> str:
        _work()
        return f"baz({message})"
