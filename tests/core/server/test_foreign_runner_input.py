"""Bad input from a runner in another language, over plain HTTP: REST spans for unknown or ended
attempts, forbidden status changes (OTLP's are in tests/plugins/otlp). Each gets a 4xx naming the
problem and changes nothing."""

from __future__ import annotations

from typing import Any, Dict, List

import httpx
import pytest

from agentlightning.server import StoreServer
from agentlightning.store.client import HttpLightningStore
from agentlightning_testing.store_server import running_and_ended_attempts, store_state


def _rest_span(rollout_id: str, attempt_id: str, sequence_id: int, span_id: str) -> Dict[str, Any]:
    return {
        "rollout_id": rollout_id,
        "attempt_id": attempt_id,
        "sequence_id": sequence_id,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": span_id,
        "name": "tool.call",
        "start_time": 1700000000.0,
        "end_time": 1700000000.5,
    }


@pytest.fixture
async def setup(server: StoreServer) -> Any:
    store = HttpLightningStore(server.url)
    running, ended = await running_and_ended_attempts(store)
    yield store, running, ended
    await store.close()


async def test_rest_spans_for_unknown_or_ended_attempts(server: StoreServer, setup: Any) -> None:
    store, running, ended = setup
    before = await store_state(store)
    async with httpx.AsyncClient(base_url=f"{server.url}/v1/agl", timeout=10) as http:
        late = _rest_span(ended.rollout_id, ended.attempt.attempt_id, 7, "00000000000000a1")
        response = await http.post("/spans", json={"spans": [late]})
        assert response.status_code == 409
        assert response.json()["error"] == "InvalidTransitionError"
        assert ended.attempt.attempt_id in response.json()["message"]
        assert response.json()["details"]["current"] == "succeeded"
        # all or nothing: a good span in the same batch is not stored either
        good = _rest_span(running.rollout_id, running.attempt.attempt_id, 1, "00000000000000a2")
        response = await http.post("/spans", json={"spans": [good, late]})
        assert response.status_code == 409
        response = await http.post("/spans", json={"spans": [_rest_span("ro-nope", "at-nope", 1, "00000000000000a3")]})
        assert response.status_code == 404 and response.json()["error"] == "RolloutNotFoundError"
        unknown_attempt = _rest_span(running.rollout_id, "at-nope", 1, "00000000000000a4")
        response = await http.post("/spans", json={"spans": [unknown_attempt]})
        assert response.status_code == 404 and response.json()["error"] == "AttemptNotFoundError"
        assert "at-nope" in response.json()["message"]
        response = await http.post("/spans", json={"spans": [{**good, "sequence_id": "one"}]})
        assert response.status_code == 422 and "sequence_id" in response.json()["message"]
    assert await store_state(store) == before


@pytest.mark.parametrize(
    "path_kind,body,status,error,named",
    [
        ("ended", {"status": "running"}, 409, "InvalidTransitionError", ["succeeded", "running"]),
        ("ended", {"status": "failed"}, 409, "InvalidTransitionError", ["succeeded", "failed"]),
        ("running", {"status": "preparing"}, 409, "InvalidTransitionError", ["cannot go back"]),
        ("running", {"status": "done"}, 400, "InvalidStatusError", ["'done'", "succeeded"]),
        ("running", {"status": 1}, 422, "TypeError", ["status"]),
        ("running", {"state": "succeeded"}, 422, "ValueError", ["state"]),
        ("ended_rollout", {"status": "running"}, 409, "InvalidTransitionError", ["succeeded", "retry"]),
        ("unknown", {"status": "succeeded"}, 404, "RolloutNotFoundError", ["ro-nope"]),
    ],
)
async def test_forbidden_status_changes_are_4xx_and_change_nothing(
    server: StoreServer, setup: Any, path_kind: str, body: Dict[str, Any], status: int, error: str, named: List[str]
) -> None:
    store, running, ended = setup
    paths = {
        "ended": f"/rollouts/{ended.rollout_id}/attempts/{ended.attempt.attempt_id}",
        "running": f"/rollouts/{running.rollout_id}/attempts/{running.attempt.attempt_id}",
        "ended_rollout": f"/rollouts/{ended.rollout_id}",
        "unknown": "/rollouts/ro-nope/attempts/at-nope",
    }
    before = await store_state(store)
    async with httpx.AsyncClient(base_url=f"{server.url}/v1/agl", timeout=10) as http:
        response = await http.patch(paths[path_kind], json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert all(text in response.json()["message"] for text in named), response.text
    assert await store_state(store) == before
