"""Chaos tests of the durable job queue: ``undertow worker`` processes SIGKILLed at random, a
job that kills its own worker, workers racing for claims, Redis killed and restarted on its
append-only file during submits, processes killed while they write the SQLite file, and a
job longer than its lease.

The jobs (tests/_chaos_jobs.py) append what they do to an effect log, one line per event;
the checks hold the store's records against that log. The issue's numbers are kept (20,000
racing claims, 5,000 submits) except in the first test, scaled from 2,000 jobs of
0.05-0.5 s to 1,000 of 0.02-0.2 s, so that the file runs in about 2 minutes for both
backends on two busy cores (3.5 with two CPU burners beside it), with the same spirit: a
dozen kills that land on running jobs.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from undertow.errors import BackendError, JobFailed
from undertow.queue import Job, JobQueue, JobState
from undertow.storage import JobRecord

from ._chaos import (
    DurableRedis,
    Effect,
    Submitter,
    WorkerPool,
    all_records,
    busy_pids,
    by_tag,
    held_by,
    pid_of,
    read_effects,
)
from ._waiting import wait_until

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]

#: the issue's 2,000 jobs of 0.05-0.5 s, scaled to 1,000 of 0.02-0.2 s: about 110 s of work
#: for 4 workers x 2 slots, a dozen kills (one each 1/13th of the jobs: every 1-2 s)
CHAOS_JOBS, CHAOS_WORK = 1000, (0.02, 0.2)
CHAOS_WORKERS, CHAOS_SLOTS, CHAOS_KILLS = 4, 2, 12
#: short, so that a killed worker's jobs come back within a few seconds; long enough that a
#: live worker keeps its leases on two busy cores, and that the test reads what a killed
#: worker held (a scan of every job: up to 0.6 s on two cores beside two CPU burners) before
#: a sweep queues it again
CHAOS_LEASE = 3.0
LEASE = 1.0
#: a job may be lost with a killed worker several times in a row
MAX_ATTEMPTS = 10


def _rng() -> random.Random:
    """A random source whose seed is printed (shown if the test fails) and can be replayed
    with CHAOS_SEED."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"random seed {seed} (replay with CHAOS_SEED={seed})")
    return random.Random(seed)


def _finished(effects: Path) -> int:
    """How many jobs (tags) noted their end at least once."""
    return len({e.tag for e in read_effects(effects) if e.event == "done"})


def _at_least(count: Callable[[], int], n: int) -> Callable[[], bool]:
    """A condition: ``count()`` is ``n`` or more."""
    return lambda: count() >= n


def _settled(queue: JobQueue) -> bool:
    """No job is queued or running."""
    return not any(queue.jobs(state=s, limit=1) for s in (JobState.QUEUED, JobState.RUNNING))


def _kill_as_jobs_finish(
    url: str, pool: WorkerPool, effects: Path, rng: random.Random
) -> set[tuple[str, int]]:
    """Each time another 1/(kills + 1)th of the jobs ended, SIGKILL a random worker that
    runs a job now (any, if none does) and start another; the attempts the killed workers
    held, ``(job id, attempt)``."""
    step = CHAOS_JOBS // (CHAOS_KILLS + 1)
    lost: set[tuple[str, int]] = set()
    slowest = 0.0
    for k in range(1, CHAOS_KILLS + 1):
        flowing = wait_until(_at_least(lambda: _finished(effects), k * step), 60, 0.05)
        assert flowing, f"the jobs stopped flowing after kill {k - 1}:\n{pool.stderr()}"
        assert not pool.replace_dead(), f"workers died on their own: {pool.died}"
        busy = busy_pids(read_effects(effects))
        victim = rng.choice([w for w in pool.live if w.pid in busy] or pool.live)
        killed_at = time.monotonic()
        pool.kill(victim, replace=False)
        lost |= held_by(url, victim)
        late = time.monotonic() - killed_at
        # its leases hold about 2/3 of a lease after the kill (renewed every third)
        assert late < CHAOS_LEASE / 2, f"read what worker {victim.pid} held too late: {late} s"
        slowest = max(slowest, late)
        pool.start()
    print(f"what each killed worker held was read within {slowest:.3f} s of the kill")
    return lost


