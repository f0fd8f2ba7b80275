"""The jobs of the queue's chaos tests (tests/test_queue_chaos.py), as worker processes import
them (``undertow worker --module tests._chaos_jobs``), and a submitter to kill.

Every job notes what it does in an effect log, one line per event appended with ``O_APPEND``
(one ``write`` each, so lines of several processes never mix)::

    TAG PID EVENT UNIX_TIME

A job cannot know its id or attempt number, so the submitter gives each job a ``TAG`` of its
own and the tests count attempts from the lines: each ``start`` is one attempt that ran.

Run as a program, it is a submitter that never stops::

    python -m tests._chaos_jobs URL ACKS EFFECTS FIRST_TAG

It submits ``chaos_noop`` jobs to URL, one at a time and in batches (``map``), and after each
submit returns appends the ids it got to the file ACKS: an id there was acknowledged.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time

__all__ = ["chaos_noop", "chaos_poison", "chaos_work"]

#: jobs per ``map`` of the submitter (one transaction, long enough for kills to land in);
#: every third submit is a batch
_BATCH = 200


def _note(log: str, line: str) -> None:
    """Append ``line`` to the file ``log`` in one write."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def _event(log: str, tag: int, event: str) -> None:
    _note(log, f"{tag} {os.getpid()} {event} {time.time():.6f}")


def chaos_work(log: str, tag: int, seconds: float) -> list[int]:
    """Work ``seconds`` (sleeping), noting the start and the end; the tag and this pid, so
    that the accepted result says which attempt it came from."""
    _event(log, tag, "start")
    time.sleep(seconds)  # the job's work: being killed while it runs is the point
    _event(log, tag, "done")
    return [tag, os.getpid()]


def chaos_noop(log: str, tag: int) -> int:
    """Note one start and return the tag."""
    _event(log, tag, "start")
    return tag


def chaos_poison(log: str, tag: int) -> None:
    """Note the start, then kill this worker process, every time."""
    _event(log, tag, "start")
    os.kill(os.getpid(), signal.SIGKILL)


def _submit_forever(url: str, acks: str, effects: str, first_tag: int) -> None:
    from undertow.queue import JobQueue

    tags = itertools.count(first_tag)
    with JobQueue(url, token=False) as queue:
        for turn in itertools.count():
            if turn % 3 == 2:
                batch = [next(tags) for _ in range(_BATCH)]
                jobs = queue.map("chaos_noop", [effects] * _BATCH, batch, max_attempts=20)
            else:
                jobs = [queue.submit("chaos_noop", effects, next(tags), max_attempts=20)]
            _note(acks, "\n".join(job.id for job in jobs))


if __name__ == "__main__":
    url, acks, effects, first = sys.argv[1:]
    _submit_forever(url, acks, effects, int(first))
