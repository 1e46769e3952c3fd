"""Queries: filters (and/or), deprecated aliases, sorting, pagination, statistics."""

from __future__ import annotations

from typing import Dict, List

from store_helpers import add_spans

from agentlightning.store.base import LightningStore
from agentlightning.types import PaginatedResult, Rollout


async def _mixed(store: LightningStore) -> Dict[str, List[str]]:
    """2 queuing, 2 running, 1 succeeded, 1 failed, 1 cancelled rollouts; returns ids by status."""
    ids: Dict[str, List[str]] = {}
    for i in range(7):
        ids.setdefault("all", []).append((await store.enqueue_rollout(input=i)).rollout_id)
    got = await store.dequeue_many_rollouts(limit=5)
    await add_spans(store, got[0].rollout_id, got[0].attempt.attempt_id, 1)
    await add_spans(store, got[1].rollout_id, got[1].attempt.attempt_id, 1)
    await store.update_attempt(got[2].rollout_id, "latest", status="succeeded")
    await store.update_attempt(got[3].rollout_id, "latest", status="failed")
    await store.cancel_rollout(got[4].rollout_id)
    ids["running"] = [got[0].rollout_id, got[1].rollout_id]
    ids["succeeded"] = [got[2].rollout_id]
    ids["failed"] = [got[3].rollout_id]
    ids["cancelled"] = [got[4].rollout_id]
    ids["queuing"] = ids["all"][5:]
    return ids


def _ids(result: PaginatedResult[Rollout]) -> List[str]:
    return [r.rollout_id for r in result]


async def test_query_rollouts_by_status(store: LightningStore) -> None:
    ids = await _mixed(store)
    assert _ids(await store.query_rollouts(sort_by="start_time")) == ids["all"]
    for status in ("queuing", "running", "succeeded", "failed", "cancelled"):
        result = await store.query_rollouts(status_in=[status])
        assert sorted(_ids(result)) == sorted(ids[status]), status
        assert all(r.status == status for r in result)
    both = await store.query_rollouts(status_in=["succeeded", "failed"])
    assert sorted(_ids(both)) == sorted(ids["succeeded"] + ids["failed"])
    assert len(await store.query_rollouts(status_in=["preparing", "requeuing"])) == 0
    assert len(await store.query_rollouts(status_in=[])) == 0


async def test_query_rollouts_by_ids_and_contains(store: LightningStore) -> None:
    ids = await _mixed(store)
    picked = [ids["all"][3], ids["all"][0], "ro-unknown"]
    assert sorted(_ids(await store.query_rollouts(rollout_id_in=picked))) == sorted(picked[:2])
    needle = ids["all"][4][3:9]
    contains = await store.query_rollouts(rollout_id_contains=needle)
    assert ids["all"][4] in _ids(contains) and all(needle in i for i in _ids(contains))
    assert len(await store.query_rollouts(rollout_id_contains="no-such-fragment")) == 0


async def test_query_rollouts_and_or(store: LightningStore) -> None:
    ids = await _mixed(store)
    queued = ids["queuing"][0]
    done = ids["succeeded"][0]
    # and: both conditions
    assert _ids(await store.query_rollouts(status_in=["queuing"], rollout_id_in=[queued, done])) == [queued]
    assert len(await store.query_rollouts(status_in=["failed"], rollout_id_in=[queued, done])) == 0
    # or: either condition
    either = await store.query_rollouts(status_in=["failed"], rollout_id_in=[queued, done], filter_logic="or")
    assert sorted(_ids(either)) == sorted([queued, done, ids["failed"][0]])
    with_contains = await store.query_rollouts(rollout_id_contains=done[3:], status_in=["cancelled"], filter_logic="or")
    assert sorted(_ids(with_contains)) == sorted([done, ids["cancelled"][0]])
    # or without any filter: everything
    assert (await store.query_rollouts(filter_logic="or")).total == 7


async def test_deprecated_aliases(store: LightningStore) -> None:
    ids = await _mixed(store)
    assert sorted(_ids(await store.query_rollouts(status=["running"]))) == sorted(ids["running"])
    assert sorted(_ids(await store.query_rollouts(rollout_ids=ids["failed"]))) == ids["failed"]
    # the new names win when both are given
    assert _ids(await store.query_rollouts(status_in=["failed"], status=["running"])) == ids["failed"]
    assert _ids(await store.query_rollouts(rollout_id_in=ids["failed"], rollout_ids=ids["running"])) == ids["failed"]


async def test_query_rollouts_sort(store: LightningStore) -> None:
    ids = await _mixed(store)
    by_id = await store.query_rollouts(sort_by="rollout_id")
    assert _ids(by_id) == sorted(ids["all"])
    by_id_desc = await store.query_rollouts(sort_by="rollout_id", sort_order="desc")
    assert _ids(by_id_desc) == sorted(ids["all"], reverse=True)
    by_start_desc = await store.query_rollouts(sort_by="start_time", sort_order="desc")
    assert [r.start_time for r in by_start_desc] == sorted((r.start_time for r in by_start_desc), reverse=True)
    by_status = await store.query_rollouts(sort_by="status")
    assert [r.status for r in by_status] == sorted(r.status for r in by_status)
    by_end = await store.query_rollouts(sort_by="end_time")
    ends = [r.end_time for r in by_end]
    assert ends[:4] == [None] * 4  # unfinished first when ascending
    assert ends[4:] == sorted(e for e in ends if e is not None)


