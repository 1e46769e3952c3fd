"""Bad input from a runner in another language, over plain HTTP: OTLP and REST spans for unknown or
ended attempts, forbidden status changes. Each gets a 4xx naming the problem and changes nothing."""

from __future__ import annotations

import time
from typing import Any, Dict, List

import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from agentlightning.server import StoreServer
from agentlightning.store.client import HttpLightningStore

OTLP_JSON = {"content-type": "application/json"}
OTLP_PROTOBUF = {"content-type": "application/x-protobuf"}


def _ids(rollout_id: str, attempt_id: str) -> List[Dict[str, Any]]:
    return [
        {"key": "agentlightning.rollout_id", "value": {"stringValue": rollout_id}},
        {"key": "agentlightning.attempt_id", "value": {"stringValue": attempt_id}},
    ]


def _export(*groups: List[Dict[str, Any]]) -> Dict[str, Any]:
    """An OTLP/JSON export with one span per resource (each resource's attributes given)."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attributes},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                                "spanId": f"00f067aa0ba902{index:02x}",
                                "name": f"tool.call.{index}",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000500000000",
                            }
                        ]
                    }
                ],
            }
            for index, attributes in enumerate(groups)
        ]
    }


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


async def _state(store: HttpLightningStore) -> Dict[str, Any]:
    rollouts = await store.query_rollouts(sort_by="rollout_id")
    state: Dict[str, Any] = {"rollouts": [r.model_dump() for r in rollouts]}
    for rollout in rollouts:
        state[rollout.rollout_id] = (
            [a.model_dump() for a in await store.query_attempts(rollout.rollout_id)],
            [s.model_dump() for s in await store.query_spans(rollout.rollout_id)],
        )
    return state


@pytest.fixture
async def setup(server: StoreServer) -> Any:
    store = HttpLightningStore(server.url)
    running = await store.start_rollout(input="running", worker_id="node-1")
    await store.update_attempt(running.rollout_id, running.attempt.attempt_id, last_heartbeat_time=time.time())
    ended = await store.start_rollout(input="ended", worker_id="node-2")
    await store.update_attempt(ended.rollout_id, ended.attempt.attempt_id, status="succeeded")
    yield store, running, ended
    await store.close()


async def test_otlp_export_of_only_refused_spans_is_a_4xx_naming_why(server: StoreServer, setup: Any) -> None:
    store, running, ended = setup
    before = await _state(store)
    cases = [
        (_export(_ids("ro-nope", "at-nope")), 404, 5, ["ro-nope", "does not exist"]),
        (
            _export(_ids(ended.rollout_id, ended.attempt.attempt_id)),
            409,
            9,
            [ended.attempt.attempt_id, "succeeded", "takes no more spans"],
        ),
        (_export([]), 400, 3, ["agentlightning.rollout_id"]),
        (_export(_ids("ro-nope", "at-nope"), []), 400, 3, ["ro-nope", "agentlightning.rollout_id"]),
        (_export(_ids(running.rollout_id, "at-other")), 404, 5, ["at-other"]),
    ]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for body, status, rpc_code, named in cases:
            response = await http.post("/v1/traces", json=body)
            assert response.status_code == status, response.text
            assert response.json()["code"] == rpc_code
            assert all(text in response.json()["message"] for text in named), response.text
        # the same refusal in protobuf: a google.rpc.Status body
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        for key, value in (
            ("agentlightning.rollout_id", ended.rollout_id),
            ("agentlightning.attempt_id", ended.attempt.attempt_id),
        ):
            resource_spans.resource.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
        span = resource_spans.scope_spans.add().spans.add()
        span.trace_id, span.span_id, span.name = bytes(range(1, 17)), bytes(range(1, 9)), "late"
        response = await http.post("/v1/traces", content=request.SerializeToString(), headers=OTLP_PROTOBUF)
        assert response.status_code == 409
        status_message = Status()
        status_message.ParseFromString(response.content)
        assert status_message.code == 9 and ended.attempt.attempt_id in status_message.message
    assert await _state(store) == before


async def test_otlp_partial_refusal_keeps_the_good_spans_and_reports_the_rest(server: StoreServer, setup: Any) -> None:
    store, running, ended = setup
    body = _export(
        _ids(running.rollout_id, running.attempt.attempt_id), _ids(ended.rollout_id, ended.attempt.attempt_id)
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.post("/v1/traces", json=body)
    assert response.status_code == 200  # OTLP: partly accepted is a success with partial_success
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and ended.attempt.attempt_id in partial["errorMessage"]
    assert [s.name for s in await store.query_spans(running.rollout_id)] == ["tool.call.0"]
    assert (await store.query_spans(ended.rollout_id)).total == 0


async def test_rest_spans_for_unknown_or_ended_attempts(server: StoreServer, setup: Any) -> None:
    store, running, ended = setup
    before = await _state(store)
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
    assert await _state(store) == before


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
    before = await _state(store)
    async with httpx.AsyncClient(base_url=f"{server.url}/v1/agl", timeout=10) as http:
        response = await http.patch(paths[path_kind], json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert all(text in response.json()["message"] for text in named), response.text
    assert await _state(store) == before
