"""Rollout lifecycle: enqueue, dequeue, start, running, finished, cancelled, explicit requeue."""

from __future__ import annotations

import time

import pytest
from store_helpers import add_spans, make_span

from agentlightning.errors import InvalidTransitionError
from agentlightning.store.base import LightningStore, is_finished, is_queuing, is_running
from agentlightning.types import AttemptedRollout, EnqueueRolloutRequest, Rollout, RolloutConfig


async def test_enqueue_creates_a_queuing_rollout_without_attempt(store: LightningStore) -> None:
    before = time.time()
    rollout = await store.enqueue_rollout(input={"task": 1}, mode="train", metadata={"k": "v"})
    assert rollout.rollout_id.startswith("ro-")
    assert rollout.status == "queuing" and is_queuing(rollout)
    assert rollout.input == {"task": 1} and rollout.mode == "train" and rollout.metadata == {"k": "v"}
    assert before <= rollout.start_time <= time.time()
    assert rollout.end_time is None
    assert rollout.config == RolloutConfig()

    stored = await store.get_rollout_by_id(rollout.rollout_id)
    assert stored is not None and not isinstance(stored, AttemptedRollout)
    assert stored.model_dump() == rollout.model_dump()
    assert await store.get_latest_attempt(rollout.rollout_id) is None
    assert len(await store.query_attempts(rollout.rollout_id)) == 0


async def test_dequeue_moves_to_preparing_with_attempt_one(store: LightningStore) -> None:
    rollout = await store.enqueue_rollout(input="x")
    got = await store.dequeue_rollout()
    assert isinstance(got, AttemptedRollout)
    assert got.rollout_id == rollout.rollout_id
    assert got.status == "preparing" and is_running(got)
    assert got.attempt.status == "preparing"
    assert got.attempt.sequence_id == 1
    assert got.attempt.attempt_id.startswith("at-")
    assert got.attempt.end_time is None and got.attempt.last_heartbeat_time is None

    stored = await store.get_rollout_by_id(rollout.rollout_id)
    assert isinstance(stored, AttemptedRollout)
    assert stored.status == "preparing"
    assert stored.attempt.attempt_id == got.attempt.attempt_id
    latest = await store.get_latest_attempt(rollout.rollout_id)
    assert latest is not None and latest.attempt_id == got.attempt.attempt_id
    assert await store.dequeue_rollout() is None  # it left the queue


async def test_dequeue_is_fifo_and_empty_queue_gives_none(store: LightningStore) -> None:
    assert await store.dequeue_rollout() is None
    ids = [(await store.enqueue_rollout(input=i)).rollout_id for i in range(5)]
    assert [(await store.dequeue_rollout()).rollout_id for _ in range(5)] == ids  # type: ignore[union-attr]
    assert await store.dequeue_rollout() is None
    assert await store.dequeue_many_rollouts(limit=3) == []


async def test_enqueue_many_preserves_order_and_dequeue_many_honours_limit(store: LightningStore) -> None:
    requests = [EnqueueRolloutRequest(input={"i": i}, mode="val") for i in range(5)]
    created = await store.enqueue_many_rollouts(requests)
    assert [r.input for r in created] == [{"i": i} for i in range(5)]
    assert all(r.status == "queuing" and r.mode == "val" for r in created)
    assert len({r.rollout_id for r in created}) == 5

    first = await store.dequeue_many_rollouts(limit=2)
    assert [r.rollout_id for r in first] == [r.rollout_id for r in created[:2]]
    rest = await store.dequeue_many_rollouts(limit=10)
    assert [r.rollout_id for r in rest] == [r.rollout_id for r in created[2:]]
    assert all(r.attempt.sequence_id == 1 and r.status == "preparing" for r in first + rest)


async def test_first_span_moves_attempt_and_rollout_to_running(store: LightningStore) -> None:
    await store.enqueue_rollout(input=1)
    got = await store.dequeue_rollout()
    assert got is not None
    before = time.time()
    await add_spans(store, got.rollout_id, got.attempt.attempt_id, 1)
    attempt = await store.get_latest_attempt(got.rollout_id)
    assert attempt is not None and attempt.status == "running"
    assert attempt.last_heartbeat_time is not None and attempt.last_heartbeat_time >= before
    rollout = await store.get_rollout_by_id(got.rollout_id)
    assert rollout is not None and rollout.status == "running"


