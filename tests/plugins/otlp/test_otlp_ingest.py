"""OTLP/HTTP trace ingest at /v1/traces: the real OpenTelemetry SDK exporter, hand-written JSON, bad bodies."""

from __future__ import annotations

import gzip
import json
from typing import Any, Dict, List

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from agentlightning.server import StoreServer
from agentlightning.store.client import HttpLightningStore
from agentlightning.store.memory import InMemoryLightningStore

PROTOBUF = {"content-type": "application/x-protobuf"}


def _provider(server: StoreServer, resource: Dict[str, Any], **exporter_options: Any) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create(resource))
    exporter = OTLPSpanExporter(endpoint=f"{server.url}/v1/traces", timeout=10, **exporter_options)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def test_sdk_exporter_spans_land_in_the_right_rollout(serve: Any) -> None:
    backing = InMemoryLightningStore()
    server = serve(backing)
    store = HttpLightningStore(server.url)
    target = await store.start_rollout(input="task")
    other = await store.start_rollout(input="other task")
    provider = _provider(
        server,
        {
            "service.name": "my-agent",
            "agentlightning.rollout_id": target.rollout_id,
            "agentlightning.attempt_id": target.attempt.attempt_id,
        },
    )
    tracer = provider.get_tracer("agent")
    with tracer.start_as_current_span("agent.run") as root:
        root.set_attribute("gen_ai.request.model", "tiny")
        with tracer.start_as_current_span("openai.chat.completion") as llm:
            llm.set_attribute("gen_ai.usage.output_tokens", 7)
            llm.set_attribute("tags", ["a", "b"])
            llm.add_event("token", {"index": 1})
    provider.shutdown()

    spans = await store.query_spans(target.rollout_id)
    assert [s.name for s in spans] == ["openai.chat.completion", "agent.run"]  # exported as they end
    assert [s.sequence_id for s in spans] == [1, 2]  # issued by the store
    child, parent = spans
    assert child.parent_id == parent.span_id and child.trace_id == parent.trace_id and parent.parent_id is None
    assert child.attributes["gen_ai.usage.output_tokens"] == 7 and child.attributes["tags"] == ["a", "b"]
    assert child.events[0].name == "token" and child.events[0].attributes == {"index": 1}
    assert parent.resource.attributes["service.name"] == "my-agent"
    assert all(s.attempt_id == target.attempt.attempt_id for s in spans)
    assert child.start_time is not None and child.end_time is not None and 1e9 < child.start_time <= child.end_time
    assert (await store.query_spans(other.rollout_id)).total == 0
    rollout = await store.get_rollout_by_id(target.rollout_id)
    assert rollout is not None and rollout.status == "running"  # spans are heartbeats
    await store.close()


async def test_span_attributes_win_and_sequence_ids_are_honoured(serve: Any) -> None:
    server = serve()
    store = HttpLightningStore(server.url)
    a = await store.start_rollout(input=1)
    b = await store.start_rollout(input=2)
    # resource says rollout a; one span overrides with rollout b and an explicit sequence id
    provider = _provider(
        server,
        {"agentlightning.rollout_id": a.rollout_id, "agentlightning.attempt_id": a.attempt.attempt_id},
        compression=Compression.Gzip,
    )
    tracer = provider.get_tracer("agent")
    with tracer.start_as_current_span("for-a"):
        pass
    with tracer.start_as_current_span(
        "for-b",
        attributes={
            "agentlightning.rollout_id": b.rollout_id,
            "agentlightning.attempt_id": b.attempt.attempt_id,
            "agentlightning.span_sequence_id": 40,
        },
    ):
        pass
    provider.shutdown()
    assert [(s.name, s.sequence_id) for s in await store.query_spans(a.rollout_id)] == [("for-a", 1)]
    assert [(s.name, s.sequence_id) for s in await store.query_spans(b.rollout_id)] == [("for-b", 40)]
    assert await store.get_next_span_sequence_id(b.rollout_id, b.attempt.attempt_id) == 41
    await store.close()


def _json_span(name: str, attributes: List[Dict[str, Any]], span_id: str = "00f067aa0ba902b7") -> Dict[str, Any]:
    return {
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
        "attributes": attributes,
        "status": {"code": 2, "message": "boom"},
    }