def _check_attempts(
    records: dict[str, JobRecord],
    results: dict[str, list[int]],
    effects: list[Effect],
    lost: set[tuple[str, int]],
    killed: set[int],
) -> None:
    """Each job is DONE with the result of its last attempt, which ran once; every earlier
    attempt was held by a worker the test killed, and those that ran, ran there."""
    tags = by_tag(effects)
    for job_id, record in records.items():
        assert record.state is JobState.DONE, (record.state, record.reason)
        tag, pid = results[job_id]
        final = pid_of(record.worker)
        assert pid == final, f"job {tag}: the accepted result is not its last attempt's"
        starts = [e.pid for e in tags[tag] if e.event == "start"]
        dones = [e.pid for e in tags[tag] if e.event == "done"]
        assert starts.count(final) == 1, f"job {tag} ran {starts.count(final)} times on {pid}"
        assert dones.count(final) == 1, (tag, dones)
        earlier = {a for j, a in lost if j == job_id}
        assert earlier == set(range(1, record.attempts)), (
            f"job {tag}: attempts {record.attempts}, held by killed workers: {sorted(earlier)}"
        )
        assert {p for p in starts if p != final} <= killed, (tag, starts, killed)
        assert len(starts) <= record.attempts, (tag, record.attempts, starts)


@pytest.mark.timeout(180)
def test_workers_killed_at_random_lose_no_job(url: str, tmp_path: Path):
    rng = _rng()
    effects = tmp_path / "effects.log"
    seconds = [rng.uniform(*CHAOS_WORK) for _ in range(CHAOS_JOBS)]
    pool = WorkerPool(url, tmp_path, size=CHAOS_WORKERS, lease=CHAOS_LEASE, concurrency=CHAOS_SLOTS)
    with JobQueue(url, token=False) as queue, pool:
        logs = [str(effects)] * CHAOS_JOBS
        jobs = queue.map("chaos_work", logs, range(CHAOS_JOBS), seconds, max_attempts=MAX_ATTEMPTS)
        pool.start()
        lost = _kill_as_jobs_finish(url, pool, effects, rng)
        assert wait_until(lambda: _finished(effects) == CHAOS_JOBS, 60, 0.1), pool.stderr()
        assert wait_until(lambda: _settled(queue), 30, 0.1), "jobs were left behind"
        pool.stop()
        results = {job.id: job.result(timeout=10) for job in jobs}
    assert [results[job.id][0] for job in jobs] == list(range(CHAOS_JOBS))
    records = {r.id: r for r in all_records(url)}
    assert len(records) == CHAOS_JOBS
    found = read_effects(effects)
    _check_attempts(records, results, found, lost, pool.killed)
    ran = sum(e.event == "start" for e in found) - CHAOS_JOBS
    print(f"{len(pool.killed)} kills lost {len(lost)} attempts, {ran} of which had started")
    assert lost, "no kill hit a job"


def _supervise(pool: WorkerPool, done: Job, queue: JobQueue, timeout: float) -> bool:
    """Restart the workers that die until ``done`` has ended and no job is left."""

    def settled() -> bool:
        pool.replace_dead()
        return done.done() and _settled(queue)

    return wait_until(settled, timeout, 0.05)


#: the jobs that keep flowing while the poison job kills its workers, each longer than what
#: a worker claims ahead of its slots (50 ms of work): a worker holds one job at a time
FLOWING, FLOWING_WORK = 40, 0.1


@pytest.mark.timeout(120)
def test_a_job_that_kills_its_worker_is_dead_after_its_attempts(url: str, tmp_path: Path):
    effects = tmp_path / "effects.log"
    # one slot each, and no job claimed ahead: the poison job is alone in the worker it
    # kills, and takes no other job along
    with (
        JobQueue(url, token=False) as queue,
        WorkerPool(url, tmp_path, size=2, lease=LEASE, concurrency=1) as pool,
    ):
        poison = queue.submit("chaos_poison", str(effects), -1, max_attempts=3)
        seconds = [FLOWING_WORK] * FLOWING
        others = queue.map("chaos_work", [str(effects)] * FLOWING, range(FLOWING), seconds)
        pool.start()
        assert _supervise(pool, poison, queue, 90), pool.stderr()
        pool.replace_dead()
        pool.stop()
        record = poison.record()
        with pytest.raises(JobFailed, match="lease expired"):
            poison.result(timeout=0)
        flowed = [(job.record(), job.result(timeout=0)) for job in others]
    assert (record.state, record.attempts) == (JobState.DEAD, 3)
    found = read_effects(effects)
    tries = [e for e in found if e.tag == -1]
    assert [e.event for e in tries] == ["start"] * 3
    assert pool.died == {e.pid: -signal.SIGKILL for e in tries}, pool.died
    for i, (other, (tag, pid)) in enumerate(flowed):
        assert (other.state, other.attempts, tag) == (JobState.DONE, 1, i)
        assert pid == pid_of(other.worker)
    ended = [e.at for e in found if e.tag >= 0 and e.event == "done"]
    assert any(tries[0].at < at < tries[-1].at for at in ended), "the other jobs stalled"