async def test_heartbeat_moves_attempt_and_rollout_to_running(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    beat = time.time()
    attempt = await store.update_attempt(started.rollout_id, started.attempt.attempt_id, last_heartbeat_time=beat)
    assert attempt.status == "running" and attempt.last_heartbeat_time == pytest.approx(beat)
    rollout = await store.get_rollout_by_id(started.rollout_id)
    assert rollout is not None and rollout.status == "running"


@pytest.mark.parametrize("final", ["succeeded", "failed"])
async def test_latest_attempt_finishing_finishes_the_rollout(store: LightningStore, final: str) -> None:
    await store.enqueue_rollout(input=1)
    got = await store.dequeue_rollout()
    assert got is not None
    await add_spans(store, got.rollout_id, got.attempt.attempt_id, 2)
    before = time.time()
    attempt = await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=final)
    assert attempt.status == final
    assert attempt.end_time is not None and attempt.end_time >= before
    rollout = await store.get_rollout_by_id(got.rollout_id)
    assert rollout is not None and rollout.status == final and is_finished(rollout)
    assert rollout.end_time is not None and rollout.end_time >= before
    assert await store.dequeue_rollout() is None  # a failed rollout without retries is not requeued


async def test_start_rollout_bypasses_the_queue(store: LightningStore) -> None:
    queued = await store.enqueue_rollout(input="queued")
    config = RolloutConfig(max_attempts=3, retry_condition=["failed"])
    metadata = {"owner": "me"}
    started = await store.start_rollout(input="direct", mode="test", config=config, metadata=metadata)
    assert started.status == "preparing"
    assert started.attempt.status == "preparing" and started.attempt.sequence_id == 1
    assert started.mode == "test" and started.input == "direct"
    # the caller's objects were copied
    config.max_attempts = 99
    config.retry_condition.append("timeout")
    metadata["owner"] = "someone else"
    stored = await store.get_rollout_by_id(started.rollout_id)
    assert stored is not None
    assert stored.config.max_attempts == 3 and stored.config.retry_condition == ["failed"]
    assert stored.metadata == {"owner": "me"}
    # the queue still holds only the enqueued rollout
    got = await store.dequeue_rollout()
    assert got is not None and got.rollout_id == queued.rollout_id
    assert await store.dequeue_rollout() is None


async def test_enqueue_copies_config_and_metadata(store: LightningStore) -> None:
    config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
    metadata = {"tags": "a"}
    rollout = await store.enqueue_rollout(input=1, config=config, metadata=metadata)
    config.max_attempts = 7
    metadata["tags"] = "b"
    stored = await store.get_rollout_by_id(rollout.rollout_id)
    assert stored is not None and stored.config.max_attempts == 2 and stored.metadata == {"tags": "a"}


async def test_returned_rollouts_are_snapshots(store: LightningStore) -> None:
    rollout = await store.start_rollout(input=1, config=RolloutConfig(max_attempts=2), metadata={"a": 1})
    view = await store.get_rollout_by_id(rollout.rollout_id)
    assert isinstance(view, AttemptedRollout)
    view.status = "succeeded"
    view.config.max_attempts = 9
    view.metadata["a"] = 2  # type: ignore[index]
    view.attempt.status = "failed"
    listed = (await store.query_rollouts())[0]
    listed.config.retry_condition.append("failed")
    listed.metadata["b"] = 3  # type: ignore[index]
    stored = await store.get_rollout_by_id(rollout.rollout_id)
    assert isinstance(stored, AttemptedRollout)
    assert stored.status == "preparing" and stored.attempt.status == "preparing"
    assert stored.config == RolloutConfig(max_attempts=2)
    assert stored.metadata == {"a": 1}


