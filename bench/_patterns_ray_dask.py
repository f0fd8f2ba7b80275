"""Ray and Dask distributed in the messaging-pattern benchmark (``pip install 'ray==2.*'``;
``dask[distributed]`` is in the bench extra already).

Ray, local (``ray.init(num_cpus=2, include_dashboard=False)``, started and shut down by each
measurement, outside the timed interval):

* A: ``ray.util.ActorPool`` of 2 ``Echo`` actors, the messages spread as ``map_unordered`` does
  it (every message submitted to the pool, results taken as they finish), written out with
  ``submit`` and ``get_next_unordered(timeout=...)`` so a stall fails the run instead of
  hanging it. The pool keeps one call per actor in flight: that is how ActorPool works.
* B: three ``Echo`` actors chained by ObjectRefs (``s3.echo.remote(s2.echo.remote(
  s1.echo.remote(message)))``: each stage's result goes to the next without the driver), the
  driver keeping ``window_for(size)`` chains in flight and taking the finished ones with
  ``ray.wait``/``ray.get``.

Dask: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` on 127.0.0.1 (no
dashboard), started before the clock and closed after it.

* A: ``client.map(echo, messages, pure=False)``, the results taken with ``as_completed``.
* B: three chained ``client.map`` calls, each over the futures of the one before, the last
  stage's results taken with ``as_completed``. Dask has no processes per stage: the three
  stages are tasks that its scheduler places on its 2 workers (most often where their input
  is).

``client.map`` submits every message at once (no window). At 1 MB the messages travel in the
task graph (Dask's "large graph" warning is silenced: it is what this pattern is).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

from bench._patterns_peers import Answers, Messages, deadline_left, rate, warmup_count, window_for

STAGES = 3


def optional(module: str) -> Any:
    """A module of an optional peer, imported by name (CI's type check runs without them)."""
    return importlib.import_module(module)


class Echo:
    """The actor of both Ray topologies."""

    def echo(self, payload: bytes) -> bytes:
        return payload


def echo(payload: bytes) -> bytes:
    """The task of both Dask topologies."""
    return payload


# --- Ray ------------------------------------------------------------------------------------


@contextlib.contextmanager
def ray_session() -> Iterator[Any]:
    """A local Ray of 2 CPUs, shut down at the end whatever happens; the ``Echo`` actor class."""
    ray = optional("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield ray.remote(Echo)
    finally:
        ray.shutdown()


def _pool_pass(pool: Any, messages: Messages, deadline: float) -> float:
    """``map_unordered``'s steps with a timeout: every message submitted, results taken as they
    finish. Seconds from the first submit to the last result."""
    answers = Answers(messages)
    started = time.perf_counter()
    for item in messages.items:
        pool.submit(lambda actor, value: actor.echo.remote(value), item)
    while pool.has_next():
        answers.add(pool.get_next_unordered(timeout=deadline_left(deadline)))
    seconds = time.perf_counter() - started
    answers.finish()
    return seconds


def measure_ray_a(n: int, size: int, timeout: float) -> float:
    """Topology A on Ray: an ActorPool of 2 actors; messages per second."""
    ActorPool = optional("ray.util").ActorPool
    with ray_session() as actor_class:
        deadline = time.monotonic() + timeout  # ray.init is not counted against the timeout
        pool = ActorPool([actor_class.remote() for _ in range(2)])
        _pool_pass(pool, Messages(warmup_count(size), size), deadline)
        messages = Messages(n, size)
        return rate(n, _pool_pass(pool, messages, deadline))


def _chain_pass(stages: list[Any], messages: Messages, deadline: float) -> float:
    """Every message through the chained actors, ``window_for(size)`` in flight; seconds from
    the first call to the last result."""
    ray = optional("ray")
    answers = Answers(messages)
    window, items, n = window_for(messages.size), messages.items, messages.n
    in_flight: list[Any] = []
    sent = 0
    started = time.perf_counter()
    while answers.count < n:
        while sent < n and len(in_flight) < window:
            ref: Any = items[sent]
            for stage in stages:
                ref = stage.echo.remote(ref)
            in_flight.append(ref)
            sent += 1
        ready, in_flight = ray.wait(in_flight, num_returns=1, timeout=deadline_left(deadline))
        if ready:
            more, in_flight = ray.wait(in_flight, num_returns=len(in_flight), timeout=0)
            for answer in ray.get(ready + more, timeout=deadline_left(deadline)):
                answers.add(answer)
    seconds = time.perf_counter() - started
    answers.finish()
    return seconds


def measure_ray_b(n: int, size: int, timeout: float) -> float:
    """Topology B on Ray: three actors chained by ObjectRefs; messages per second."""
    with ray_session() as actor_class:
        deadline = time.monotonic() + timeout
        stages = [actor_class.remote() for _ in range(STAGES)]
        _chain_pass(stages, Messages(warmup_count(size), size), deadline)
        messages = Messages(n, size)
        return rate(n, _chain_pass(stages, messages, deadline))


# --- Dask -----------------------------------------------------------------------------------


@contextlib.contextmanager
def dask_client() -> Iterator[Any]:
    """A 2-process LocalCluster on 127.0.0.1 and a client of it, both closed at the end."""
    distributed = optional("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None, silence_logs=logging.CRITICAL,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        yield client


def _map_pass(client: Any, messages: Messages, stages: int, deadline: float) -> float:
    """``stages`` chained ``client.map`` calls over the messages, the last one's results taken
    with ``as_completed``; seconds from the first submit to the last result."""
    as_completed = optional("distributed").as_completed
    answers = Answers(messages)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
        futures = client.map(echo, messages.items, pure=False)
        for _ in range(stages - 1):
            futures = client.map(echo, futures, pure=False)
    done = as_completed(futures, with_results=True, timeout=deadline_left(deadline))
    for _future, answer in done:
        answers.add(answer)
    seconds = time.perf_counter() - started
    answers.finish()
    return seconds


def _measure_dask(n: int, size: int, timeout: float, stages: int) -> float:
    with dask_client() as client:
        deadline = time.monotonic() + timeout  # the cluster's start is not counted
        _map_pass(client, Messages(warmup_count(size), size), stages, deadline)
        messages = Messages(n, size)
        return rate(n, _map_pass(client, messages, stages, deadline))


def measure_dask_a(n: int, size: int, timeout: float) -> float:
    """Topology A on Dask: ``client.map`` over 2 worker processes; messages per second."""
    return _measure_dask(n, size, timeout, 1)


def measure_dask_b(n: int, size: int, timeout: float) -> float:
    """Topology B on Dask: three chained ``client.map`` calls; messages per second."""
    return _measure_dask(n, size, timeout, STAGES)