async def test_query_rollouts_pagination(store: LightningStore) -> None:
    ids = await _mixed(store)
    ordered = sorted(ids["all"])
    page = await store.query_rollouts(sort_by="rollout_id", limit=3, offset=2)
    assert _ids(page) == ordered[2:5]
    assert (page.limit, page.offset, page.total) == (3, 2, 7)
    last = await store.query_rollouts(sort_by="rollout_id", limit=3, offset=6)
    assert _ids(last) == ordered[6:] and last.total == 7
    past = await store.query_rollouts(offset=50)
    assert len(past) == 0 and past.total == 7
    zero = await store.query_rollouts(limit=0)
    assert len(zero) == 0 and zero.total == 7
    filtered = await store.query_rollouts(status_in=["queuing", "running"], sort_by="rollout_id", limit=2, offset=1)
    assert filtered.total == 4
    assert _ids(filtered) == sorted(ids["queuing"] + ids["running"])[1:3]


async def test_paginated_result_behaves_like_a_list(store: LightningStore) -> None:
    ids = await _mixed(store)
    result = await store.query_rollouts(sort_by="rollout_id", limit=4)
    assert len(result) == 4
    assert result[0].rollout_id == sorted(ids["all"])[0]
    assert result[-1].rollout_id == sorted(ids["all"])[3]
    assert [r.rollout_id for r in result[1:3]] == sorted(ids["all"])[1:3]
    assert [r.rollout_id for r in result] == [r.rollout_id for r in result.items]
    assert result == list(result.items)
    assert list(result) == result.items
    assert not await store.query_rollouts(limit=0)  # empty page is falsy, like an empty list
    assert result


async def test_query_attempts(store: LightningStore) -> None:
    started = await store.start_rollout(input=1)
    for _ in range(3):
        await store.start_attempt(started.rollout_id)
    attempts = await store.query_attempts(started.rollout_id)
    assert [a.sequence_id for a in attempts] == [1, 2, 3, 4] and attempts.total == 4
    desc = await store.query_attempts(started.rollout_id, sort_order="desc")
    assert [a.sequence_id for a in desc] == [4, 3, 2, 1]
    page = await store.query_attempts(started.rollout_id, limit=2, offset=1)
    assert [a.sequence_id for a in page] == [2, 3] and (page.limit, page.offset, page.total) == (2, 1, 4)
    by_start = await store.query_attempts(started.rollout_id, sort_by="start_time", sort_order="desc")
    assert [a.start_time for a in by_start] == sorted((a.start_time for a in by_start), reverse=True)
    assert len(await store.query_attempts(started.rollout_id, offset=4)) == 0
    queued = await store.enqueue_rollout(input=2)
    empty = await store.query_attempts(queued.rollout_id)
    assert len(empty) == 0 and empty.total == 0


async def test_query_workers(store: LightningStore) -> None:
    for i in range(3):
        await store.enqueue_rollout(input=i)
    busy_a = await store.dequeue_rollout(worker_id="runner-a")
    await store.dequeue_rollout(worker_id="runner-b")
    assert busy_a is not None
    await store.update_attempt(busy_a.rollout_id, "latest", status="succeeded")  # runner-a idle
    await store.update_worker("monitor-1")  # unknown
    everything = await store.query_workers(sort_by="worker_id")
    assert [w.worker_id for w in everything] == ["monitor-1", "runner-a", "runner-b"]
    assert {w.worker_id: w.status for w in everything} == {
        "monitor-1": "unknown",
        "runner-a": "idle",
        "runner-b": "busy",
    }
    assert [w.worker_id for w in await store.query_workers(status_in=["busy"])] == ["runner-b"]
    runners = await store.query_workers(worker_id_contains="runner", sort_by="worker_id", sort_order="desc")
    assert [w.worker_id for w in runners] == ["runner-b", "runner-a"]
    assert [w.worker_id for w in await store.query_workers(worker_id_contains="runner", status_in=["idle"])] == [
        "runner-a"
    ]
    either = await store.query_workers(worker_id_contains="monitor", status_in=["busy"], filter_logic="or")
    assert sorted(w.worker_id for w in either) == ["monitor-1", "runner-b"]
    page = await store.query_workers(sort_by="worker_id", limit=1, offset=1)
    assert [w.worker_id for w in page] == ["runner-a"] and page.total == 3
    by_dequeue = await store.query_workers(sort_by="last_dequeue_time", sort_order="desc")
    assert [w.worker_id for w in by_dequeue][:2] == ["runner-b", "runner-a"]


async def test_statistics_counts(store: LightningStore) -> None:
    empty = await store.statistics()
    assert empty["total_rollouts"] == 0 and empty["total_spans"] == 0 and empty["total_attempts"] == 0
    assert empty["total_resources"] == 0 and empty["total_workers"] == 0
    assert isinstance(empty["name"], str) and empty["name"]
    await store.add_resources({})
    await _mixed(store)
    started = await store.start_rollout(input="x", worker_id="w-extra")
    await store.start_attempt(started.rollout_id)
    stats = await store.statistics()
    assert stats["total_rollouts"] == 8
    assert stats["total_attempts"] == 5 + 2
    assert stats["total_spans"] == 2
    assert stats["total_resources"] == 1
    assert stats["total_workers"] == 1
    assert stats["uptime"] >= 0
    assert stats["rollouts_by_status"] == {
        "queuing": 2,
        "running": 2,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 1,
        "preparing": 1,
    }
