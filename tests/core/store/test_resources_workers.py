"""Resources (versioned, latest pinned at enqueue) and workers (status derived from their attempts)."""

from __future__ import annotations

import asyncio
import time

from store_helpers import add_spans

from agentlightning.store.base import LightningStore
from agentlightning.types import LLM, PromptTemplate


def _resources(tag: str) -> dict:
    return {
        "llm": LLM(endpoint=f"http://localhost:1234/{tag}/v1", model=f"model-{tag}"),
        "prompt": PromptTemplate(template=f"Solve {{task}} ({tag})", engine="f-string"),
    }


# -- resources ------------------------------------------------------------------------------------
async def test_add_resources_creates_unique_ids_at_version_one(store: LightningStore) -> None:
    assert await store.get_latest_resources() is None
    first = await store.add_resources(_resources("a"))
    second = await store.add_resources(_resources("b"))
    assert first.resources_id.startswith("rs-") and second.resources_id.startswith("rs-")
    assert first.resources_id != second.resources_id
    assert first.version == 1 and second.version == 1
    assert first.create_time == first.update_time
    latest = await store.get_latest_resources()
    assert latest is not None and latest.resources_id == second.resources_id
    stored = await store.get_resources_by_id(first.resources_id)
    assert stored is not None and stored.model_dump() == first.model_dump()
    assert isinstance(stored.resources["llm"], LLM) and stored.resources["llm"].model == "model-a"
    assert isinstance(stored.resources["prompt"], PromptTemplate)


async def test_update_resources_bumps_version_and_keeps_create_time(store: LightningStore) -> None:
    first = await store.add_resources(_resources("a"))
    other = await store.add_resources(_resources("b"))
    await asyncio.sleep(0.01)
    updated = await store.update_resources(first.resources_id, _resources("a2"))
    assert updated.resources_id == first.resources_id
    assert updated.version == 2
    assert updated.create_time == first.create_time
    assert updated.update_time > first.update_time
    assert updated.resources["llm"].model == "model-a2"  # type: ignore[union-attr]
    again = await store.update_resources(first.resources_id, _resources("a3"))
    assert again.version == 3
    latest = await store.get_latest_resources()
    assert latest is not None and latest.resources_id == first.resources_id and latest.version == 3
    untouched = await store.get_resources_by_id(other.resources_id)
    assert untouched is not None and untouched.version == 1


async def test_update_resources_with_unknown_id_creates_it(store: LightningStore) -> None:
    await store.add_resources(_resources("a"))
    created = await store.update_resources("my-own-id", _resources("mine"))
    assert created.resources_id == "my-own-id" and created.version == 1
    latest = await store.get_latest_resources()
    assert latest is not None and latest.resources_id == "my-own-id"
    assert (await store.get_resources_by_id("my-own-id")) is not None
    assert (await store.update_resources("my-own-id", _resources("mine2"))).version == 2


async def test_enqueue_pins_the_latest_resources_at_enqueue_time(store: LightningStore) -> None:
    none_yet = await store.enqueue_rollout(input=0)
    assert none_yet.resources_id is None
    first = await store.add_resources(_resources("a"))
    r1 = await store.enqueue_rollout(input=1)
    s1 = await store.start_rollout(input=1)
    second = await store.add_resources(_resources("b"))
    r2 = await store.enqueue_rollout(input=2)
    explicit = await store.enqueue_rollout(input=3, resources_id=first.resources_id)
    assert r1.resources_id == first.resources_id and s1.resources_id == first.resources_id
    assert r2.resources_id == second.resources_id
    assert explicit.resources_id == first.resources_id
    await store.update_resources(first.resources_id, _resources("a2"))  # now latest again
    r3 = await store.enqueue_rollout(input=4)
    assert r3.resources_id == first.resources_id
    # pinned at enqueue time: dequeuing later does not change it
    await store.dequeue_many_rollouts(limit=10)
    stored = await store.get_rollout_by_id(r2.rollout_id)
    assert stored is not None and stored.resources_id == second.resources_id


async def test_get_resources_unknown_id(store: LightningStore) -> None:
    assert await store.get_resources_by_id("rs-missing") is None


async def test_query_resources_filters_and_pagination(store: LightningStore) -> None:
    ids = [(await store.add_resources(_resources(str(i)))).resources_id for i in range(4)]
    await store.update_resources(ids[1], _resources("1b"))
    everything = await store.query_resources()
    assert everything.total == 4 and sorted(r.resources_id for r in everything) == sorted(ids)
    page = await store.query_resources(sort_by="resources_id", limit=2, offset=1)
    assert [r.resources_id for r in page] == sorted(ids)[1:3]
    assert (page.limit, page.offset, page.total) == (2, 1, 4)
    by_version = await store.query_resources(sort_by="version", sort_order="desc", limit=1)
    assert [r.resources_id for r in by_version] == [ids[1]]
    by_time = await store.query_resources(sort_by="update_time", sort_order="desc")
    assert by_time[0].resources_id == ids[1]
    exact = await store.query_resources(resources_id=ids[2])
    assert [r.resources_id for r in exact] == [ids[2]]
    contains = await store.query_resources(resources_id_contains=ids[3][3:])
    assert [r.resources_id for r in contains] == [ids[3]]
    assert len(await store.query_resources(resources_id="rs-none")) == 0
    assert len(await store.query_resources(limit=0)) == 0