#: the issue's 20,000 no-op jobs over 8 workers: 8 processes of 4 slots each, 32 claimers
RACE_JOBS, RACE_WORKERS, RACE_SLOTS = 20_000, 8, 4
#: jobs of the map whose 100 batches take longer together than the timeout of one
MAP_JOBS = 50_000


@pytest.mark.timeout(180)
def test_racing_workers_claim_each_job_once(url: str, tmp_path: Path):
    effects = tmp_path / "effects.log"
    # a long lease: nothing here may expire, so any second attempt is a double claim
    with (
        JobQueue(url, token=False) as queue,
        WorkerPool(url, tmp_path, size=RACE_WORKERS, lease=60.0, concurrency=RACE_SLOTS) as pool,
    ):
        pool.start()  # all ready before the first job: they race from the start
        queue.map("chaos_noop", [str(effects)] * RACE_JOBS, range(RACE_JOBS))
        ran = wait_until(lambda: len(read_effects(effects)) >= RACE_JOBS, 150, 0.25)
        assert ran, f"{len(read_effects(effects))} of {RACE_JOBS} ran:\n{pool.stderr()}"
        assert wait_until(lambda: _settled(queue), 30, 0.1), "jobs were left behind"
        pool.stop()
    records = all_records(url)
    assert len(records) == RACE_JOBS
    assert Counter((r.state, r.attempts) for r in records) == {(JobState.DONE, 1): RACE_JOBS}
    starts = Counter(e.tag for e in read_effects(effects))
    assert sorted(starts) == list(range(RACE_JOBS))
    assert set(starts.values()) == {1}, [t for t, n in starts.items() if n > 1]
    takers = Counter(pid_of(r.worker) for r in records)
    # the claims raced: most workers took some (one that starts late may find none left)
    assert len(takers) >= RACE_WORKERS // 2, takers


@pytest.mark.timeout(90)
def test_a_map_of_quick_batches_is_not_cut_short_by_the_timeout(tmp_path: Path):
    url = f"sqlite://{tmp_path / 'cluster.db'}"
    with JobQueue(url, token=False, timeout=30) as queue:
        queue.queue_length()  # (the store opened)
        started = time.monotonic()
        queue.map("chaos_noop", ["-"] * 500, range(500))  # one batch
        batch = time.monotonic() - started
    # each batch may take ten times the first; the 100 batches, ten times the timeout
    # (at least 0.5 s: one slow fsync on a busy 2-core machine took a batch past 0.2 s)
    with JobQueue(url, token=False, timeout=max(10 * batch, 0.5)) as queue:
        queue.queue_length()
        try:
            jobs = queue.map("chaos_noop", ["-"] * MAP_JOBS, range(MAP_JOBS))
        finally:
            stored = len(all_records(url)) - 500
            print(f"a batch took {batch:.3f} s; {stored} of {MAP_JOBS} jobs were stored")
    assert (len(jobs), stored) == (MAP_JOBS, MAP_JOBS)


#: the issue's 5,000 submits, with Redis SIGKILLed at a quarter, a half and three quarters
SUBMITS = 5000


class _Submits(threading.Thread):
    """Submits SUBMITS jobs, each retried with the same idempotency key until it is
    acknowledged."""

    def __init__(self, queue: JobQueue) -> None:
        super().__init__()
        self.queue = queue
        #: tag -> the id its acknowledgement named
        self.acked: dict[int, str] = {}
        self.failures: list[BackendError] = []
        self.crashed: BaseException | None = None

    def progress(self) -> int:
        """Submits acknowledged so far (all of them once the thread failed)."""
        return SUBMITS if self.crashed else len(self.acked)

    def run(self) -> None:
        idle = threading.Event()  # never set: its wait() is the pause before a retry
        try:
            for tag in range(SUBMITS):
                while tag not in self.acked:
                    try:
                        job = self.queue.submit("chaos_noop", "-", tag, idempotency_key=f"k{tag}")
                    except BackendError as exc:
                        self.failures.append(exc)
                        assert len(self.failures) < 1000, "the submits keep failing"
                        idle.wait(0.01)
                        continue
                    self.acked[tag] = job.id
        except BaseException as exc:  # kept for the test to report, not lost in a thread
            self.crashed = exc


