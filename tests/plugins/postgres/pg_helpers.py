"""Helpers shared by the PostgreSQL plugin's tests (imported as a plain module next to them)."""

from __future__ import annotations

import asyncio
import time
from typing import List

import asyncpg

from agentlightning_postgres.store import PostgresLightningStore


def with_options(uri: str, **options: object) -> str:
    """``uri`` with store options added to its query string."""
    query = "&".join(f"{k}={str(v).lower()}" for k, v in options.items())
    return f"{uri}{'&' if '?' in uri else '?'}{query}" if query else uri


async def connect(uri: str) -> asyncpg.Connection:
    """A plain connection to the database of a store URI (its own options stripped)."""
    return await asyncpg.connect(uri.split("?")[0])


# -- work done in other processes (multiprocessing "spawn": these must be importable top-level functions)


def dequeue_until_empty(uri: str, worker_id: str, tasks: int, start_at: float) -> List[str]:
    """From ``start_at`` (time.time()) on, ``tasks`` runners in one process dequeue (and finish)
    rollouts until the queue is empty."""

    async def main() -> List[str]:
        store = PostgresLightningStore.from_uri(uri)
        got: List[str] = []
        await store.query_workers()  # connected before the start
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def runner(index: int) -> None:
            while True:
                rollout = await store.dequeue_rollout(worker_id=f"{worker_id}-{index}")
                if rollout is None:
                    return
                got.append(rollout.rollout_id)
                await store.update_attempt(rollout.rollout_id, rollout.attempt.attempt_id, status="succeeded")

        try:
            await asyncio.gather(*(runner(i) for i in range(tasks)))
        finally:
            await store.close()
        return got

    return asyncio.run(main())


def take_sequence_ids(uri: str, rollout_id: str, attempt_id: str, rounds: int) -> List[int]:
    """Sequence ids for one rollout, one and three at a time."""

    async def main() -> List[int]:
        store = PostgresLightningStore.from_uri(uri)
        ids: List[int] = []
        try:
            for index in range(rounds):
                if index % 2:
                    ids.extend(await store.get_many_span_sequence_ids([(rollout_id, attempt_id)] * 3))
                else:
                    ids.append(await store.get_next_span_sequence_id(rollout_id, attempt_id))
        finally:
            await store.close()
        return ids

    return asyncio.run(main())


def sweep_repeatedly(uri: str, start_at: float, seconds: float) -> int:
    """From ``start_at`` (time.time()) on, call the store for ``seconds``; each call runs the watchdog
    (scan_debounce_seconds=0)."""

    async def main() -> int:
        store = PostgresLightningStore.from_uri(uri + "&scan_debounce_seconds=0")
        await store.query_workers()  # connected before the start
        calls = 0
        try:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await store.query_workers()
                calls += 1
        finally:
            await store.close()
        return calls

    return asyncio.run(main())


def finish_after(uri: str, rollout_id: str, attempt_id: str, delay: float) -> float:
    """Mark an attempt succeeded after ``delay`` seconds; returns when (time.time()) it committed."""

    async def main() -> float:
        store = PostgresLightningStore.from_uri(uri)
        try:
            await asyncio.sleep(delay)
            await store.update_attempt(rollout_id, attempt_id, status="succeeded")
            return time.time()
        finally:
            await store.close()

    return asyncio.run(main())
