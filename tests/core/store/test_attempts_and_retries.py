"""Attempts: explicit retries, automatic retries, which attempt decides, final attempt statuses."""

from __future__ import annotations

import time

import pytest
from store_helpers import add_spans, make_span, snapshot

from agentlightning.errors import InvalidTransitionError
from agentlightning.store.base import LightningStore
from agentlightning.types import AttemptedRollout, RolloutConfig


async def _dequeue(store: LightningStore) -> AttemptedRollout:
    got = await store.dequeue_rollout()
    assert got is not None
    return got


async def test_start_attempt_is_an_explicit_retry(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)  # max_attempts=1
    await store.update_attempt(started.rollout_id, started.attempt.attempt_id, status="failed")
    failed = await store.get_rollout_by_id(started.rollout_id)
    assert failed is not None and failed.status == "failed" and failed.end_time is not None

    retry = await store.start_attempt(started.rollout_id)
    assert retry.status == "preparing" and retry.end_time is None
    assert retry.attempt.sequence_id == 2 and retry.attempt.status == "preparing"
    third = await store.start_attempt(started.rollout_id, worker_id="w-1")  # past max_attempts as well
    assert third.attempt.sequence_id == 3 and third.attempt.worker_id == "w-1"

    attempts = await store.query_attempts(started.rollout_id)
    assert [a.sequence_id for a in attempts] == [1, 2, 3]
    assert [a.status for a in attempts] == ["failed", "preparing", "preparing"]
    latest = await store.get_latest_attempt(started.rollout_id)
    assert latest is not None and latest.attempt_id == third.attempt.attempt_id
    assert len({a.attempt_id for a in attempts}) == 3

    await store.update_attempt(started.rollout_id, "latest", status="succeeded")
    done = await store.get_rollout_by_id(started.rollout_id)
    assert done is not None and done.status == "succeeded"