async def test_update_rollout_fields_and_unset_vs_none(store: LightningStore) -> None:
    resources = await store.add_resources({})
    rollout = await store.enqueue_rollout(input="old", mode="train", metadata={"a": 1})
    updated = await store.update_rollout(
        rollout.rollout_id,
        input={"new": True},
        mode="val",
        resources_id=resources.resources_id,
        config=RolloutConfig(timeout_seconds=30.0),
    )
    assert updated.input == {"new": True} and updated.mode == "val"
    assert updated.resources_id == resources.resources_id
    assert updated.config.timeout_seconds == 30.0
    assert updated.metadata == {"a": 1}  # not passed: untouched
    assert updated.status == "queuing"
    cleared = await store.update_rollout(rollout.rollout_id, metadata=None, mode=None)
    assert cleared.metadata is None and cleared.mode is None and cleared.input == {"new": True}
    stored = await store.get_rollout_by_id(rollout.rollout_id)
    assert stored is not None and stored.model_dump() == cleared.model_dump()


@pytest.mark.parametrize("terminal", ["succeeded", "failed", "cancelled"])
@pytest.mark.parametrize("target", ["running", "preparing"])
async def test_update_rollout_cannot_leave_a_terminal_status(store: LightningStore, terminal: str, target: str) -> None:
    started = await store.start_rollout(input=1)
    await store.update_rollout(started.rollout_id, status=terminal)
    with pytest.raises(InvalidTransitionError) as info:
        await store.update_rollout(started.rollout_id, status=target, metadata={"lost": True})
    message = str(info.value)
    assert started.rollout_id in message and terminal in message and target in message
    stored = await store.get_rollout_by_id(started.rollout_id)
    assert stored is not None and stored.status == terminal and stored.metadata is None
    assert stored.end_time is not None


async def test_explicit_requeue_of_a_finished_rollout(store: LightningStore) -> None:
    await store.enqueue_rollout(input=1)
    got = await store.dequeue_rollout()
    assert got is not None
    await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status="succeeded")
    requeued = await store.update_rollout(got.rollout_id, status="queuing")
    assert requeued.status == "queuing" and requeued.end_time is None
    again = await store.dequeue_rollout()
    assert again is not None and again.rollout_id == got.rollout_id
    assert again.attempt.sequence_id == 2 and again.attempt.attempt_id != got.attempt.attempt_id
    assert again.status == "preparing"
    await store.update_attempt(again.rollout_id, "latest", status="succeeded")
    stored = await store.get_rollout_by_id(got.rollout_id)
    assert stored is not None and stored.status == "succeeded"
    assert await store.dequeue_rollout() is None


