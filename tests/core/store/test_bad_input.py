"""Bad input gets a typed error that names the offending value, and never damages stored data."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict

import pytest
from store_helpers import add_spans, make_span, snapshot

from agentlightning.errors import (
    AttemptNotFoundError,
    InvalidSpanError,
    InvalidStatusError,
    InvalidTransitionError,
    RolloutNotFoundError,
)
from agentlightning.store.base import LightningStore
from agentlightning.types import EnqueueRolloutRequest, RolloutConfig

MISSING = "ro-missing-0001"


@pytest.fixture
async def seeded(store: LightningStore) -> Dict[str, Any]:
    """A store holding a bit of everything; the tests check that bad calls leave it as it was."""
    resources = await store.add_resources({})
    await store.enqueue_rollout(input={"queued": True}, metadata={"m": 1})
    running = await store.start_rollout(input={"running": True}, worker_id="w-1")
    await add_spans(store, running.rollout_id, running.attempt.attempt_id, 2, attributes={"a": None})
    done = await store.start_rollout(input={"done": True})
    await store.update_attempt(done.rollout_id, "latest", status="succeeded")
    await store.update_worker("w-2", heartbeat_stats={"cpu": 1})
    return {
        "store": store,
        "running": running,
        "done": done,
        "resources_id": resources.resources_id,
        "state": await snapshot(store),
    }


async def _unchanged(seeded: Dict[str, Any]) -> None:
    assert await snapshot(seeded["store"]) == seeded["state"]


def _calls_with_missing_rollout(store: LightningStore) -> Dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "get_latest_attempt": lambda: store.get_latest_attempt(MISSING),
        "update_rollout": lambda: store.update_rollout(MISSING, status="succeeded"),
        "cancel_rollout": lambda: store.cancel_rollout(MISSING),
        "update_attempt": lambda: store.update_attempt(MISSING, "latest", status="succeeded"),
        "update_attempt_by_id": lambda: store.update_attempt(MISSING, "at-123", status="failed"),
        "start_attempt": lambda: store.start_attempt(MISSING),
        "query_attempts": lambda: store.query_attempts(MISSING),
        "query_spans": lambda: store.query_spans(MISSING),
        "query_spans_latest": lambda: store.query_spans(MISSING, "latest"),
        "get_next_span_sequence_id": lambda: store.get_next_span_sequence_id(MISSING, "at-123"),
        "add_span": lambda: store.add_span(make_span(MISSING, "at-123", 1)),
    }


@pytest.mark.parametrize("call", list(_calls_with_missing_rollout(None)))  # type: ignore[arg-type]
async def test_unknown_rollout_id(seeded: Dict[str, Any], call: str) -> None:
    store: LightningStore = seeded["store"]
    with pytest.raises(RolloutNotFoundError) as info:
        await _calls_with_missing_rollout(store)[call]()
    assert isinstance(info.value, ValueError)
    assert MISSING in str(info.value)
    await _unchanged(seeded)


async def test_unknown_rollout_id_in_lookups_is_not_an_error(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    assert await store.get_rollout_by_id(MISSING) is None
    assert len(await store.query_rollouts(rollout_id_in=[MISSING])) == 0
    assert await store.wait_for_rollouts(rollout_ids=[MISSING], timeout=0) == []
    await _unchanged(seeded)


async def test_unknown_attempt_id(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    rid = seeded["running"].rollout_id
    with pytest.raises(AttemptNotFoundError) as info:
        await store.update_attempt(rid, "at-missing", status="succeeded")
    assert "at-missing" in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(AttemptNotFoundError):
        await store.query_spans(rid, "at-missing")
    with pytest.raises(AttemptNotFoundError):
        await store.get_next_span_sequence_id(rid, "at-missing")
    queued = (await store.query_rollouts(status_in=["queuing"]))[0]
    with pytest.raises(AttemptNotFoundError):
        await store.update_attempt(queued.rollout_id, "latest", status="running")
    await _unchanged(seeded)


@pytest.mark.parametrize(
    "call",
    ["update_rollout", "update_attempt", "query_rollouts", "query_rollouts_alias", "query_workers", "start_mode"],
)
async def test_invalid_status_strings(seeded: Dict[str, Any], call: str) -> None:
    store: LightningStore = seeded["store"]
    rid = seeded["running"].rollout_id
    calls: Dict[str, Callable[[], Awaitable[Any]]] = {
        "update_rollout": lambda: store.update_rollout(rid, status="finished-ish"),
        "update_attempt": lambda: store.update_attempt(rid, "latest", status="finished-ish"),
        "query_rollouts": lambda: store.query_rollouts(status_in=["running", "finished-ish"]),
        "query_rollouts_alias": lambda: store.query_rollouts(status=["finished-ish"]),
        "query_workers": lambda: store.query_workers(status_in=["finished-ish"]),
        "start_mode": lambda: store.start_rollout(input=1, mode="finished-ish"),  # type: ignore[arg-type]
    }
    with pytest.raises(InvalidStatusError) as info:
        await calls[call]()
    assert "finished-ish" in str(info.value) and isinstance(info.value, ValueError)
    await _unchanged(seeded)


async def test_status_string_instead_of_list(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    with pytest.raises(ValueError):
        await store.query_rollouts(status_in="running")  # type: ignore[arg-type]
    await _unchanged(seeded)


async def test_invalid_mode_on_enqueue(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    with pytest.raises(ValueError) as info:
        await store.enqueue_rollout(input=1, mode="training")  # type: ignore[arg-type]
    assert "training" in str(info.value)
    with pytest.raises(ValueError):
        await store.update_rollout(seeded["running"].rollout_id, mode="training")
    await _unchanged(seeded)


@pytest.mark.parametrize("query", ["rollouts", "attempts", "spans", "resources", "workers"])
async def test_invalid_sort_and_page(seeded: Dict[str, Any], query: str) -> None:
    store: LightningStore = seeded["store"]
    rid = seeded["running"].rollout_id

    def run(**kwargs: Any) -> Awaitable[Any]:
        if query == "rollouts":
            return store.query_rollouts(**kwargs)
        if query == "attempts":
            return store.query_attempts(rid, **kwargs)
        if query == "spans":
            return store.query_spans(rid, **kwargs)
        if query == "resources":
            return store.query_resources(**kwargs)
        return store.query_workers(**kwargs)

    for kwargs, named in (
        ({"sort_by": "no_such_field"}, "no_such_field"),
        ({"sort_by": "rollout_id; DROP TABLE spans"}, "DROP TABLE"),
        ({"sort_order": "sideways"}, "sideways"),
        ({"limit": -2}, "-2"),
        ({"offset": -1}, "-1"),
    ):
        with pytest.raises(ValueError) as info:
            await run(**kwargs)
        assert named in str(info.value), (kwargs, str(info.value))
    await _unchanged(seeded)


@pytest.mark.parametrize("query", ["rollouts", "spans", "workers"])
async def test_invalid_filter_logic(seeded: Dict[str, Any], query: str) -> None:
    store: LightningStore = seeded["store"]
    rid = seeded["running"].rollout_id
    with pytest.raises(ValueError) as info:
        if query == "rollouts":
            await store.query_rollouts(status_in=["running"], filter_logic="xor")  # type: ignore[arg-type]
        elif query == "spans":
            await store.query_spans(rid, name="x", filter_logic="xor")  # type: ignore[arg-type]
        else:
            await store.query_workers(filter_logic="xor")  # type: ignore[arg-type]
    assert "xor" in str(info.value)
    await _unchanged(seeded)


@pytest.mark.parametrize("bad", [None, {"name": "a dict, not a Span"}, "span", 42])
async def test_non_span_objects_are_rejected(seeded: Dict[str, Any], bad: Any) -> None:
    store: LightningStore = seeded["store"]
    with pytest.raises(InvalidSpanError):
        await store.add_span(bad)
    running = seeded["running"]
    good = make_span(running.rollout_id, running.attempt.attempt_id, 99)
    with pytest.raises(InvalidSpanError):
        await store.add_many_spans([good, bad])
    await _unchanged(seeded)  # the good span of the batch was not stored either


async def test_wrong_types(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    rid = seeded["running"].rollout_id
    calls: Dict[str, Callable[[], Awaitable[Any]]] = {
        "get_rollout_by_id": lambda: store.get_rollout_by_id(123),  # type: ignore[arg-type]
        "get_latest_attempt": lambda: store.get_latest_attempt(123),  # type: ignore[arg-type]
        "update_rollout": lambda: store.update_rollout(123, status="failed"),  # type: ignore[arg-type]
        "update_attempt": lambda: store.update_attempt(123, "latest", status="failed"),  # type: ignore[arg-type]
        "start_attempt": lambda: store.start_attempt(123),  # type: ignore[arg-type]
        "query_attempts": lambda: store.query_attempts(123),  # type: ignore[arg-type]
        "query_spans": lambda: store.query_spans(123),  # type: ignore[arg-type]
        "enqueue_metadata": lambda: store.enqueue_rollout(input=1, metadata="not a dict"),  # type: ignore[arg-type]
        "start_metadata": lambda: store.start_rollout(input=1, metadata=["not", "a", "dict"]),  # type: ignore[arg-type]
        "update_rollout_metadata": lambda: store.update_rollout(rid, metadata="x"),
        "update_attempt_metadata": lambda: store.update_attempt(rid, "latest", metadata="x"),
        "update_attempt_heartbeat": lambda: store.update_attempt(rid, "latest", last_heartbeat_time="now"),
        "update_worker_stats": lambda: store.update_worker("w-1", heartbeat_stats="busy"),
        "wait_for_rollouts_str": lambda: store.wait_for_rollouts(rollout_ids=rid, timeout=0),  # type: ignore[arg-type]
        "resources_id": lambda: store.enqueue_rollout(input=1, resources_id=5),  # type: ignore[arg-type]
    }
    for name, call in calls.items():
        with pytest.raises(TypeError):
            await call()
            pytest.fail(f"{name} accepted a wrong type")
    await _unchanged(seeded)


async def test_enqueue_many_with_a_bad_request_enqueues_nothing(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    with pytest.raises((TypeError, ValueError)):
        await store.enqueue_many_rollouts(
            [EnqueueRolloutRequest(input="good"), {"input": "bad", "mode": "nonsense"}]  # type: ignore[list-item]
        )
    with pytest.raises((TypeError, ValueError)):
        await store.enqueue_many_rollouts([EnqueueRolloutRequest(input="good"), "not a request"])  # type: ignore[list-item]
    await _unchanged(seeded)


async def test_invalid_config(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    with pytest.raises(ValueError):
        await store.enqueue_rollout(input=1, config={"max_attempts": 0})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.start_rollout(input=1, config={"retry_condition": ["exploded"]})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.update_rollout(seeded["running"].rollout_id, config=None)
    with pytest.raises(ValueError):
        await store.update_rollout(seeded["running"].rollout_id, config={"timeout_seconds": -1})
    await _unchanged(seeded)


async def test_invalid_transitions_change_nothing(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    done = seeded["done"]
    with pytest.raises(InvalidTransitionError) as info:
        await store.update_rollout(done.rollout_id, status="running", input="changed")
    assert done.rollout_id in str(info.value)
    with pytest.raises(InvalidTransitionError) as info:
        await store.update_attempt(done.rollout_id, "latest", status="failed", metadata={"x": 1})
    assert done.attempt.attempt_id in str(info.value)
    await _unchanged(seeded)


async def test_bad_dequeue_limit(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    for limit in (0, -1):
        with pytest.raises(ValueError) as info:
            await store.dequeue_many_rollouts(limit=limit)
        assert str(limit) in str(info.value)
    await _unchanged(seeded)


async def test_bad_resources(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    with pytest.raises(ValueError):
        await store.add_resources({"llm": {"resource_type": "llm"}})  # no endpoint/model
    with pytest.raises(ValueError):
        await store.add_resources({"x": {"resource_type": "spaceship"}})
    with pytest.raises(ValueError):
        await store.update_resources("", {})
    await _unchanged(seeded)


async def test_store_keeps_working_after_errors(seeded: Dict[str, Any]) -> None:
    store: LightningStore = seeded["store"]
    with pytest.raises(RolloutNotFoundError):
        await store.start_attempt(MISSING)
    ok = await store.enqueue_rollout(input=1, config=RolloutConfig(max_attempts=2, retry_condition=["failed"]))
    got = await store.dequeue_rollout()
    assert got is not None and got.rollout_id != ok.rollout_id  # the seeded queued rollout is first in line