async def test_returned_resources_are_snapshots(store: LightningStore) -> None:
    added = await store.add_resources(_resources("a"))
    added.resources["llm"].model = "mutated"  # type: ignore[union-attr]
    added.resources["extra"] = PromptTemplate(template="x", engine="f-string")
    latest = await store.get_latest_resources()
    assert latest is not None and set(latest.resources) == {"llm", "prompt"}
    assert latest.resources["llm"].model == "model-a"  # type: ignore[union-attr]
    latest.resources["llm"].model = "mutated again"  # type: ignore[union-attr]
    again = await store.get_resources_by_id(added.resources_id)
    assert again is not None and again.resources["llm"].model == "model-a"  # type: ignore[union-attr]


# -- workers --------------------------------------------------------------------------------------
async def test_dequeue_with_worker_marks_it_busy(store: LightningStore) -> None:
    await store.enqueue_rollout(input=1)
    before = time.time()
    got = await store.dequeue_rollout(worker_id="w-1")
    assert got is not None and got.attempt.worker_id == "w-1"
    worker = await store.get_worker_by_id("w-1")
    assert worker is not None and worker.status == "busy"
    assert worker.current_rollout_id == got.rollout_id and worker.current_attempt_id == got.attempt.attempt_id
    assert worker.last_dequeue_time is not None and worker.last_dequeue_time >= before
    assert worker.last_busy_time is not None and worker.last_busy_time >= before


async def test_finished_attempt_makes_worker_idle(store: LightningStore) -> None:
    for status in ("succeeded", "failed"):
        await store.enqueue_rollout(input=status)
        got = await store.dequeue_rollout(worker_id="w-1")
        assert got is not None
        await add_spans(store, got.rollout_id, got.attempt.attempt_id, 1)
        busy = await store.get_worker_by_id("w-1")
        assert busy is not None and busy.status == "busy"
        before = time.time()
        await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=status)
        worker = await store.get_worker_by_id("w-1")
        assert worker is not None and worker.status == "idle"
        assert worker.current_rollout_id is None and worker.current_attempt_id is None
        assert worker.last_idle_time is not None and worker.last_idle_time >= before


async def test_lost_attempt_makes_worker_unknown(store: LightningStore) -> None:
    for status in ("timeout", "unresponsive"):
        started = await store.start_rollout(input=status, worker_id="w-1")
        assert (await store.get_worker_by_id("w-1")).status == "busy"  # type: ignore[union-attr]
        await store.update_attempt(started.rollout_id, started.attempt.attempt_id, status=status)
        worker = await store.get_worker_by_id("w-1")
        assert worker is not None and worker.status == "unknown"
        assert worker.current_rollout_id is None and worker.current_attempt_id is None


async def test_empty_dequeue_makes_worker_idle(store: LightningStore) -> None:
    before = time.time()
    assert await store.dequeue_rollout(worker_id="w-idle") is None
    worker = await store.get_worker_by_id("w-idle")
    assert worker is not None and worker.status == "idle"
    assert worker.last_dequeue_time is not None and worker.last_dequeue_time >= before
    assert worker.last_idle_time is not None


async def test_stale_attempt_does_not_idle_a_worker_busy_elsewhere(store: LightningStore) -> None:
    old = await store.start_rollout(input="old", worker_id="w-1")
    new = await store.start_rollout(input="new", worker_id="w-1")
    await store.update_attempt(old.rollout_id, old.attempt.attempt_id, status="succeeded")
    worker = await store.get_worker_by_id("w-1")
    assert worker is not None and worker.status == "busy"
    assert worker.current_rollout_id == new.rollout_id and worker.current_attempt_id == new.attempt.attempt_id


async def test_update_attempt_worker_id_assigns_the_worker(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    attempt = await store.update_attempt(started.rollout_id, "latest", worker_id="w-late")
    assert attempt.worker_id == "w-late"
    worker = await store.get_worker_by_id("w-late")
    assert worker is not None and worker.status == "busy" and worker.current_rollout_id == started.rollout_id


async def test_update_worker_heartbeat(store: LightningStore) -> None:
    assert await store.get_worker_by_id("w-hb") is None
    before = time.time()
    worker = await store.update_worker("w-hb", heartbeat_stats={"cpu": 0.5})
    assert worker.worker_id == "w-hb" and worker.status == "unknown"
    assert worker.heartbeat_stats == {"cpu": 0.5}
    assert worker.last_heartbeat_time is not None and worker.last_heartbeat_time >= before
    again = await store.update_worker("w-hb")  # heartbeat without stats keeps the last ones
    assert again.heartbeat_stats == {"cpu": 0.5} and again.last_heartbeat_time >= worker.last_heartbeat_time  # type: ignore[operator]
    replaced = await store.update_worker("w-hb", heartbeat_stats={"gpu": 1})
    assert replaced.heartbeat_stats == {"gpu": 1}
    replaced.heartbeat_stats["gpu"] = 99  # type: ignore[index]
    stored = await store.get_worker_by_id("w-hb")
    assert stored is not None and stored.heartbeat_stats == {"gpu": 1}
    # a heartbeat does not change a status derived from attempts
    await store.start_rollout(input=1, worker_id="w-hb")
    await store.update_worker("w-hb", heartbeat_stats=None)
    stored = await store.get_worker_by_id("w-hb")
    assert stored is not None and stored.status == "busy" and stored.heartbeat_stats is None
