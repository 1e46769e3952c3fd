"""Scoped spans (`span_tracer`): the adapters' fast path from a span straight into its rollout's buffer."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List

import pytest
import pytest_asyncio
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from agentlightning.store.base import LightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.sqlite import SqliteLightningStore
from agentlightning.tracer import OtelTracer, span_tracer
from agentlightning.tracer.otel import ScopedSpan
from agentlightning.types import Span


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LightningStore]:
    backend: LightningStore
    backend = InMemoryLightningStore() if request.param == "memory" else SqliteLightningStore(tmp_path / "store.db")
    yield backend
    await backend.close()


@pytest.fixture
def tracer(store: LightningStore) -> OtelTracer:
    otel_tracer = OtelTracer()
    otel_tracer.init_worker(0, store)
    return otel_tracer


async def traced(tracer: OtelTracer, store: LightningStore, body: Any) -> Dict[str, Span]:
    """Run ``body()`` in a rollout's trace context; its stored spans by name."""
    rollout = await store.start_rollout(input={"task": "t"})
    async with tracer.trace_context(rollout_id=rollout.rollout_id, attempt_id=rollout.attempt.attempt_id):
        result = body()
        if asyncio.iscoroutine(result):
            await result
    spans = await store.query_spans(rollout.rollout_id)
    assert {(s.rollout_id, s.attempt_id) for s in spans} <= {(rollout.rollout_id, rollout.attempt.attempt_id)}
    return {span.name: span for span in spans}


@pytest.mark.asyncio
async def test_scoped_spans_are_stored_with_everything_they_recorded(tracer: OtelTracer, store: LightningStore) -> None:
    adapter = span_tracer("test.adapter")
    started: List[Any] = []

    def body() -> None:
        root = adapter.start_span("invoke_agent a", attributes={"gen_ai.agent.name": "a", "dropped": None})
        started.append(root)
        child_context = trace_api.set_span_in_context(root)
        llm = adapter.start_span("chat m", context=child_context, attributes={"gen_ai.request.model": "m"})
        llm.set_attributes({"gen_ai.response.finish_reasons": ("stop",), "gen_ai.usage.input_tokens": 3})
        llm.set_attribute("bad", object())  # dropped, as the SDK drops it
        llm.update_name("chat m2")
        llm.set_status(Status(StatusCode.ERROR, "the model refused"))
        llm.record_exception(ValueError("refused: 400"))
        llm.end()
        llm.set_attribute("after_end", 1)  # ignored: the span has ended
        root.set_status(StatusCode.OK)
        root.set_status(StatusCode.ERROR, "too late")  # OK is final, as in the SDK
        root.end()

    spans = await traced(tracer, store, body)
    assert isinstance(started[0], ScopedSpan)
    root, llm = spans["invoke_agent a"], spans["chat m2"]
    assert root.attributes == {"gen_ai.agent.name": "a"} and root.status.status_code == "OK"
    assert llm.parent_id == root.span_id and llm.trace_id == root.trace_id
    assert llm.parent is not None and llm.parent.span_id == root.span_id
    assert llm.context is not None and llm.context.span_id == llm.span_id
    assert llm.attributes == {
        "gen_ai.request.model": "m",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 3,
    }
    assert (llm.status.status_code, llm.status.description) == ("ERROR", "the model refused")
    (event,) = llm.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "refused: 400"
    assert "ValueError: refused: 400" in event.attributes["exception.stacktrace"]
    assert root.sequence_id < llm.sequence_id
    assert llm.start_time is not None and llm.end_time is not None and llm.start_time <= llm.end_time
    # The provider's resource, naming the rollout as on SDK spans.
    assert llm.resource.attributes["agentlightning.rollout_id"] == llm.rollout_id
    assert llm.resource.attributes["agentlightning.span_sequence_id"] == llm.sequence_id
    assert "service.name" in llm.resource.attributes


@pytest.mark.asyncio
async def test_scoped_and_sdk_spans_nest_both_ways(tracer: OtelTracer, store: LightningStore) -> None:
    adapter, library = span_tracer("test.adapter"), trace_api.get_tracer("some.library")

    def body() -> None:
        with (
            library.start_as_current_span("sdk-outer"),
            adapter.start_as_current_span("scoped-middle"),
            library.start_as_current_span("sdk-inner"),
        ):
            pass

    spans = await traced(tracer, store, body)
    assert spans["scoped-middle"].parent_id == spans["sdk-outer"].span_id
    assert spans["sdk-inner"].parent_id == spans["scoped-middle"].span_id
    assert len({span.trace_id for span in spans.values()}) == 1
    assert [spans[name].sequence_id for name in ("sdk-outer", "scoped-middle", "sdk-inner")] == [1, 2, 3]


@pytest.mark.asyncio
async def test_a_thread_without_the_context_records_under_a_scoped_parent(
    tracer: OtelTracer, store: LightningStore
) -> None:
    adapter = span_tracer("test.adapter")

    async def body() -> None:
        parent = adapter.start_span("parent")
        context = trace_api.set_span_in_context(parent)

        # A plain thread does not copy context variables: only the explicit parent links it to the rollout.
        def work() -> None:
            adapter.start_span("child", context=context).end()
            trace_api.get_tracer("some.library").start_span("sdk-child", context=context).end()

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        parent.end()

    spans = await traced(tracer, store, body)
    assert spans["child"].parent_id == spans["parent"].span_id
    assert spans["sdk-child"].parent_id == spans["parent"].span_id


@pytest.mark.asyncio
async def test_outside_a_trace_context_spans_are_the_providers_own(tracer: OtelTracer) -> None:
    span = span_tracer("test.adapter").start_span("loose")
    assert not isinstance(span, ScopedSpan)
    assert span.is_recording()  # an SDK span of the global provider
    span.end()


@pytest.fixture
def extra_exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace_api.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    processors = provider._active_span_processor._span_processors
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    provider._active_span_processor._span_processors = processors


@pytest.mark.asyncio
async def test_an_attached_exporter_gets_sdk_spans_instead(
    tracer: OtelTracer, store: LightningStore, extra_exporter: InMemorySpanExporter
) -> None:
    def body() -> None:
        span = span_tracer("test.adapter").start_span("exported", attributes={"k": "v"})
        assert not isinstance(span, ScopedSpan)
        span.end()

    spans = await traced(tracer, store, body)
    assert spans["exported"].attributes == {"k": "v"}  # still stored, through the span processor
    assert [span.name for span in extra_exporter.get_finished_spans()] == ["exported"]
