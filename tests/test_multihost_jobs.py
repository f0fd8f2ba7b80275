"""The job queue across hosts (tests/_hosts.py: network namespaces on a bridge): Redis and a
worker on host0, a data server and a worker on host1 and on host2, clients on host3, every
process bound to its own address with a token. Jobs go where their data is, small jobs
spread, a host group's queue is used; a worker host cut off past its lease loses its job to
another and its late result is refused; Redis cut off gives BrokerUnavailable within the
deadline, and everything carries on once it is back. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ._hosts import Host, Hosts, marks, start_redis
from ._processes import read_line

pytestmark = marks()

TOKEN = "multihost-jobs.Q3vT8kW1xZ5nB7mC2pL4sF6gH9jD0rY"

#: the workers' functions
JOBS = """
import socket, time
import numpy as np

def where(*arrays):
    # the host that ran it, and the sum of the pointers' values (fetched from their owners)
    return socket.gethostname(), sum(float(np.asarray(a.fetch()).sum()) for a in arrays)

def nap(seconds):
    print("on", socket.gethostname(), flush=True)
    time.sleep(seconds)
    return socket.gethostname()
"""

#: on host3: arrays left on the data servers given, jobs that read them, small jobs; what
#: ran where, as JSON
LOCALITY = """
import json, sys
import numpy as np, undertow
from undertow.queue import JobQueue

backend, one, two = sys.argv[1:4]
a = undertow.put(np.ones(2**18), to=one)            # 2 MiB on host1
b = undertow.put(np.full(2**18, 2.0), to=two)       # 2 MiB on host2
with JobQueue(backend, threshold=2**20) as queue:
    # small jobs first: a worker that has just run quick jobs claims ahead as many as it
    # would get through in 50 ms at that pace (up to 20 here), slow ones included
    small = queue.map("nap", [0.3] * 12)
    spread = [job.result(timeout=60) for job in small]
    on_b = [queue.submit("where", b) for _ in range(6)]
    ran = [job.result(timeout=60) for job in on_b]
    both = queue.submit("where", a, b)               # as much on each: their group's queue
    print(json.dumps({
        "on_b": ran,
        "explain_b": on_b[0].explain(),
        "both": both.result(timeout=60),
        "both_queues": both.record().queues,
        "explain_both": both.explain(),
        "small": spread,
    }), flush=True)
"""

#: on host3, step by step (a line from the test between steps): a long job on the queue
#: "faults", its state as it goes, its result, its record
FAULTS = """
import json, sys, time
from undertow.queue import JobQueue

def until(ready, what):
    # polls, as a user would, within a deadline (past it: exits saying what it waited for)
    deadline = time.monotonic() + 60
    while not ready():
        if time.monotonic() > deadline:
            sys.exit(f"waited 60 s for {what}")
        time.sleep(0.05)

backend = sys.argv[1]
with JobQueue(backend) as queue:
    job = queue.submit("nap", 6.0, queue="faults", max_attempts=3)  # (else dead at its lease)
    until(lambda: job.state.value == "running", "the job to run")
    print(job.record().worker, flush=True)
    sys.stdin.readline()                              # the worker's host is cut meanwhile
    print(job.result(timeout=60, output=False), flush=True)
    sys.stdin.readline()                              # its host is back meanwhile
    def late(): return queue.stats()["workers"].get(sys.argv[2], {})
    until(lambda: late().get("running", 1) == 0, "the late worker to let its job go")
    record = job.record()
    print(json.dumps({"state": record.state.value, "attempts": record.attempts,
                      "result": job.result(timeout=5, output=False), "output": job.output(),
                      "late": late()}), flush=True)
"""

#: on host3: a submit while Redis is cut off (how long until it failed, and how), then,
#: once told it is back, a job that runs
BROKER = """
import sys, time
import undertow
from undertow.queue import JobQueue

backend = sys.argv[1]
with JobQueue(backend, timeout=3.0) as queue:
    print("ready", flush=True)
    sys.stdin.readline()                              # Redis's host is cut meanwhile
    start = time.monotonic()
    try:
        queue.submit("nap", 0.0)
        print("stored", flush=True)
    except Exception as exc:
        print(f"{time.monotonic() - start:.2f} {type(exc).__name__}", flush=True)
    start = time.monotonic()
    try:  # a service found by name: the registry is Redis too
        undertow.put(1, to="data", backend=backend, timeout=3.0)
        print("found", flush=True)
    except Exception as exc:
        print(f"{time.monotonic() - start:.2f} {type(exc).__name__} {exc}", flush=True)
    sys.stdin.readline()                              # it is back meanwhile
    ran = queue.submit("nap", 0.0).result(timeout=60, output=False)
    kept = undertow.put(list(range(10)), to="data", backend=backend)  # found in the registry
    print(ran, kept.fetch()[-1], flush=True)
