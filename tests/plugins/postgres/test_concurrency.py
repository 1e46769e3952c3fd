"""Several processes on one database: exactly-once dequeue, consecutive sequence ids, a watchdog that
fires once, and waits woken by LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, List

import pytest
from pg_helpers import connect, dequeue_until_empty, finish_after, sweep_repeatedly, take_sequence_ids

from agentlightning.types import RolloutConfig
from agentlightning_postgres.store import PostgresLightningStore

pytestmark = pytest.mark.postgres


def _processes(n: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))


async def _in_processes(n: int, fn: Any, *args_per_process: tuple) -> List[Any]:
    loop = asyncio.get_running_loop()
    with _processes(n) as pool:
        return list(await asyncio.gather(*(loop.run_in_executor(pool, fn, *args) for args in args_per_process)))


async def test_each_rollout_is_dequeued_exactly_once_by_runners_in_several_processes(
    open_stores: Any, store_uri: str
) -> None:
    store = open_stores()
    enqueued = [r.rollout_id for r in await store.enqueue_many_rollouts([{"input": i} for i in range(240)])]
    start_at = time.time() + 5.0  # every process is up and connected by then
    results = await _in_processes(4, dequeue_until_empty, *((store_uri, f"p{p}", 4, start_at) for p in range(4)))
    dequeued = [rollout_id for got in results for rollout_id in got]
    assert len(dequeued) == len(set(dequeued)) == 240
    assert set(dequeued) == set(enqueued)
    assert all(len(got) > 0 for got in results), [len(got) for got in results]  # all processes took part
    stats = await store.statistics()
    assert stats["total_attempts"] == 240 and stats["rollouts_by_status"] == {"succeeded": 240}
    assert await store.dequeue_rollout() is None


async def test_sequence_ids_of_a_rollout_are_consecutive_across_processes(open_stores: Any, store_uri: str) -> None:
    store = open_stores()
    started = await store.start_rollout(input="shared")
    assert await store.get_next_span_sequence_id(started.rollout_id, started.attempt.attempt_id) == 1
    results = await _in_processes(
        4, take_sequence_ids, *((store_uri, started.rollout_id, started.attempt.attempt_id, 50) for _ in range(4))
    )
    issued = sorted(i for ids in results for i in ids)
    assert issued == list(range(2, 2 + 4 * (25 + 25 * 3)))  # unique, no gaps
    for ids in results:
        assert ids == sorted(ids)  # increasing within each process
    assert await store.get_next_span_sequence_id(started.rollout_id, started.attempt.attempt_id) == issued[-1] + 1


async def test_concurrent_watchdog_sweeps_end_each_attempt_once(open_stores: Any, store_uri: str) -> None:
    store = open_stores(watchdog=False)
    conn = await connect(store_uri)
    try:
        # Count every write of an attempt with status 'timeout', whoever writes it.
        await conn.execute(f"""
            SET search_path = {store.schema};
            CREATE TABLE timeouts_seen (rollout_id text, attempt_id text);
            CREATE FUNCTION count_timeout() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF (NEW.data::json ->> 'status') = 'timeout' THEN
                    INSERT INTO timeouts_seen VALUES (NEW.rollout_id, NEW.attempt_id);
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER count_timeout AFTER UPDATE ON attempts FOR EACH ROW EXECUTE FUNCTION count_timeout();
        """)
        # The attempts time out just as four processes start sweeping at the same moment.
        start_at = time.time() + 4.0
        config = RolloutConfig(timeout_seconds=3.9, max_attempts=2, retry_condition=["timeout"])
        await store.enqueue_many_rollouts([{"input": i, "config": config} for i in range(60)])
        first = await store.dequeue_many_rollouts(limit=60, worker_id="w")
        assert len(first) == 60
        calls = await _in_processes(4, sweep_repeatedly, *((store_uri, start_at, 1.0) for _ in range(4)))
        assert all(c > 3 for c in calls), calls  # they really swept concurrently
        seen = await conn.fetch(f"SELECT rollout_id, attempt_id FROM {store.schema}.timeouts_seen")
    finally:
        await conn.close()
    assert sorted((r["rollout_id"], r["attempt_id"]) for r in seen) == sorted(
        (r.rollout_id, r.attempt.attempt_id) for r in first
    )
    # Each timed-out rollout was requeued once: 60 queued again, each with exactly one attempt.
    requeued = await store.query_rollouts(status_in=["requeuing"])
    assert len(requeued) == 60 and all(r.attempt.sequence_id == 1 for r in requeued)
    second = await store.dequeue_many_rollouts(limit=100)
    assert len(second) == 60 and all(r.attempt.sequence_id == 2 for r in second)


async def test_a_wait_is_woken_by_a_notification_from_another_process_not_by_polling(
    open_stores: Any, store_uri: str
) -> None:
    store = open_stores()
    started = await store.start_rollout(input="wait for me")
    calls = 0
    run = store._run

    async def counting_run(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await run(*args, **kwargs)

    store._run = counting_run  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    with _processes(1) as pool:
        finisher = loop.run_in_executor(
            pool, finish_after, store_uri, started.rollout_id, started.attempt.attempt_id, 3.0
        )
        finished = await store.wait_for_rollouts(rollout_ids=[started.rollout_id], timeout=60)
        woke_at = time.time()
        committed_at = await finisher
    assert [r.status for r in finished] == ["succeeded"]
    assert woke_at - committed_at < 1.0, woke_at - committed_at
    # Three seconds of waiting cost two rounds of (watchdog, read): before sleeping and after the wake.
    assert calls <= 4, calls


async def test_a_wait_wakes_when_the_watchdog_of_another_process_ends_the_rollout(open_stores: Any) -> None:
    waiting = open_stores(watchdog=False)  # this store never sweeps itself
    sweeping = open_stores(scan_debounce_seconds=0)
    started = await waiting.start_rollout(input="x", config=RolloutConfig(timeout_seconds=0.5))

    async def sweep_later() -> None:
        await asyncio.sleep(0.8)
        await sweeping.query_workers()

    sweeper = asyncio.create_task(sweep_later())
    t0 = time.monotonic()
    finished = await waiting.wait_for_rollouts(rollout_ids=[started.rollout_id], timeout=30)
    await sweeper
    assert [r.status for r in finished] == ["failed"] and time.monotonic() - t0 < 5


async def test_a_store_used_from_several_event_loops_in_threads(open_stores: Any) -> None:
    store: PostgresLightningStore = open_stores()
    rollout = await store.enqueue_rollout(input="threads")

    def in_thread() -> str:
        async def main() -> str:
            got = await store.dequeue_rollout(worker_id="thread")
            assert got is not None
            await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status="succeeded")
            return got.rollout_id

        return asyncio.run(main())

    waiter = asyncio.create_task(store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=30))
    assert await asyncio.to_thread(in_thread) == rollout.rollout_id
    assert [r.status for r in await waiter] == ["succeeded"]


async def test_calls_from_many_short_lived_event_loops_do_not_pile_up_connections(
    open_stores: Any, store_uri: str
) -> None:
    store: PostgresLightningStore = open_stores()

    def one_call(index: int) -> None:
        asyncio.run(store.enqueue_rollout(input=index))  # a new event loop each time, as sync callers do

    for index in range(40):
        await asyncio.to_thread(one_call, index)
    gc.collect()
    await asyncio.sleep(0.5)  # the server notices the closed sockets
    conn = await connect(store_uri)
    try:
        open_connections = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'agentlightning' AND query NOT LIKE '%SELECT count(*)%'"
        )
    finally:
        await conn.close()
    assert len(await store.query_rollouts()) == 40
    assert open_connections <= 5, open_connections