@pytest.mark.timeout(150)
def test_acknowledged_submits_survive_redis_killed_on_its_aof(tmp_path: Path):
    (tmp_path / "redis").mkdir()
    with DurableRedis(tmp_path / "redis") as server:
        with JobQueue(server.url, token=False, timeout=10) as queue:
            submits = _Submits(queue)
            submits.start()
            try:
                for at in (SUBMITS // 4, SUBMITS // 2, 3 * SUBMITS // 4):
                    assert wait_until(_at_least(submits.progress, at), 60)
                    server.kill()
                    assert submits.progress() < SUBMITS, "the submits ended before the kill"
                    server.start()
            finally:
                submits.join(90)
            assert submits.crashed is None, submits.crashed
            assert not submits.is_alive()
            server.kill()  # once more: the last acknowledgements must be on disk too
            server.start()
            length = queue.queue_length()
        records = {r.id: r for r in all_records(server.url)}
    print(f"{len(submits.failures)} submits failed and were retried")
    acked = submits.acked
    assert len(acked) == SUBMITS
    missing = [tag for tag, job_id in acked.items() if job_id not in records]
    assert not missing, f"{len(missing)} acknowledged jobs lost, e.g. {missing[:5]}"
    assert len(records) == SUBMITS  # one job per key: a retry never stored a second
    assert all(records[acked[t]].idempotency_key == f"k{t}" for t in acked)
    assert all(r.state is JobState.QUEUED for r in records.values())
    assert length == SUBMITS  # and each is on its queue, once


#: rounds of the SQLite test: each starts a submitter, kills it mid-write, and kills a worker
ROUNDS = 8


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _acked(acks: Path) -> set[str]:
    """The job ids the submitters wrote down. A submitter killed in the middle of writing a
    batch's ids (one write of several pages, which SIGKILL may cut between two) leaves a
    piece of an id that the next one's first line then runs on from: such a line is no id."""
    return {line for line in _lines(acks) if _JOB_ID.fullmatch(line)}


_JOB_ID = re.compile(r"[0-9a-f]{32}")


def _integrity(path: Path) -> str:
    """What ``PRAGMA integrity_check`` says of the SQLite file (read while others write)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))


@pytest.mark.timeout(150)
def test_processes_killed_mid_write_leave_the_sqlite_file_whole(tmp_path: Path):
    rng = _rng()
    path, acks, effects = tmp_path / "cluster.db", tmp_path / "acks", tmp_path / "effects.log"
    url = f"sqlite://{path}"
    with WorkerPool(url, tmp_path, size=2, lease=LEASE, concurrency=2) as pool:
        pool.start()
        for turn in range(ROUNDS):
            enough = len(_lines(acks)) + rng.randrange(1, 200)
            submitter = Submitter(url, acks, effects, first_tag=turn * 10**6)
            try:
                grew = wait_until(_at_least(lambda: len(_lines(acks)), enough), 60, 0.005)
            finally:
                err = submitter.kill()
            assert grew, err
            assert _integrity(path) == "ok"
            pool.kill(rng.choice(pool.live))
        for worker in pool.live:
            worker.kill()
        pool.live.clear()
        assert _integrity(path) == "ok"
        acked = _acked(acks)
        stored = {r.id for r in all_records(url)}
        assert acked <= stored, f"{len(acked - stored)} of {len(acked)} acknowledged jobs lost"
        print(f"{len(acked)} jobs acknowledged, {len(stored - acked)} stored but not")
        pool.start()  # and each of them still runs: its queue entry was kept too
        with JobQueue(url, token=False) as queue:
            assert wait_until(lambda: _settled(queue), 60, 0.1), pool.stderr()
        pool.stop()
    done = {r.id for r in all_records(url) if r.state is JobState.DONE}
    assert acked <= done, f"{len(acked - done)} acknowledged jobs never ran"


#: a job four times as long as its lease, which its worker renews meanwhile
LONG_JOB = 4 * LEASE


@pytest.mark.timeout(60)
def test_a_job_longer_than_its_lease_runs_once(url: str, tmp_path: Path):
    effects = tmp_path / "effects.log"
    # two workers: the idle one sweeps expired leases and would take the job if it came back
    with (
        JobQueue(url, token=False) as queue,
        WorkerPool(url, tmp_path, size=2, lease=LEASE, concurrency=1) as pool,
    ):
        pool.start()
        job = queue.submit("chaos_work", str(effects), 0, LONG_JOB, max_attempts=MAX_ATTEMPTS)
        tag, pid = job.result(timeout=30)
        record = job.record()
        pool.stop()
    assert (record.attempts, tag, pid) == (1, 0, pid_of(record.worker))
    found = read_effects(effects)
    assert [(e.pid, e.event) for e in found] == [(pid, "start"), (pid, "done")]
    assert found[1].at - found[0].at >= LONG_JOB
