"""The watchdog: attempts that run too long (timeout) or go silent (unresponsive).

Stores are built with ``scan_debounce_seconds=0`` so every call scans; the time limits are a few
tenths of a second.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from store_helpers import StoreFactory, add_spans

from agentlightning.errors import InvalidTransitionError
from agentlightning.store.base import LightningStore
from agentlightning.types import RolloutConfig


def _eager(store_factory: StoreFactory) -> LightningStore:
    return store_factory(scan_debounce_seconds=0)


async def test_timeout_counts_from_attempt_start_even_with_heartbeats(store_factory: StoreFactory) -> None:
    store = _eager(store_factory)
    started = await store.start_rollout(input=1, config=RolloutConfig(timeout_seconds=0.3), worker_id="w-1")
    rid, aid = started.rollout_id, started.attempt.attempt_id
    deadline = started.attempt.start_time + 0.3
    while time.time() < deadline - 0.1:  # busy and alive the whole time
        await add_spans(store, rid, aid, 1)
        attempt = await store.get_latest_attempt(rid)
        assert attempt is not None and attempt.status == "running"
        await asyncio.sleep(0.05)
    await asyncio.sleep(max(0.0, deadline - time.time()) + 0.05)
    attempt = await store.get_latest_attempt(rid)
    assert attempt is not None and attempt.status == "timeout"
    assert attempt.end_time is not None and attempt.end_time >= deadline
    rollout = await store.get_rollout_by_id(rid)
    assert rollout is not None and rollout.status == "failed" and rollout.end_time is not None
    worker = await store.get_worker_by_id("w-1")
    assert worker is not None and worker.status == "unknown" and worker.current_attempt_id is None
    # timeout is final: the runner's late report is refused and the rollout stays failed
    with pytest.raises(InvalidTransitionError):
        await store.update_attempt(rid, aid, status="succeeded")
    rollout = await store.get_rollout_by_id(rid)
    assert rollout is not None and rollout.status == "failed"


async def test_unresponsive_counts_from_last_heartbeat(store_factory: StoreFactory) -> None:
    store = _eager(store_factory)
    started = await store.start_rollout(input=1, config=RolloutConfig(unresponsive_seconds=0.4))
    rid, aid = started.rollout_id, started.attempt.attempt_id
    await asyncio.sleep(0.25)
    beat = time.time()
    await store.update_attempt(rid, aid, last_heartbeat_time=beat)
    await asyncio.sleep(0.25)  # 0.5 s after start, 0.25 s after the heartbeat
    if time.time() - beat < 0.4:
        attempt = await store.get_latest_attempt(rid)
        assert attempt is not None and attempt.status == "running"
    await asyncio.sleep(max(0.0, beat + 0.4 - time.time()) + 0.05)
    attempt = await store.get_latest_attempt(rid)
    assert attempt is not None and attempt.status == "unresponsive"
    assert attempt.end_time is not None
    rollout = await store.get_rollout_by_id(rid)
    assert rollout is not None and rollout.status == "failed"


async def test_unresponsive_without_any_heartbeat_counts_from_start(store_factory: StoreFactory) -> None:
    store = _eager(store_factory)
    started = await store.start_rollout(input=1, config=RolloutConfig(unresponsive_seconds=0.2))
    attempt = await store.get_latest_attempt(started.rollout_id)
    assert attempt is not None and attempt.status == "preparing"
    await asyncio.sleep(0.25)
    attempt = await store.get_latest_attempt(started.rollout_id)
    assert attempt is not None and attempt.status == "unresponsive"


async def test_spans_keep_an_attempt_responsive(store_factory: StoreFactory) -> None:
    store = _eager(store_factory)
    started = await store.start_rollout(input=1, config=RolloutConfig(unresponsive_seconds=0.3))
    rid, aid = started.rollout_id, started.attempt.attempt_id
    for _ in range(6):  # 0.6 s in total, a span every 0.1 s
        await add_spans(store, rid, aid, 1)
        await asyncio.sleep(0.1)
        attempt = await store.get_latest_attempt(rid)
        assert attempt is not None and attempt.status == "running"
    await store.update_attempt(rid, aid, status="succeeded")
    rollout = await store.get_rollout_by_id(rid)
    assert rollout is not None and rollout.status == "succeeded"


@pytest.mark.parametrize("kind", ["timeout", "unresponsive"])
async def test_watchdog_with_retries_requeues(store_factory: StoreFactory, kind: str) -> None:
    store = _eager(store_factory)
    limit = {"timeout_seconds": 0.2} if kind == "timeout" else {"unresponsive_seconds": 0.2}
    config = RolloutConfig(max_attempts=2, retry_condition=[kind], **limit)  # type: ignore[arg-type]
    await store.enqueue_rollout(input=1, config=config)
    first = await store.dequeue_rollout(worker_id="w-1")
    assert first is not None
    await asyncio.sleep(0.25)
    second = await store.dequeue_rollout(worker_id="w-2")  # the scan before the dequeue requeues it
    assert second is not None and second.rollout_id == first.rollout_id
    assert second.attempt.sequence_id == 2
    attempts = await store.query_attempts(first.rollout_id)
    assert [a.status for a in attempts] == [kind, "preparing"]
    assert (await store.get_worker_by_id("w-1")).status == "unknown"  # type: ignore[union-attr]
    assert (await store.get_worker_by_id("w-2")).status == "busy"  # type: ignore[union-attr]
    # the second attempt runs out as well: the budget is spent
    await asyncio.sleep(0.25)
    rollout = await store.get_rollout_by_id(first.rollout_id)
    assert rollout is not None and rollout.status == "failed"
    assert await store.dequeue_rollout() is None


async def test_wait_for_rollouts_wakes_when_the_watchdog_fails_a_rollout(store_factory: StoreFactory) -> None:
    # default debounce: nothing else calls the store while we wait; the wait itself must notice
    store = store_factory(scan_debounce_seconds=5.0)
    started = await store.start_rollout(input=1, config=RolloutConfig(timeout_seconds=0.2))
    t0 = time.monotonic()
    done = await store.wait_for_rollouts(rollout_ids=[started.rollout_id], timeout=10)
    elapsed = time.monotonic() - t0
    assert [r.rollout_id for r in done] == [started.rollout_id]
    assert done[0].status == "failed"
    assert 0.1 <= elapsed < 2.0


async def test_wait_for_rollouts_wakes_when_an_unresponsive_rollout_fails(store_factory: StoreFactory) -> None:
    store = store_factory(scan_debounce_seconds=5.0)
    started = await store.start_rollout(input=1, config=RolloutConfig(unresponsive_seconds=0.2))
    await add_spans(store, started.rollout_id, started.attempt.attempt_id, 1)
    t0 = time.monotonic()
    done = await store.wait_for_rollouts(rollout_ids=[started.rollout_id], timeout=10)
    assert [r.status for r in done] == ["failed"]
    assert time.monotonic() - t0 < 2.0


async def test_debounce_limits_scans_but_wait_forces_one(store_factory: StoreFactory) -> None:
    store = store_factory(scan_debounce_seconds=60.0)
    started = await store.start_rollout(input=1, config=RolloutConfig(timeout_seconds=0.1))  # first scan now
    await asyncio.sleep(0.2)
    attempt = await store.get_latest_attempt(started.rollout_id)
    assert attempt is not None and attempt.status == "preparing"  # no scan within the debounce interval
    done = await store.wait_for_rollouts(rollout_ids=[started.rollout_id], timeout=0)
    assert [r.status for r in done] == ["failed"]


async def test_watchdog_disabled(store_factory: StoreFactory) -> None:
    store = store_factory(watchdog=False, scan_debounce_seconds=0)
    started = await store.start_rollout(input=1, config=RolloutConfig(timeout_seconds=0.1, unresponsive_seconds=0.1))
    await asyncio.sleep(0.15)
    assert await store.wait_for_rollouts(rollout_ids=[started.rollout_id], timeout=0.1) == []
    attempt = await store.get_latest_attempt(started.rollout_id)
    assert attempt is not None and attempt.status == "preparing"


async def test_watchdog_ignores_finished_and_queued_rollouts(store_factory: StoreFactory) -> None:
    store = _eager(store_factory)
    config = RolloutConfig(timeout_seconds=0.1)
    queued = await store.enqueue_rollout(input=1, config=config)
    done = await store.start_rollout(input=2, config=config)
    await store.update_attempt(done.rollout_id, "latest", status="succeeded")
    await asyncio.sleep(0.15)
    assert (await store.get_rollout_by_id(queued.rollout_id)).status == "queuing"  # type: ignore[union-attr]
    assert (await store.get_rollout_by_id(done.rollout_id)).status == "succeeded"  # type: ignore[union-attr]
    assert (await store.get_latest_attempt(done.rollout_id)).status == "succeeded"  # type: ignore[union-attr]
    # the queued one's clock starts when it is dequeued
    got = await store.dequeue_rollout()
    assert got is not None and got.rollout_id == queued.rollout_id and got.attempt.status == "preparing"


async def test_watchdog_survives_a_running_rollout_without_attempt(store_factory: StoreFactory) -> None:
    """``update_rollout(status="running")`` on a queued rollout leaves it without attempt; scans must cope."""
    store = _eager(store_factory)
    queued = await store.enqueue_rollout(input=1, config=RolloutConfig(timeout_seconds=0.1, unresponsive_seconds=0.1))
    await store.update_rollout(queued.rollout_id, status="running")
    await asyncio.sleep(0.15)
    other = await store.start_rollout(input=2)
    assert other.status == "preparing"
    assert (await store.query_rollouts()).total == 2
    assert await store.wait_for_rollouts(rollout_ids=[queued.rollout_id], timeout=0.05) == []
