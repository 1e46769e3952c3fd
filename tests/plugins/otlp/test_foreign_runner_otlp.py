"""Bad OTLP input from a runner in another language, over plain HTTP: spans for unknown or ended
attempts, or naming no rollout. Each gets a 4xx naming the problem and changes nothing."""

from __future__ import annotations

from typing import Any, Dict, List

import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from agentlightning.server import StoreServer
from agentlightning.store.client import HttpLightningStore
from agentlightning_testing.store_server import running_and_ended_attempts, store_state

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


@pytest.fixture
async def setup(server: StoreServer) -> Any:
    store = HttpLightningStore(server.url)
    running, ended = await running_and_ended_attempts(store)
    yield store, running, ended
    await store.close()


async def test_otlp_export_of_only_refused_spans_is_a_4xx_naming_why(server: StoreServer, setup: Any) -> None:
    store, running, ended = setup
    before = await store_state(store)
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
    assert await store_state(store) == before


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
