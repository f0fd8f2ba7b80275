"""pylm 0.14 in the messaging-pattern benchmark (``pip install pylm==0.14.4 'protobuf<3.21'``).

A, master + 2 workers: ``pylm.servers.Master`` (PULL from clients, PUSH to workers, PULL from
workers, PUB to clients, all through its internal router) and two ``pylm.servers.Worker``
processes with an ``echo`` function; the client is ``pylm.clients.Client.job('master.echo',
generator)``, whose answers come back on the master's PUB socket under the client's id.
B, 3-stage pipeline: ``pylm.servers.Server`` ``stage1`` (PULL from the client, ``pipelined``: it
publishes under its own name), ``pylm.servers.Pipeline`` ``stage2`` (SUB to stage1, publishes
under its name) and ``stage3`` (SUB to stage2, ``to_client``: publishes under the client's id);
the client calls ``job(['stage1.echo', 'stage2.echo', 'stage3.echo'], generator)``. Every stage
uses pylm's own ``Server.echo``.

The client runs in a process of its own (``python -m bench._patterns_pylm client ...``): pylm
blocks on its sockets with no timeout, so a lost message would hang the benchmark; there a
receive timeout is set on pylm's ZeroMQ context (a lost answer fails the run), and the benchmark
kills the process when it overruns. It prints ``RESULT <msgs/s>``.

Flow control: ``job`` sends whatever its generator yields from a thread of its own, with no
bound; the generator here holds a window of ``window_for(size)`` messages in flight (a
semaphore the reading side releases for each answer), as the raw floor does. Without it, the
PUB sockets (high-water mark 1000) would drop messages under load. Warm-up and timed messages
go through one ``job`` (each ``job`` opens two sockets that pylm never closes): the timed ones
start once every warm-up answer is in.

Ports: pylm binds the addresses it is given, and hands them to workers and clients as they are,
so ``tcp://127.0.0.1:*`` cannot be passed through. Server and Pipeline bind in their
constructors (the port is read back from the socket); the Master binds in ``start()``, so its
four sockets are bound here first (port 0) and given an ``inproc://`` alias for pylm's own
``bind``. The caches (pylm's key-value side service) are on ``inproc://``: the workers and
clients are given the addresses instead of fetching them from the cache.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import zmq

from bench._patterns_peers import (
    Answers,
    Messages,
    Procs,
    deadline_left,
    rate,
    warmup_count,
    window_for,
)
from bench._patterns_raw import LOCAL, bind_any, child_args

ME = "bench._patterns_pylm"
QUIET = logging.ERROR
CACHE = "inproc://pylm-cache"
STAGES = ("stage1", "stage2", "stage3")


def pylm(module: str) -> Any:
    """A module of pylm, an optional peer (imported by name: it ships no type hints)."""
    return importlib.import_module(module)


# --- the measurements (in the benchmark process) --------------------------------------------


def _client(procs: Procs, topology: str, n: int, size: int, addresses: list[str],
            deadline: float) -> float:  # fmt: skip
    args = child_args(ME, "client", topology, str(n), str(size), *addresses)
    args.append(f"{deadline_left(deadline):.3f}")
    [value] = procs.start(f"pylm-client-{topology}", args, rb"RESULT (\S+)\n", deadline)
    return float(value)


def measure_pylm_a(n: int, size: int, timeout: float) -> float:
    """Topology A on pylm: Master + 2 Workers, ``Client.job``; messages per second."""
    deadline = time.monotonic() + timeout
    procs = Procs()
    try:
        pull, pub, worker_pull, worker_push = procs.start(
            "pylm-master", child_args(ME, "master"), rb"READY (\S+) (\S+) (\S+) (\S+)\n", deadline
        )
        for k in range(2):
            args = child_args(ME, "worker", f"worker{k}", worker_push, worker_pull)
            procs.start(f"pylm-worker{k}", args, rb"READY\n", deadline)
        return _client(procs, "A", n, size, [pull, pub], deadline)
    finally:
        procs.stop_all()


def measure_pylm_b(n: int, size: int, timeout: float) -> float:
    """Topology B on pylm: Server -> Pipeline -> Pipeline, ``Client.job``; messages per second."""
    deadline = time.monotonic() + timeout
    procs = Procs()
    try:
        pull, pub = procs.start(
            "pylm-stage1", child_args(ME, "stage1"), rb"READY (\S+) (\S+)\n", deadline
        )
        for previous, name in itertools.pairwise(STAGES):
            last = "yes" if name == STAGES[-1] else "no"
            args = child_args(ME, "stage", name, previous, pub, last)
            [pub] = procs.start(f"pylm-{name}", args, rb"READY (\S+)\n", deadline)
        return _client(procs, "B", n, size, [pull, pub], deadline)
    finally:
        procs.stop_all()


# --- the servers (children) -----------------------------------------------------------------


def run_master() -> None:
    Master = pylm("pylm.servers").Master

    parts = ("Pull", "Pub", "WorkerPull", "WorkerPush")
    aliases = {part: f"inproc://master-{part}" for part in parts}
    master = Master(
        name="master", pull_address=aliases["Pull"], pub_address=aliases["Pub"],
        worker_pull_address=aliases["WorkerPull"], worker_push_address=aliases["WorkerPush"],
        db_address=CACHE, log_level=QUIET,
    )  # fmt: skip
    components = {**master.inbound_components, **master.outbound_components}
    bound = {part: bind_any(components[part].listen_to) for part in parts}
    master.preset_cache(
        pull_address=bound["Pull"], pub_address=bound["Pub"],
        worker_pull_address=bound["WorkerPull"], worker_push_address=bound["WorkerPush"],
    )  # fmt: skip
    print("READY", *bound.values(), flush=True)
    master.start()


def run_worker(name: str, master_push: str, master_pull: str) -> None:
    Worker = pylm("pylm.servers").Worker

    worker = Worker(
        name, db_address=CACHE, push_address=master_push, pull_address=master_pull,
        log_level=QUIET,
    )  # fmt: skip
    worker.echo = lambda payload: payload  # what 'master.echo' calls: the payload unchanged
    print("READY", flush=True)
    worker.start()


def run_stage1() -> None:
    Server = pylm("pylm.servers").Server

    server = Server("stage1", CACHE, f"{LOCAL}:*", f"{LOCAL}:*", pipelined=True, log_level=QUIET)
    print("READY", _endpoint(server.pull_socket), _endpoint(server.pub_socket), flush=True)
    server.start()


def run_stage(name: str, previous: str, sub_address: str, last: bool) -> None:
    Pipeline = pylm("pylm.servers").Pipeline

    stage = Pipeline(
        name, CACHE, sub_address, f"{LOCAL}:*", previous, to_client=last, log_level=QUIET
    )
    print("READY", _endpoint(stage.pub_socket), flush=True)
    stage.start()


def _endpoint(sock: Any) -> str:
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


# --- the client (a child) -------------------------------------------------------------------


class Feed:
    """The generator ``Client.job`` sends from: each phase's messages in turn, at most
    ``window`` in flight, a phase begun once every answer of the one before is in."""

    def __init__(self, phases: list[Messages], window: int, deadline: float) -> None:
        self.phases, self.deadline = phases, deadline
        self.room = threading.Semaphore(window)
        self.done = [threading.Event() for _ in phases]
        self.started = [0.0 for _ in phases]

    def __iter__(self) -> Iterator[bytes]:
        for k, messages in enumerate(self.phases):
            if k and not self.done[k - 1].wait(deadline_left(self.deadline)):
                return
            self.started[k] = time.perf_counter()
            for item in messages.items:
                if not self.room.acquire(timeout=deadline_left(self.deadline)):
                    return
                yield item


def client_rate(topology: str, n: int, size: int, push: str, sub: str, timeout: float) -> float:
    Client = pylm("pylm.clients").Client
    zmq_context = pylm("pylm.parts.core").zmq_context

    deadline = time.monotonic() + timeout
    zmq_context.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))  # a lost answer fails the run
    server = "master" if topology == "A" else STAGES[0]
    client = Client(
        server, CACHE, push_address=push, sub_address=sub, logging_level=QUIET, this_config=True
    )
    function: str | list[str] = "master.echo"
    if topology == "B":
        function = [f"{stage}.echo" for stage in STAGES]
    phases = [Messages(warmup_count(size), size), Messages(n, size)]
    feed = Feed(phases, window_for(size), deadline)
    answers = client.job(function, iter(feed), messages=sum(p.n for p in phases))
    for k, messages in enumerate(phases):
        checker = Answers(messages)
        for _ in range(messages.n):
            checker.add(next(answers))
            feed.room.release()
        ended = time.perf_counter()
        checker.finish()
        feed.done[k].set()
    return rate(n, ended - feed.started[-1])


def run_client(argv: list[str]) -> None:
    """``client A|B N SIZE PUSH_ADDRESS SUB_ADDRESS TIMEOUT``: prints ``RESULT <msgs/s>``."""
    topology, n, size, push, sub, timeout = argv
    try:
        value = client_rate(topology, int(n), int(size), push, sub, float(timeout))
        print(f"RESULT {value:.3f}", flush=True)
        code = 0
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        code = 1
    os._exit(code)  # pylm's sockets linger for ever: no interpreter shutdown that waits on them


def main(argv: list[str]) -> None:
    role, rest = argv[0], argv[1:]
    if role == "master":
        run_master()
    elif role == "worker":
        run_worker(*rest)
    elif role == "stage1":
        run_stage1()
    elif role == "stage":
        run_stage(rest[0], rest[1], rest[2], rest[3] == "yes")
    elif role == "client":
        run_client(rest)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