async def test_explicit_requeuing_of_a_running_rollout(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    await store.update_rollout(started.rollout_id, status="requeuing")
    got = await store.dequeue_rollout()
    assert got is not None and got.rollout_id == started.rollout_id and got.attempt.sequence_id == 2


async def test_requeue_twice_queues_once(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    await store.update_rollout(started.rollout_id, status="failed")
    await store.update_rollout(started.rollout_id, status="queuing")
    await store.update_rollout(started.rollout_id, status="requeuing")
    assert len(await store.dequeue_many_rollouts(limit=5)) == 1


async def test_cancel_running_rollout(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    await add_spans(store, started.rollout_id, started.attempt.attempt_id, 1)
    cancelled = await store.cancel_rollout(started.rollout_id)
    assert cancelled.status == "cancelled" and cancelled.end_time is not None
    done = await store.wait_for_rollouts(rollout_ids=[started.rollout_id], timeout=0)
    assert [r.rollout_id for r in done] == [started.rollout_id]
    assert done[0].status == "cancelled"
    # the runner reports later: the attempt records it, the rollout stays cancelled
    attempt = await store.update_attempt(started.rollout_id, started.attempt.attempt_id, status="succeeded")
    assert attempt.status == "succeeded"
    stored = await store.get_rollout_by_id(started.rollout_id)
    assert stored is not None and stored.status == "cancelled"
    assert stored.end_time == pytest.approx(cancelled.end_time)


async def test_cancel_queued_rollout_removes_it_from_the_queue(store: LightningStore) -> None:
    first = await store.enqueue_rollout(input=1)
    second = await store.enqueue_rollout(input=2)
    await store.cancel_rollout(first.rollout_id)
    got = await store.dequeue_rollout()
    assert got is not None and got.rollout_id == second.rollout_id
    assert await store.dequeue_rollout() is None
    stored = await store.get_rollout_by_id(first.rollout_id)
    assert stored is not None and stored.status == "cancelled"
    assert not isinstance(stored, AttemptedRollout)  # never got an attempt


async def test_cancelled_then_requeued_rollout_is_dequeued_once(store: LightningStore) -> None:
    first = await store.enqueue_rollout(input=1)
    await store.cancel_rollout(first.rollout_id)
    await store.update_rollout(first.rollout_id, status="queuing")
    got = await store.dequeue_many_rollouts(limit=5)
    assert [r.rollout_id for r in got] == [first.rollout_id]
    assert got[0].attempt.sequence_id == 1


async def test_query_rollouts_attaches_latest_attempt(store: LightningStore) -> None:
    queued = await store.enqueue_rollout(input=1)
    started = await store.start_rollout(input=2)
    second = await store.start_attempt(started.rollout_id)
    items = {r.rollout_id: r for r in await store.query_rollouts()}
    assert type(items[queued.rollout_id]) is Rollout
    view = items[started.rollout_id]
    assert isinstance(view, AttemptedRollout) and view.attempt.attempt_id == second.attempt.attempt_id


async def test_span_on_queued_rollout_without_attempt_is_rejected(store: LightningStore) -> None:
    queued = await store.enqueue_rollout(input=1)
    with pytest.raises(ValueError):
        await store.add_span(make_span(queued.rollout_id, "at-none", 1))
    stored = await store.get_rollout_by_id(queued.rollout_id)
    assert stored is not None and stored.status == "queuing"


async def test_enqueue_with_client_request_id_is_idempotent(store: LightningStore) -> None:
    first = await store.enqueue_rollout(input={"n": 1}, client_request_id="req-1")
    again = await store.enqueue_rollout(input={"n": 1}, client_request_id="req-1")
    assert again.rollout_id == first.rollout_id
    other = await store.enqueue_rollout(input={"n": 1}, client_request_id="req-2")
    plain = [await store.enqueue_rollout(input={"n": 1}) for _ in range(2)]
    assert len({first.rollout_id, other.rollout_id, *(r.rollout_id for r in plain)}) == 4
    assert (await store.query_rollouts()).total == 4
    dequeued = await store.dequeue_many_rollouts(limit=10)
    assert [r.rollout_id for r in dequeued] == [first.rollout_id, other.rollout_id] + [r.rollout_id for r in plain]
    # a retried request after the rollout moved on still answers with that rollout, in its current state
    repeat = await store.enqueue_rollout(input={"n": 1}, client_request_id="req-1")
    assert repeat.rollout_id == first.rollout_id and repeat.status == "preparing"
    assert await store.dequeue_rollout() is None


async def test_enqueue_many_with_client_request_ids_is_idempotent(store: LightningStore) -> None:
    batch = [
        EnqueueRolloutRequest(input=1, client_request_id="a"),
        EnqueueRolloutRequest(input=2, client_request_id="b"),
        EnqueueRolloutRequest(input=3, client_request_id="a"),  # repeated inside the batch
        EnqueueRolloutRequest(input=4),
    ]
    created = await store.enqueue_many_rollouts(batch)
    assert created[2].rollout_id == created[0].rollout_id and created[2].input == 1
    assert len({r.rollout_id for r in created}) == 3
    retried = await store.enqueue_many_rollouts(batch[:2] + [EnqueueRolloutRequest(input=5, client_request_id="c")])
    assert [r.rollout_id for r in retried[:2]] == [created[0].rollout_id, created[1].rollout_id]
    assert retried[2].rollout_id not in {r.rollout_id for r in created}
    assert (await store.query_rollouts()).total == 4
    assert len(await store.dequeue_many_rollouts(limit=10)) == 4