async def test_otlp_json_and_partial_success(serve: Any) -> None:
    server = serve()
    store = HttpLightningStore(server.url)
    r = await store.start_rollout(input=1)
    ids = [
        {"key": "agentlightning.rollout_id", "value": {"stringValue": r.rollout_id}},
        {"key": "agentlightning.attempt_id", "value": {"stringValue": r.attempt.attempt_id}},
    ]
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": ids},
                "scopeSpans": [
                    {
                        "scope": {"name": "hand-written"},
                        "spans": [
                            _json_span(
                                "tool.call",
                                [
                                    {"key": "n", "value": {"intValue": "12"}},
                                    {"key": "f", "value": {"doubleValue": 0.5}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                    {"key": "none", "value": {}},
                                    {
                                        "key": "kv",
                                        "value": {
                                            "kvlistValue": {"values": [{"key": "x", "value": {"stringValue": "y"}}]}
                                        },
                                    },
                                ],
                            )
                        ],
                    }
                ],
            },
            {  # no rollout ids anywhere
                "resource": {"attributes": []},
                "scopeSpans": [{"spans": [_json_span("orphan", [], span_id="00f067aa0ba902b8")]}],
            },
            {  # a rollout the store does not know
                "resource": {
                    "attributes": [
                        {"key": "agentlightning.rollout_id", "value": {"stringValue": "ro-unknown"}},
                        {"key": "agentlightning.attempt_id", "value": {"stringValue": "at-unknown"}},
                    ]
                },
                "scopeSpans": [{"spans": [_json_span("lost", [], span_id="00f067aa0ba902b9")]}],
            },
        ]
    }
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/v1/traces", json=body)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2" and "ro-unknown" in partial["errorMessage"]
    (span,) = await store.query_spans(r.rollout_id)
    assert span.name == "tool.call" and span.span_id == "00f067aa0ba902b7"
    assert span.attributes == {"n": 12, "f": 0.5, "ok": True, "none": None, "kv": {"x": "y"}}
    assert span.resource.attributes["agentlightning.rollout_id"] == r.rollout_id
    assert span.status.status_code == "ERROR" and span.status.description == "boom"
    assert span.start_time == pytest.approx(1700000000.0) and span.end_time == pytest.approx(1700000000.5)
    await store.close()


@pytest.mark.parametrize(
    "content_type,body,status",
    [
        ("application/x-protobuf", b"\xff\xff\xff\xff not protobuf", 400),
        ("application/json", b"{not json", 400),
        ("application/json", b'{"resourceSpans": "nope"}', 400),
        (
            "application/json",
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc", "spanId": "00f067aa0ba902b7"}]}]}]}
            ).encode(),
            400,
        ),
        (
            "application/json",
            json.dumps(
                {
                    "resourceSpans": [
                        {
                            "scopeSpans": [
                                {
                                    "spans": [
                                        {
                                            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                                            "spanId": "00f067aa0ba902b7",
                                            "attributes": [{"key": 5}],
                                        }
                                    ]
                                }
                            ]
                        }
                    ]
                }
            ).encode(),
            400,
        ),
        ("text/plain", b"hello", 415),
    ],
)
def test_malformed_otlp_is_4xx_and_the_server_keeps_serving(
    server: StoreServer, content_type: str, body: bytes, status: int
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        response = http.post("/v1/traces", content=body, headers={"content-type": content_type})
        assert response.status_code == status, response.text
        if content_type == "application/json" or status == 415:
            assert response.json()["code"] == 3 and response.json()["message"]
        assert http.get("/v1/agl/health").status_code == 200
        # a good (empty) export still works
        ok = http.post("/v1/traces", content=b"", headers=PROTOBUF)
        assert ok.status_code == 200
        ExportTraceServiceResponse().ParseFromString(ok.content)


def test_bad_gzip_and_gzip_bomb(server: StoreServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        bad = http.post("/v1/traces", content=b"not gzip", headers={**PROTOBUF, "content-encoding": "gzip"})
        assert bad.status_code == 400
        bomb = gzip.compress(b"\0" * (4 << 20))  # 4 MiB inflated, the server takes 1 MiB
        assert len(bomb) < (1 << 20)
        response = http.post("/v1/traces", content=bomb, headers={**PROTOBUF, "content-encoding": "gzip"})
        assert response.status_code == 413
        assert http.get("/v1/agl/health").status_code == 200


async def test_exporter_with_token(serve: Any) -> None:
    server = serve(token="tok")
    store = HttpLightningStore(server.url, token="tok")
    r = await store.start_rollout(input=1)
    resource = {"agentlightning.rollout_id": r.rollout_id, "agentlightning.attempt_id": r.attempt.attempt_id}
    exporter = OTLPSpanExporter(endpoint=f"{server.url}/v1/traces", timeout=5)
    provider = TracerProvider(resource=Resource.create(resource))
    with provider.get_tracer("t").start_as_current_span("x") as span:
        pass
    denied = exporter.export([span])  # type: ignore[list-item]
    assert denied == SpanExportResult.FAILURE
    exporter.shutdown()
    provider = _provider(server, resource, headers={"Authorization": "Bearer tok"})
    with provider.get_tracer("t").start_as_current_span("allowed"):
        pass
    provider.shutdown()
    assert [s.name for s in await store.query_spans(r.rollout_id)] == ["allowed"]
    await store.close()


def test_body_over_the_limit_is_413_before_it_is_read(server: StoreServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        response = http.post("/v1/traces", content=b"\0" * (2 << 20), headers=PROTOBUF)  # the server takes 1 MiB
        assert response.status_code == 413 and response.json()["error"] == "PayloadTooLarge"
        assert http.get("/v1/agl/health").json()["status"] == "ok"


def test_the_plugin_registers_the_route_and_the_banner_shows_it(server: StoreServer) -> None:
    from agentlightning.cli.store import _banner
    from agentlightning.plugins import list_plugins, registered

    assert "otlp" in registered("server_routes")
    assert any(info.distribution == "agentlightning-otlp" and not info.error for info in list_plugins())
    assert f"OTLP/HTTP:  {server.url}/v1/traces" in _banner(server, "memory://")
    assert server.app is not None and "/v1/traces" in server.app.openapi()["paths"]
