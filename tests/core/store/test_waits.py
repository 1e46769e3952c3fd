"""wait_for_rollouts, and the store used from many tasks, threads and event loops at once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
from store_helpers import make_span

from agentlightning.store.base import LightningStore


async def _finish_later(store: LightningStore, rollout_id: str, delay: float, status: str = "succeeded") -> None:
    await asyncio.sleep(delay)
    await store.update_attempt(rollout_id, "latest", status=status)


async def test_timeout_returns_the_finished_subset(store: LightningStore) -> None:
    done = await store.start_rollout(input=1)
    pending = await store.start_rollout(input=2)
    failed = await store.start_rollout(input=3)
    await store.update_attempt(done.rollout_id, "latest", status="succeeded")
    await store.update_attempt(failed.rollout_id, "latest", status="failed")
    t0 = time.monotonic()
    result = await store.wait_for_rollouts(
        rollout_ids=[pending.rollout_id, failed.rollout_id, done.rollout_id], timeout=0.2
    )
    elapsed = time.monotonic() - t0
    assert [(r.rollout_id, r.status) for r in result] == [(failed.rollout_id, "failed"), (done.rollout_id, "succeeded")]
    assert 0.15 <= elapsed < 1.5


async def test_timeout_zero_is_an_immediate_check(store: LightningStore) -> None:
    done = await store.start_rollout(input=1)
    pending = await store.start_rollout(input=2)
    await store.update_attempt(done.rollout_id, "latest", status="succeeded")
    t0 = time.monotonic()
    result = await store.wait_for_rollouts(rollout_ids=[done.rollout_id, pending.rollout_id], timeout=0)
    assert [r.rollout_id for r in result] == [done.rollout_id]
    assert await store.wait_for_rollouts(rollout_ids=[pending.rollout_id], timeout=0) == []
    assert await store.wait_for_rollouts(rollout_ids=[pending.rollout_id], timeout=-1) == []
    assert time.monotonic() - t0 < 0.5


async def test_wait_returns_as_soon_as_all_are_done(store: LightningStore) -> None:
    a = await store.start_rollout(input=1)
    b = await store.start_rollout(input=2)
    writers = [
        asyncio.create_task(_finish_later(store, a.rollout_id, 0.05)),
        asyncio.create_task(_finish_later(store, b.rollout_id, 0.15, "failed")),
    ]
    t0 = time.monotonic()
    result = await store.wait_for_rollouts(rollout_ids=[a.rollout_id, b.rollout_id], timeout=10)
    elapsed = time.monotonic() - t0
    assert {r.rollout_id: r.status for r in result} == {a.rollout_id: "succeeded", b.rollout_id: "failed"}
    assert elapsed < 2.0
    await asyncio.gather(*writers)


async def test_wait_without_timeout_waits_until_done(store: LightningStore) -> None:
    queued = await store.enqueue_rollout(input=1)

    async def runner() -> None:
        await asyncio.sleep(0.05)
        got = await store.dequeue_rollout()
        assert got is not None
        await store.add_span(make_span(got.rollout_id, got.attempt.attempt_id, 1))
        await asyncio.sleep(0.05)
        await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status="succeeded")

    task = asyncio.create_task(runner())
    result = await asyncio.wait_for(store.wait_for_rollouts(rollout_ids=[queued.rollout_id]), timeout=5)
    assert [(r.rollout_id, r.status) for r in result] == [(queued.rollout_id, "succeeded")]
    await task


async def test_wait_without_timeout_is_cancellable(store: LightningStore) -> None:
    pending = await store.start_rollout(input=1)
    waiter = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[pending.rollout_id]))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # the store still works and later waiters still wake
    late = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[pending.rollout_id], timeout=5))
    await asyncio.sleep(0.02)
    await store.update_attempt(pending.rollout_id, "latest", status="succeeded")
    assert [r.status for r in await late] == ["succeeded"]


async def test_unknown_ids_are_omitted(store: LightningStore) -> None:
    done = await store.start_rollout(input=1)
    await store.update_attempt(done.rollout_id, "latest", status="succeeded")
    t0 = time.monotonic()
    result = await store.wait_for_rollouts(rollout_ids=["ro-nope", done.rollout_id, "ro-nope-2"], timeout=5)
    assert [r.rollout_id for r in result] == [done.rollout_id]
    assert await store.wait_for_rollouts(rollout_ids=["ro-nope"], timeout=None) == []
    assert await store.wait_for_rollouts(rollout_ids=[], timeout=None) == []
    assert time.monotonic() - t0 < 1.0  # unknown ids are not waited for


async def test_many_waiters_on_one_rollout_all_wake(store: LightningStore) -> None:
    target = await store.start_rollout(input=1)
    other = await store.start_rollout(input=2)
    waiters = [
        asyncio.create_task(store.wait_for_rollouts(rollout_ids=[target.rollout_id], timeout=10)) for _ in range(20)
    ]
    combined = asyncio.create_task(
        store.wait_for_rollouts(rollout_ids=[target.rollout_id, other.rollout_id], timeout=10)
    )
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    await store.update_attempt(target.rollout_id, "latest", status="succeeded")
    results = await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert all([r.rollout_id for r in result] == [target.rollout_id] for result in results)
    await asyncio.sleep(0.05)
    assert not combined.done()  # still waiting for the other one
    await store.cancel_rollout(other.rollout_id)
    combined_result = await asyncio.wait_for(combined, timeout=5)
    assert {r.rollout_id: r.status for r in combined_result} == {
        target.rollout_id: "succeeded",
        other.rollout_id: "cancelled",
    }


async def test_waiter_in_another_thread_wakes(store: LightningStore) -> None:
    pending = await store.start_rollout(input=1)
    outcome: Dict[str, Any] = {}

    def wait_in_thread() -> None:
        t0 = time.monotonic()
        try:
            outcome["result"] = asyncio.run(store.wait_for_rollouts(rollout_ids=[pending.rollout_id], timeout=10))
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=wait_in_thread)
    thread.start()
    await asyncio.sleep(0.1)
    assert thread.is_alive()
    await store.update_attempt(pending.rollout_id, "latest", status="succeeded")  # written from this loop
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert [r.status for r in outcome["result"]] == ["succeeded"]
    assert outcome["elapsed"] < 5


async def test_writer_in_another_thread_wakes_this_loop(store: LightningStore) -> None:
    pending = await store.start_rollout(input=1)
    errors: List[BaseException] = []

    def write_in_thread() -> None:
        async def write() -> None:
            await asyncio.sleep(0.05)
            await store.add_span(make_span(pending.rollout_id, pending.attempt.attempt_id, 1))
            await store.update_attempt(pending.rollout_id, "latest", status="succeeded")

        try:
            asyncio.run(write())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write_in_thread)
    thread.start()
    t0 = time.monotonic()
    result = await store.wait_for_rollouts(rollout_ids=[pending.rollout_id], timeout=10)
    assert time.monotonic() - t0 < 5
    await asyncio.to_thread(thread.join, 5)
    assert not errors, errors
    assert [r.status for r in result] == ["succeeded"]
    assert (await store.query_spans(pending.rollout_id)).total == 1


async def test_concurrent_tasks_and_threads(store: LightningStore) -> None:
    """8 asyncio tasks and 2 threads (each with its own event loop) enqueue, dequeue, trace and finish."""
    per_worker = 20
    spans_per_rollout = 3
    enqueued: List[str] = []
    dequeued: List[str] = []
    record = threading.Lock()

    async def process(worker_id: str, got: Any) -> None:
        with record:
            dequeued.append(got.rollout_id)
        for index in range(spans_per_rollout):
            seq = await store.get_next_span_sequence_id(got.rollout_id, got.attempt.attempt_id)
            await store.add_span(make_span(got.rollout_id, got.attempt.attempt_id, seq, name=f"{worker_id}-{index}"))
            await asyncio.sleep(0)
        await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status="succeeded")

    async def worker(worker_id: str) -> None:
        for i in range(per_worker):
            rollout = await store.enqueue_rollout(input={"worker": worker_id, "i": i})
            with record:
                enqueued.append(rollout.rollout_id)
            got = await store.dequeue_rollout(worker_id=worker_id)
            if got is not None:
                await process(worker_id, got)
            await asyncio.sleep(0)
        while True:  # help drain the queue
            got = await store.dequeue_rollout(worker_id=worker_id)
            if got is None:
                break
            await process(worker_id, got)

    errors: List[BaseException] = []

    def thread_main(worker_id: str) -> None:
        try:
            asyncio.run(worker(worker_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread_main, args=(f"thread-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    await asyncio.gather(*(worker(f"task-{n}") for n in range(8)))
    for thread in threads:
        await asyncio.to_thread(thread.join, 60)
        assert not thread.is_alive()
    assert not errors, errors

    # leftovers (enqueued by a slow thread after everyone else drained) are processed here
    while (got := await store.dequeue_rollout(worker_id="cleanup")) is not None:
        await process("cleanup", got)

    total = 10 * per_worker
    assert len(enqueued) == total and len(set(enqueued)) == total
    assert sorted(dequeued) == sorted(enqueued)  # every rollout dequeued exactly once
    rollouts = await store.query_rollouts()
    assert rollouts.total == total
    assert all(r.status == "succeeded" for r in rollouts)
    stats = await store.statistics()
    assert stats["total_attempts"] == total
    assert stats["total_spans"] == total * spans_per_rollout
    for rollout_id in enqueued:
        attempts = await store.query_attempts(rollout_id)
        assert [a.status for a in attempts] == ["succeeded"]
        spans = await store.query_spans(rollout_id)
        sequence_ids = [s.sequence_id for s in spans]
        assert len(sequence_ids) == spans_per_rollout
        assert sorted(sequence_ids) == list(range(1, spans_per_rollout + 1))  # unique, none skipped
    idle: Optional[Any] = await store.query_workers(status_in=["busy"])
    assert idle is not None and len(idle) == 0