"""


@dataclass
class Cluster:
    hosts: Hosts
    url: str
    data: dict[str, str]  # host name -> its data server's address
    home: Path  # the directory of the workers' module

    def env(self, host: Host) -> dict[str, str]:
        """A process's environment on ``host``: its own home, the token, the backend."""
        home = self.home / host.name
        return dict(os.environ, UNDERTOW_HOME=str(home), UNDERTOW_TOKEN=TOKEN,
                    UNDERTOW_BACKEND=self.url, PYTHONPATH=str(self.home))  # fmt: skip

    def start(self, host: Host, args: list[str], what: str) -> tuple[subprocess.Popen[bytes], str]:
        """``undertow ARGS`` on ``host``; the process and its readiness line."""
        proc = host.popen(
            [sys.executable, "-m", "undertow.cli", *args],
            cwd=self.home,
            env=self.env(host),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return proc, read_line(proc, f"{what} on {host.name}")

    def worker(self, host: Host, *options: str) -> tuple[subprocess.Popen[bytes], str]:
        """A worker on ``host``; the process and the worker's name."""
        args = ["worker", "--module", "jobs", *options]
        proc, line = self.start(host, args, "a worker")
        return proc, line.split()[2]  # "undertow: worker NAME on queues ..."

    def client(self, host: Host, script: str, *args: str) -> Client:
        """A client script on ``host`` (its stderr in a file, shown if it fails)."""
        log = self.home / f"client-{len(host.procs)}.log"
        with log.open("wb") as err:
            proc = host.popen(
                [sys.executable, "-c", script, self.url, *args],
                cwd=self.home,
                env=self.env(host),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        return Client(proc, log)


@dataclass
class Client:
    """A client script on a host, told when to take its next step."""

    proc: subprocess.Popen[bytes]
    log: Path

    def line(self, timeout: float = 30.0) -> str:
        return read_line(self.proc, "the client", self.log, timeout)

    def go(self) -> None:
        """Let it take its next step."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def finish(self) -> str:
        """What it printed last, once it exited (successfully)."""
        out, _ = self.proc.communicate(timeout=90)
        err = self.log.read_text(errors="replace")[-3000:]
        assert self.proc.returncode == 0, f"the client: {err}"
        return out.decode().splitlines()[-1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("cluster")
    (home / "jobs.py").write_text(textwrap.dedent(JOBS))
    with Hosts(4) as hosts:
        made = Cluster(hosts, start_redis(hosts[0]), {}, home)
        group = [sys.executable, "-m", "undertow.cli", "group", "add", "pair"]
        done = hosts[3].run([*group, hosts[1].address, hosts[2].address], env=made.env(hosts[3]))
        assert done.returncode == 0, done.stderr
        for host in hosts.hosts[1:3]:
            _, line = made.start(host, ["data", "serve", "--host", host.address], "data")
            made.data[host.name] = line.rsplit(" ", 1)[-1]
            assert made.data[host.name].startswith(f"tcp://{host.address}:")  # never 0.0.0.0
        for host in hosts.hosts[:3]:  # (after the group: workers read groups as they start)
            made.worker(host, "--concurrency", "2")
        yield made


def test_jobs_run_where_their_data_is_and_small_ones_spread(cluster: Cluster) -> None:
    hosts = cluster.hosts
    client = cluster.client(hosts[3], LOCALITY, cluster.data["host1"], cluster.data["host2"])
    said = json.loads(client.finish())
    assert {host for host, _ in said["on_b"]} == {"host2"}, said["on_b"]  # all six
    assert all(total == 2.0 * 2**18 for _, total in said["on_b"])
    explained = said["explain_b"]
    assert f"host:{hosts[2].address}" in explained, explained
    assert "host2:" in explained, explained  # the worker that ran it (named by its host)
    assert said["both_queues"][0] == "group:pair", said
    assert said["both"][0] in ("host1", "host2"), said
    assert "group pair" in said["explain_both"], said["explain_both"]
    assert set(said["small"]) == {"host0", "host1", "host2"}, said["small"]


def test_a_worker_cut_off_past_its_lease_loses_its_job_and_its_late_result(
    cluster: Cluster,
) -> None:
    hosts = cluster.hosts
    first, first_name = cluster.worker(hosts[1], "--queue", "faults", "--lease", "3")
    client = cluster.client(hosts[3], FAULTS, first_name)
    assert client.line() == first_name  # running on host1
    hosts.cut(1)
    try:
        cluster.worker(hosts[2], "--queue", "faults", "--lease", "3")
        client.go()
        assert client.line(60) == "host2"  # run again there
    finally:
        hosts.mend(1)
    client.go()
    said = json.loads(client.finish())
    assert (said["state"], said["attempts"], said["result"]) == ("done", 2, "host2")
    assert "on host2" in "".join(said["output"])
    assert "on host1" not in "".join(said["output"])  # the late attempt's prints: refused
    assert said["late"]["running"] == 0, said["late"]  # it let the job go, its result unused
    assert said["late"]["done"] == 0, said["late"]
    first.terminate()


def test_redis_cut_off_fails_within_the_deadline_and_recovery_needs_nothing(
    cluster: Cluster,
) -> None:
    hosts = cluster.hosts
    client = cluster.client(hosts[3], BROKER)
    assert client.line() == "ready"
    hosts.cut(0)
    try:
        client.go()
        seconds, kind = client.line(60).split()
        found = client.line(60).split()
    finally:
        hosts.mend(0)
    assert kind == "BrokerUnavailable"
    assert float(seconds) < 3.0 + 1.0  # its deadline, and a little
    assert found[1] == "BrokerUnavailable", found  # a service looked up by name: the same
    assert float(found[0]) < 3.0 + 1.0, found
    client.go()
    ran, last = client.finish().split()
    assert ran in ("host0", "host1", "host2")  # a worker carried on
    assert last == "9"  # a data server still registered, reached by name
