"""The worker's I/O-free state (queue/_worker_state.py), driven through tables of events, and
the job payloads (queue/_payload.py): what is signed, what is refused before unpickling."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from undertow.errors import AuthenticationError, SerializationError
from undertow.queue._payload import (
    BY_NAME,
    PICKLE,
    Call,
    decode_call,
    decode_result,
    encode_call,
    encode_result,
    open_payload,
)
from undertow.queue._worker_state import Phase, WorkerState
from undertow.security import TokenAuth, client_key, new_token

LEASE = 30.0


def state(**options: Any) -> WorkerState:
    return WorkerState(lease=LEASE, sweep_every=10.0, poll_min=0.01, poll_max=0.08, **options)


@pytest.mark.parametrize(
    ("concurrency", "held", "phase", "expected"),
    [
        (4, 0, Phase.RUNNING, 4),
        (4, 3, Phase.RUNNING, 1),
        (4, 4, Phase.RUNNING, 0),
        (1, 0, Phase.DRAINING, 0),
    ],
)
def test_free_slots(concurrency: int, held: int, phase: Phase, expected: int):
    s = state(concurrency=concurrency)
    if held:
        s.claimed([(uuid.uuid4().hex, 1) for _ in range(held)], now=0.0)
    s.phase = phase
    assert s.free_slots(0.0) == expected


def test_empty_claims_back_off_doubling_up_to_the_maximum_and_a_job_resets_it():
    s = WorkerState(concurrency=2, poll_min=0.25, poll_max=2.0)
    events = [  # (now, claimed ids, free slots at now, next claim due at)
        (0.0, [], 2, 0.25),
        (0.25, [], 2, 0.75),
        (0.75, [], 2, 1.75),
        (1.75, [], 2, 3.75),
        (3.75, [], 2, 5.75),  # capped at poll_max
        (5.75, ["a"], 2, 5.75),
    ]
    for now, ids, free, due in events:
        assert s.free_slots(now) == free
        s.claimed([(i, 1) for i in ids], now)
        if due > now:
            assert s.free_slots(due - 0.001) == 0
        assert s.free_slots(due) == 2 - len(s.held)


def test_leases_are_renewed_at_a_third_and_a_refusal_stops_the_job():
    s = state()
    s.claimed([("a", 1), ("b", 1)], now=100.0)
    assert s.renewals_due(109.0) == []
    assert [h.job_id for h in s.renewals_due(110.0)] == ["a", "b"]
    assert s.renewed("a", True, 110.0)
    assert s.held["a"].lease_until == 140.0
    assert s.held["a"].renew_at == 120.0
    assert not s.renewed("b", False, 110.0)  # cancelled, or lost
    assert s.held["b"].stop
    assert [h.job_id for h in s.renewals_due(121.0)] == ["a"]  # a stopped job is not renewed
    s.renew_failed("a", 121.0)  # backend down: try again soon, within the lease
    assert 121.0 < s.held["a"].renew_at <= 121.0 + LEASE / 10
    assert s.renewed("gone", False, 1.0)  # a finished job's late answer changes nothing


@pytest.mark.parametrize(
    ("attempt", "backoff", "delay"),
    [(1, 1.0, 1.0), (2, 1.0, 2.0), (3, 1.0, 4.0), (4, 0.5, 4.0), (30, 1.0, 300.0)],
)
def test_retry_delays_double_up_to_the_maximum(attempt: int, backoff: float, delay: float):
    assert state().retry_delay(attempt, backoff) == delay


def test_sweeps_come_every_sweep_every_seconds():
    s = state()
    assert s.sweep_due(0.0)
    s.swept(0.0)
    assert not s.sweep_due(9.9)
    assert s.sweep_due(10.0)


@pytest.mark.parametrize(
    ("burst", "held", "last_claim_empty", "drained", "stop"),
    [
        (False, 0, True, False, False),  # a worker waits for work
        (True, 0, True, False, True),  # in burst mode, nothing left: done
        (True, 1, True, False, False),  # ... but not while it holds a job
        (True, 0, False, False, False),  # ... nor before an empty claim
        (False, 1, False, True, False),  # draining waits for held jobs
        (False, 0, False, True, True),  # drained
    ],
)
def test_when_a_worker_stops(burst, held, last_claim_empty, drained, stop):
    s = state(concurrency=2)
    s.claimed([(f"j{i}", 1) for i in range(held)] or [("x", 1)], 0.0)
    if not held:
        s.finished("x")
    if last_claim_empty:
        s.claimed([], 1.0)
    if drained:
        s.drain()
    assert s.should_stop(burst=burst) is stop


def test_next_wakeup_is_the_earliest_renewal_sweep_or_claim():
    s = state(concurrency=1)
    s.swept(0.0)  # next sweep at 10
    s.beaten(0.0)  # next heartbeat at 10 (a third of the lease)
    s.claimed([("a", 1)], 0.0)  # renew at 10, no free slot
    assert s.next_wakeup(0.0) == 10.0
    s.finished("a")
    s.claimed([], 1.0)  # next claim at 1.01
    assert s.next_wakeup(1.0) == pytest.approx(1.01)
    s.drain()
    assert s.next_wakeup(1.0) == 10.0  # draining: no claims


def test_a_backend_failure_delays_claims_growing():
    s = state()
    s.backend_failed(0.0)
    assert s.free_slots(0.0) == 0
    assert s.free_slots(0.01) == 1
    s.backend_failed(0.01)
    assert s.free_slots(0.02) == 0
    assert s.free_slots(0.03) == 1


def test_short_jobs_are_claimed_ahead_as_many_as_the_slots_get_through_in_the_horizon():
    s = state(concurrency=4, prefetch=100, horizon=0.05)
    s.swept(0.0)
    s.beaten(0.0)
    assert s.free_slots(0.0) == 4  # no pace yet: a slot each
    s.ran(0.01)  # 10 ms a job: 4 slots x 5 jobs in 50 ms
    assert s.capacity() == 4 + 20
    s.claimed([(f"j{i}", 1) for i in range(24)], 0.0)
    assert s.free_slots(0.0) == 0
    for i in range(11):  # 13 held: more than the slots, and fewer than half free (11 < 12)
        s.finished(f"j{i}")
    assert s.free_slots(0.0) == 0
    assert s.next_wakeup(0.0) > 0.0  # nothing to claim: the worker waits (no busy loop)
    s.finished("j11")
    assert s.free_slots(0.0) == 12  # half of them done: a claim is worth its round trip


@pytest.mark.parametrize(
    ("paces", "capacity"),
    [
        ([1.0], 4),  # jobs longer than the horizon: nothing ahead
        ([0.000001], 4 + 100),  # as fast as can be: at most `prefetch` ahead
        ([0.01, 1.0], 4),  # one slow job after fast ones stops the claims ahead
    ],
)
def test_the_pace_follows_recent_jobs(paces: list[float], capacity: int):
    s = state(concurrency=4, prefetch=100, horizon=0.05)
    for seconds in paces:
        s.ran(seconds)
    assert s.capacity() == capacity


def test_without_prefetch_a_worker_holds_one_job_a_slot():
    s = state(concurrency=2, prefetch=0)
    s.ran(0.000001)
    assert s.capacity() == 2


def test_bad_options_are_refused_by_name():
    with pytest.raises(ValueError, match="concurrency=0"):
        WorkerState(concurrency=0)
    with pytest.raises(ValueError, match="lease=0"):
        WorkerState(lease=0)
    with pytest.raises(ValueError, match="prefetch=-1"):
        WorkerState(prefetch=-1)


# -- payloads -------------------------------------------------------------------------------

TOKEN = new_token("me")
POLICY = Call(frames=[])


def test_a_call_by_name_round_trips_as_msgpack():
    job_id = uuid.uuid4().hex
    function, payload, codec = encode_call(job_id, "add", (1, 2), {"z": 3}, key=None, policy=POLICY)
    assert (function, codec) == ("add", BY_NAME)
    call, key = open_payload(job_id, function, codec, payload, auth=None)
    assert key is None
    fn, args, kwargs = decode_call(function, codec, call, {"add": max}.__getitem__)
    assert (fn, args, kwargs) == (max, (1, 2), {"z": 3})
    result = encode_result(job_id, function, codec, [1, "x"], None)
    assert decode_result(job_id, function, codec, result, None) == [1, "x"]


def test_arguments_that_msgpack_cannot_carry_name_the_fix():
    with pytest.raises(SerializationError, match="submit the function itself"):
        encode_call(uuid.uuid4().hex, "f", (object(),), {}, key=None, policy=POLICY)


def test_a_callable_needs_a_token():
    with pytest.raises(AuthenticationError, match=r"JobQueue\(token=\.\.\.\)"):
        encode_call(uuid.uuid4().hex, lambda: 1, (), {}, key=None, policy=POLICY)


def test_a_signed_pickle_round_trips_and_its_result_is_signed_back():
    job_id, key = uuid.uuid4().hex, client_key(TOKEN)
    offset = 10
    function, payload, codec = encode_call(
        job_id, lambda x: x + offset, (1,), {}, key=key, policy=Call(frames=[], retry=True)
    )
    assert codec == PICKLE
    assert "lambda" in function
    call, signer = open_payload(job_id, function, codec, payload, TokenAuth([TOKEN]))
    assert call.retry
    assert signer is not None
    assert signer.identity == "me"
    no_functions: dict[str, Any] = {}
    fn, args, kwargs = decode_call(function, codec, call, no_functions.__getitem__)
    data = encode_result(job_id, function, codec, fn(*args, **kwargs), signer)
    assert decode_result(job_id, function, codec, data, key) == 11
    with pytest.raises(AuthenticationError, match="not signed with your token"):
        decode_result(job_id, function, codec, data, client_key(new_token("me")))
    with pytest.raises(AuthenticationError, match="token that submitted it"):
        decode_result(job_id, function, codec, data, None)


@pytest.mark.parametrize(
    ("auth", "tamper", "message"),
    [
        (None, None, "no authenticator"),
        ([new_token("me")], None, "wrong signature"),
        ([new_token("other")], None, "does not know"),
        ([TOKEN], "id", "wrong signature"),
        ([TOKEN], "function", "wrong signature"),
    ],
)
def test_a_pickle_that_does_not_check_out_is_refused(auth, tamper, message):
    job_id = uuid.uuid4().hex
    function, payload, codec = encode_call(
        job_id, print, (), {}, key=client_key(TOKEN), policy=POLICY
    )
    if tamper == "id":
        job_id = uuid.uuid4().hex
    if tamper == "function":
        function = "os.system"
    authenticator = TokenAuth(auth) if auth else None
    with pytest.raises(AuthenticationError, match=message):
        open_payload(job_id, function, codec, payload, authenticator)
