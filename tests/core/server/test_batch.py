"""``POST /v1/agl/batch`` and the client that coalesces concurrent calls into it."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List

import httpx
import pytest

from agentlightning.errors import (
    AttemptNotFoundError,
    InvalidStatusError,
    InvalidTransitionError,
    RolloutNotFoundError,
)
from agentlightning.server import StoreServer
from agentlightning.store.client import HttpLightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.wire import MAX_BATCH_CALLS
from agentlightning.types import Span

API = "/v1/agl"
ServeFactory = Callable[..., StoreServer]


def _span(rollout_id: str, attempt_id: str, sequence_id: int, span_id: str) -> Span:
    return Span(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        sequence_id=sequence_id,
        trace_id="0" * 31 + "1",
        span_id=span_id,
        name="step",
        attributes={"k": sequence_id},
    )


def _batch(http: httpx.Client, *calls: Dict[str, Any]) -> List[Dict[str, Any]]:
    response = http.post(f"{API}/batch", json={"calls": list(calls)})
    assert response.status_code == 200, response.text
    results: List[Dict[str, Any]] = response.json()["results"]
    assert len(results) == len(calls)
    return results


def test_each_call_answered_as_its_own_route(http: httpx.Client) -> None:
    (enqueued,) = _batch(http, {"op": "enqueue_many_rollouts", "args": {"rollouts": [{"input": 1}, {"input": 2}]}})
    assert enqueued["status"] == 201 and [r["input"] for r in enqueued["body"]] == [1, 2]
    dequeued, missing = _batch(
        http,
        {"op": "dequeue_many_rollouts", "args": {"limit": 1, "worker_id": "w1"}},
        {"op": "update_attempt", "args": {"rollout_id": "ro-none", "attempt_id": "latest", "status": "running"}},
    )
    assert dequeued["status"] == 200 and dequeued["body"][0]["attempt"]["worker_id"] == "w1"
    assert missing["status"] == 404 and missing["body"]["error"] == "RolloutNotFoundError"
    rollout_id = dequeued["body"][0]["rollout_id"]
    attempt_id = dequeued["body"][0]["attempt"]["attempt_id"]
    (ids,) = _batch(http, {"op": "get_many_span_sequence_ids", "args": {"pairs": [[rollout_id, attempt_id]] * 3}})
    assert ids["body"] == {"sequence_ids": [1, 2, 3]}
    span = _span(rollout_id, attempt_id, 1, "s1").model_dump(mode="json")
    added, duplicate, done = _batch(
        http,
        {"op": "add_many_spans", "args": {"spans": [span]}},
        {"op": "add_many_spans", "args": {"spans": [span]}},
        {"op": "update_attempt", "args": {"rollout_id": rollout_id, "attempt_id": attempt_id, "status": "succeeded"}},
    )
    assert added["body"] == {"inserted": [0]} and duplicate["body"] == {"inserted": []}
    assert done["status"] == 200 and done["body"]["status"] == "succeeded"
    (page,) = _batch(http, {"op": "query_spans", "args": {"rollout_id": rollout_id, "attempt_id": "latest"}})
    assert page["body"]["total"] == 1 and page["body"]["items"][0]["span_id"] == "s1"
    # The attempt ended: a late span is refused on its own, like on POST /spans.
    (late,) = _batch(http, {"op": "add_many_spans", "args": {"spans": [span]}})
    assert late["status"] == 409 and late["body"]["error"] == "InvalidTransitionError"


def test_idempotency_key_per_call(http: httpx.Client) -> None:
    _batch(http, {"op": "enqueue_many_rollouts", "args": {"rollouts": [{"input": 1}, {"input": 2}]}})
    call = {"op": "dequeue_many_rollouts", "args": {"limit": 1}, "idempotency_key": "k-1"}
    (first,) = _batch(http, call)
    (again,) = _batch(http, call)  # a retry: the same answer, not a second dequeue
    assert again == first
    (other,) = _batch(http, {**call, "idempotency_key": "k-2"})
    assert other["body"][0]["rollout_id"] != first["body"][0]["rollout_id"]


@pytest.mark.parametrize(
    "body,status,name",
    [
        ({"calls": []}, 422, "ValueError"),
        ({"calls": [{"op": "drop_everything", "args": {}}]}, 422, "ValueError"),
        ({"calls": [{"op": "dequeue_many_rollouts", "args": {"limit": "1"}}]}, 422, "TypeError"),
        ({"calls": [{"op": "dequeue_many_rollouts", "args": {}, "extra": 1}]}, 422, "ValueError"),
        ({"calls": [{"op": "dequeue_many_rollouts", "args": {}, "idempotency_key": ""}]}, 422, "ValueError"),
        ({"calls": [{"op": "dequeue_many_rollouts", "args": {}}] * (MAX_BATCH_CALLS + 1)}, 422, "ValueError"),
        (b"null", 422, "TypeError"),
        # values the OpenAPI document rules out, though the store is the one that checks them
        (
            {"calls": [{"op": "update_attempt", "args": {"rollout_id": "r", "attempt_id": "a", "status": "x"}}]},
            400,
            "InvalidStatusError",
        ),
        ({"calls": [{"op": "query_spans", "args": {"rollout_id": "r", "sort_order": "up"}}]}, 400, "ValueError"),
        ({"calls": [{"op": "dequeue_many_rollouts", "args": {"limit": 0}}]}, 400, "ValueError"),
        ({"calls": [{"op": "add_many_spans", "args": {"spans": [{"rollout_id": 1}]}}]}, 422, "ValueError"),
        (b"", 400, "InvalidJSON"),
    ],
)
def test_invalid_batches_are_refused_whole(http: httpx.Client, body: Any, status: int, name: str) -> None:
    http.post(f"{API}/queues/rollouts/enqueue", json={"rollouts": [{"input": 1}]})
    if isinstance(body, bytes):
        response = http.post(f"{API}/batch", content=body, headers={"content-type": "application/json"})
    else:
        response = http.post(f"{API}/batch", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == name
    assert http.get(f"{API}/statistics").json()["total_rollouts"] == 1
    queued = http.post(f"{API}/queues/rollouts/dequeue", json={}).json()
    assert len(queued) == 1  # nothing of a refused batch was applied


def test_malformed_and_oversized_batches(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=4096, token="t0ken")
    with httpx.Client(base_url=server.url, timeout=10, headers={"Authorization": "Bearer t0ken"}) as http:
        response = http.post(f"{API}/batch", content=b"{calls", headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"] == "InvalidJSON"
        big = {"calls": [{"op": "query_spans", "args": {"rollout_id": "x" * 5000}}]}
        response = http.post(f"{API}/batch", json=big)
        assert response.status_code == 413 and response.json()["error"] == "PayloadTooLarge"
        assert http.get(f"{API}/batch").status_code == 405
    response = httpx.post(f"{server.url}{API}/batch", json={"calls": []})
    assert response.status_code == 401


async def test_client_coalesces_concurrent_calls(serve: ServeFactory) -> None:
    server: StoreServer = serve(InMemoryLightningStore())
    client = HttpLightningStore(server.url)
    requests: List[int] = []
    try:
        await client.enqueue_many_rollouts([{"input": i} for i in range(8)])  # type: ignore[misc]
        pool = client._pool()
        original = pool.request

        async def counting(*args: Any, **kwargs: Any) -> Any:
            requests.append(kwargs["body"].count(b'"op":'))
            return await original(*args, **kwargs)

        pool.request = counting  # type: ignore[method-assign]
        attempted = await asyncio.gather(*(client.dequeue_rollout(worker_id=f"w{i}") for i in range(8)))
        assert requests == [8]  # eight concurrent calls, one request
        assert len({a.rollout_id for a in attempted if a is not None}) == 8
        requests.clear()
        results = await asyncio.gather(
            client.update_attempt(attempted[0].rollout_id, attempted[0].attempt.attempt_id, status="succeeded"),
            client.update_attempt("ro-missing", "latest", status="running"),
            client.update_attempt(attempted[1].rollout_id, "at-missing", status="running"),
            client.get_many_span_sequence_ids([(attempted[2].rollout_id, attempted[2].attempt.attempt_id)] * 2),
            return_exceptions=True,
        )
        assert requests == [4]
        assert results[0].status == "succeeded"
        assert isinstance(results[1], RolloutNotFoundError) and "ro-missing" in str(results[1])
        assert isinstance(results[2], AttemptNotFoundError)
        assert results[3] == [1, 2]
        with pytest.raises(InvalidTransitionError):
            await client.update_attempt(attempted[0].rollout_id, attempted[0].attempt.attempt_id, status="running")
        # One caller's invalid arguments (refused by the server's schema) do not fail the others.
        requests.clear()
        bad, good = await asyncio.gather(
            client.update_attempt(attempted[3].rollout_id, "latest", metadata="not a dict"),
            client.update_attempt(attempted[4].rollout_id, "latest", status="running"),
            return_exceptions=True,
        )
        assert isinstance(bad, TypeError) and "metadata" in str(bad)
        assert good.status == "running"
        assert requests[0] == 2 and sorted(requests[1:]) == [1, 1]  # refused whole, then each alone
        bad, good = await asyncio.gather(
            client.update_attempt(attempted[5].rollout_id, "latest", status="sleeping"),
            client.update_attempt(attempted[6].rollout_id, "latest", status="running"),
            return_exceptions=True,
        )
        assert isinstance(bad, InvalidStatusError) and "sleeping" in str(bad)  # the store's own error type
        assert good.status == "running"
    finally:
        await client.close()