async def test_start_attempt_on_a_succeeded_rollout_reopens_it(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    await store.update_attempt(started.rollout_id, "latest", status="succeeded")
    retry = await store.start_attempt(started.rollout_id)
    assert retry.status == "preparing" and retry.attempt.sequence_id == 2
    await store.update_attempt(started.rollout_id, "latest", status="failed")
    stored = await store.get_rollout_by_id(started.rollout_id)
    assert stored is not None and stored.status == "failed"


@pytest.mark.parametrize("failure", ["failed", "timeout", "unresponsive"])
async def test_retry_condition_requeues_until_budget_is_spent(store: LightningStore, failure: str) -> None:
    config = RolloutConfig(max_attempts=2, retry_condition=[failure])
    await store.enqueue_rollout(input=1, config=config)
    first = await _dequeue(store)
    await add_spans(store, first.rollout_id, first.attempt.attempt_id, 1)
    attempt = await store.update_attempt(first.rollout_id, first.attempt.attempt_id, status=failure)
    assert attempt.status == failure and attempt.end_time is not None
    rollout = await store.get_rollout_by_id(first.rollout_id)
    assert rollout is not None and rollout.status == "requeuing" and rollout.end_time is None

    second = await _dequeue(store)
    assert second.rollout_id == first.rollout_id
    assert second.attempt.sequence_id == 2 and second.attempt.attempt_id != first.attempt.attempt_id
    assert second.status == "preparing"

    await store.update_attempt(second.rollout_id, second.attempt.attempt_id, status=failure)
    rollout = await store.get_rollout_by_id(first.rollout_id)
    assert rollout is not None and rollout.status == "failed" and rollout.end_time is not None
    assert await store.dequeue_rollout() is None


async def test_status_outside_retry_condition_fails_even_with_budget(store: LightningStore) -> None:
    await store.enqueue_rollout(input=1, config=RolloutConfig(max_attempts=5, retry_condition=["timeout"]))
    first = await _dequeue(store)
    await store.update_attempt(first.rollout_id, first.attempt.attempt_id, status="failed")
    rollout = await store.get_rollout_by_id(first.rollout_id)
    assert rollout is not None and rollout.status == "failed"
    assert await store.dequeue_rollout() is None


async def test_retry_then_success(store: LightningStore) -> None:
    await store.enqueue_rollout(input=1, config=RolloutConfig(max_attempts=3, retry_condition=["failed"]))
    first = await _dequeue(store)
    await store.update_attempt(first.rollout_id, first.attempt.attempt_id, status="failed")
    second = await _dequeue(store)
    await add_spans(store, second.rollout_id, second.attempt.attempt_id, 1)
    running = await store.get_rollout_by_id(first.rollout_id)
    assert running is not None and running.status == "running"
    await store.update_attempt(second.rollout_id, second.attempt.attempt_id, status="succeeded")
    done = await store.get_rollout_by_id(first.rollout_id)
    assert isinstance(done, AttemptedRollout) and done.status == "succeeded"
    assert done.attempt.attempt_id == second.attempt.attempt_id


async def test_only_the_latest_attempt_propagates(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    old = started.attempt
    new = (await store.start_attempt(started.rollout_id)).attempt
    # the old attempt reporting does not move the rollout
    await add_spans(store, started.rollout_id, old.attempt_id, 1)
    rollout = await store.get_rollout_by_id(started.rollout_id)
    assert rollout is not None and rollout.status == "preparing"
    await store.update_attempt(started.rollout_id, old.attempt_id, status="failed")
    rollout = await store.get_rollout_by_id(started.rollout_id)
    assert rollout is not None and rollout.status == "preparing"
    # the latest one does
    await store.update_attempt(started.rollout_id, new.attempt_id, status="running")
    rollout = await store.get_rollout_by_id(started.rollout_id)
    assert rollout is not None and rollout.status == "running"
    await store.update_attempt(started.rollout_id, new.attempt_id, status="succeeded")
    rollout = await store.get_rollout_by_id(started.rollout_id)
    assert rollout is not None and rollout.status == "succeeded"


async def test_update_attempt_latest_targets_the_newest(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    second = await store.start_attempt(started.rollout_id)
    updated = await store.update_attempt(started.rollout_id, "latest", metadata={"note": "x"})
    assert updated.attempt_id == second.attempt.attempt_id and updated.metadata == {"note": "x"}
    attempts = await store.query_attempts(started.rollout_id)
    assert attempts[0].metadata is None and attempts[1].metadata == {"note": "x"}


@pytest.mark.parametrize("late", ["succeeded", "failed"])
@pytest.mark.parametrize("terminal", ["succeeded", "failed", "cancelled"])
async def test_terminal_rollout_ignores_late_attempt_reports(store: LightningStore, terminal: str, late: str) -> None:
    started = await store.start_rollout(input=1, config=RolloutConfig(max_attempts=3, retry_condition=["failed"]))
    await add_spans(store, started.rollout_id, started.attempt.attempt_id, 1)
    finished = await store.update_rollout(started.rollout_id, status=terminal)
    attempt = await store.update_attempt(started.rollout_id, started.attempt.attempt_id, status=late)
    assert attempt.status == late
    stored = await store.get_rollout_by_id(started.rollout_id)
    assert stored is not None and stored.status == terminal
    assert stored.end_time == pytest.approx(finished.end_time)
    assert await store.dequeue_rollout() is None  # a late failure does not requeue a finished rollout


async def test_stale_attempt_cannot_reopen_a_succeeded_rollout(store: LightningStore) -> None:
    started = await store.start_rollout(input=1, config=RolloutConfig(max_attempts=3, retry_condition=["failed"]))
    stale = started.attempt
    await store.update_attempt(started.rollout_id, stale.attempt_id, status="unresponsive")
    fresh = await store.start_attempt(started.rollout_id)
    await store.update_attempt(started.rollout_id, fresh.attempt.attempt_id, status="succeeded")
    await add_spans(store, started.rollout_id, stale.attempt_id, 1)  # revives the stale attempt only
    await store.update_attempt(started.rollout_id, stale.attempt_id, status="failed")
    stored = await store.get_rollout_by_id(started.rollout_id)
    assert isinstance(stored, AttemptedRollout) and stored.status == "succeeded"
    assert stored.attempt.attempt_id == fresh.attempt.attempt_id


@pytest.mark.parametrize(
    ("final", "target"),
    [
        (final, target)
        for final in ("succeeded", "failed", "timeout")
        for target in ("running", "succeeded", "failed", "timeout", "unresponsive", "preparing")
        if final != target  # the same status again is a no-op (tested below)
    ],
)
async def test_final_attempt_statuses_cannot_change(store: LightningStore, final: str, target: str) -> None:
    started = await store.start_rollout(input=1)
    await store.update_attempt(started.rollout_id, started.attempt.attempt_id, status=final)
    before = await store.get_latest_attempt(started.rollout_id)
    with pytest.raises(InvalidTransitionError) as info:
        await store.update_attempt(
            started.rollout_id, started.attempt.attempt_id, status=target, metadata={"lost": 1}, worker_id="w-lost"
        )
    message = str(info.value)
    assert started.attempt.attempt_id in message and final in message and target in message
    after = await store.get_latest_attempt(started.rollout_id)
    assert after is not None and before is not None
    assert after.model_dump() == before.model_dump()  # the failed call changed nothing
    assert await store.get_worker_by_id("w-lost") is None


async def test_attempt_cannot_go_back_to_preparing(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    await store.update_attempt(started.rollout_id, "latest", status="running")
    with pytest.raises(InvalidTransitionError):
        await store.update_attempt(started.rollout_id, "latest", status="preparing")
    attempt = await store.get_latest_attempt(started.rollout_id)
    assert attempt is not None and attempt.status == "running"


async def test_same_final_status_again_is_a_no_op(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    first = await store.update_attempt(started.rollout_id, "latest", status="succeeded")
    again = await store.update_attempt(started.rollout_id, "latest", status="succeeded")
    assert again.status == "succeeded" and again.end_time == pytest.approx(first.end_time)


@pytest.mark.parametrize("status", ["succeeded", "failed", "timeout", "unresponsive"])
async def test_ended_attempts_get_an_end_time(store: LightningStore, status: str) -> None:
    started = await store.start_rollout(input=1)
    assert started.attempt.end_time is None
    before = time.time()
    attempt = await store.update_attempt(started.rollout_id, "latest", status=status)
    assert attempt.end_time is not None and before <= attempt.end_time <= time.time()
    stored = await store.get_latest_attempt(started.rollout_id)
    assert stored is not None and stored.end_time == pytest.approx(attempt.end_time)
    rollout = await store.get_rollout_by_id(started.rollout_id)
    assert rollout is not None and rollout.status == ("succeeded" if status == "succeeded" else "failed")
    assert rollout.end_time is not None


async def test_running_attempt_has_no_end_time(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    attempt = await store.update_attempt(started.rollout_id, "latest", status="running")
    assert attempt.end_time is None
    rollout = await store.get_rollout_by_id(started.rollout_id)
    assert rollout is not None and rollout.end_time is None


@pytest.mark.parametrize("revive", ["span", "heartbeat"])
async def test_unresponsive_attempt_is_revived(store: LightningStore, revive: str) -> None:
    config = RolloutConfig(max_attempts=2, retry_condition=["unresponsive"])
    await store.enqueue_rollout(input=1, config=config)
    got = await _dequeue(store)
    await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status="unresponsive")
    rollout = await store.get_rollout_by_id(got.rollout_id)
    assert rollout is not None and rollout.status == "requeuing"

    if revive == "span":
        await add_spans(store, got.rollout_id, got.attempt.attempt_id, 1)
    else:
        await store.update_attempt(got.rollout_id, got.attempt.attempt_id, last_heartbeat_time=time.time())
    attempt = await store.get_latest_attempt(got.rollout_id)
    assert attempt is not None and attempt.status == "running" and attempt.end_time is None
    rollout = await store.get_rollout_by_id(got.rollout_id)
    assert rollout is not None and rollout.status == "running"
    assert await store.dequeue_rollout() is None  # it is running again: no second attempt

    await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status="succeeded")
    rollout = await store.get_rollout_by_id(got.rollout_id)
    assert rollout is not None and rollout.status == "succeeded"


async def test_unresponsive_attempt_revived_after_rollout_failed_keeps_rollout_failed(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)  # no retries: unresponsive fails the rollout
    await store.update_attempt(started.rollout_id, "latest", status="unresponsive")
    await add_spans(store, started.rollout_id, started.attempt.attempt_id, 1)
    attempt = await store.get_latest_attempt(started.rollout_id)
    assert attempt is not None and attempt.status == "running"
    rollout = await store.get_rollout_by_id(started.rollout_id)
    assert rollout is not None and rollout.status == "failed"


async def test_timeout_attempt_is_not_revived_by_spans(store: LightningStore) -> None:
    config = RolloutConfig(max_attempts=2, retry_condition=["timeout"])
    started = await store.start_rollout(input=1, config=config)
    timed_out = await store.update_attempt(started.rollout_id, "latest", status="timeout")
    spans = await add_spans(store, started.rollout_id, started.attempt.attempt_id, 2)
    attempt = await store.get_latest_attempt(started.rollout_id)
    assert attempt is not None and attempt.status == "timeout"
    assert attempt.end_time == pytest.approx(timed_out.end_time)
    rollout = await store.get_rollout_by_id(started.rollout_id)
    assert rollout is not None and rollout.status == "requeuing"
    # the spans themselves are kept
    stored = await store.query_spans(started.rollout_id)
    assert [s.span_id for s in stored] == [s.span_id for s in spans]
    with pytest.raises(InvalidTransitionError):
        await store.update_attempt(started.rollout_id, "latest", last_heartbeat_time=time.time(), status="running")


async def test_attempts_of_different_rollouts_are_independent(store: LightningStore) -> None:
    a = await store.start_rollout(input="a")
    b = await store.start_rollout(input="b")
    await store.start_attempt(a.rollout_id)
    assert [x.sequence_id for x in await store.query_attempts(a.rollout_id)] == [1, 2]
    assert [x.sequence_id for x in await store.query_attempts(b.rollout_id)] == [1]


@pytest.mark.parametrize("ended", ["succeeded", "failed"])
async def test_an_attempt_its_runner_ended_takes_no_more_spans(store: LightningStore, ended: str) -> None:
    config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
    started = await store.start_rollout(input=1, config=config)
    rollout_id, attempt_id = started.rollout_id, started.attempt.attempt_id
    kept = await add_spans(store, rollout_id, attempt_id, 1)
    await store.update_attempt(rollout_id, attempt_id, status=ended)
    # the sequence id is the rollout's counter (shared with its next attempt), so it is still issued
    late = make_span(rollout_id, attempt_id, await store.get_next_span_sequence_id(rollout_id, attempt_id))
    before = await snapshot(store)
    with pytest.raises(InvalidTransitionError) as info:
        await store.add_many_spans([late])
    assert attempt_id in str(info.value) and rollout_id in str(info.value) and ended in str(info.value)
    assert info.value.current == ended
    after = await snapshot(store)
    assert after == before  # nothing stored, the attempt not revived
    assert [s.span_id for s in await store.query_spans(rollout_id)] == [s.span_id for s in kept]
    # a batch is all or nothing: a good span beside the late one is not stored either
    other = await store.start_rollout(input=2)
    good = make_span(other.rollout_id, other.attempt.attempt_id, 1)
    with pytest.raises(InvalidTransitionError):
        await store.add_many_spans([good, late])
    assert (await store.query_spans(other.rollout_id)).total == 0
