"""Agent Framework-specific behaviour of the adapter, beyond the shared conformance suite: an agent used as
another agent's tool, the framework's own OpenTelemetry spans (nested, counted once, off), the user's
middleware, and a TracerProvider the user set up."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, List

import pytest
from af_harness import calculator_agent
from agent_framework import Agent, ChatContext, ChatMiddleware, Message
from agent_framework.observability import OBSERVABILITY_SETTINGS

import agentlightning_agent_framework
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import Span
from agentlightning_testing.conformance import TOOL_NAME, AgentRun, Scenario
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

HARNESS_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def adapter_on() -> Iterator[None]:
    agentlightning_agent_framework.instrument()
    yield
    agentlightning_agent_framework.uninstrument()


def traced(run: Callable[[], Awaitable[Any]]) -> List[Span]:
    """Await ``run()`` inside a rollout's trace context; return the rollout's spans."""

    async def scenario() -> List[Span]:
        store = InMemoryLightningStore(watchdog=False)
        attempted = await store.start_rollout({"task": "test"})
        async with OtelTracer().trace_context(
            rollout_id=attempted.rollout_id, attempt_id=attempted.attempt.attempt_id, store=store
        ):
            await run()
        spans = list(await store.query_spans(attempted.rollout_id))
        await store.close()
        return spans

    return asyncio.run(scenario())


def adapter_spans(spans: List[Span], operation: str) -> List[Span]:
    return [
        span
        for span in spans
        if span.attributes.get(FrameworkAttributes.FRAMEWORK) == "agent_framework"
        and span.attributes.get(GenAIAttributes.OPERATION_NAME) == operation
    ]


def framework_own_spans(spans: List[Span], operation: str) -> List[Span]:
    """Agent Framework's own OpenTelemetry spans (no adapter attribute)."""
    return [
        span
        for span in spans
        if FrameworkAttributes.FRAMEWORK not in span.attributes
        and span.attributes.get(GenAIAttributes.OPERATION_NAME) == operation
    ]


def script_tool_run(fake: FakeOpenAIServer, marker: str) -> None:
    fake.enqueue_for(
        marker,
        FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id=f"call_{marker}"),
        FakeReply.text("The answer is 4."),
    )


def test_agent_as_a_tool_names_each_agent(fake: FakeOpenAIServer) -> None:
    """A coordinator calls a math agent as its tool: each LLM call names its own agent, nested as it ran."""
    fake.enqueue_for(
        "af-coord",
        FakeReply.tool_call("math_agent", {"task": "af-inner: compute 2+2"}, call_id="call_coord"),
        FakeReply.text("The coordinator found 4."),
    )
    script_tool_run(fake, "af-inner")
    run = AgentRun(Scenario.TOOL, "af-coord: what is 2+2?", fake.base_url)
    math_agent = calculator_agent(run, "chat_completions", name="math_agent")
    coordinator = Agent(
        client=math_agent.client, name="coordinator", instructions="Delegate arithmetic.", tools=[math_agent.as_tool()]
    )
    spans = traced(lambda: coordinator.run(run.question))

    by_id = {span.span_id: span for span in spans}

    def agent_above(span: Span) -> Span:
        # The framework's own invoke_agent span sits between the adapter's agent span and its calls.
        parent = by_id[str(span.parent_id)]
        while parent.attributes.get(FrameworkAttributes.FRAMEWORK) != "agent_framework":
            parent = by_id[str(parent.parent_id)]
        return parent

    agents = {str(s.attributes[GenAIAttributes.AGENT_NAME]): s for s in adapter_spans(spans, "invoke_agent")}
    assert set(agents) == {"coordinator", "math_agent"}
    tools = {str(s.attributes[GenAIAttributes.TOOL_NAME]): s for s in adapter_spans(spans, "execute_tool")}
    assert set(tools) == {"math_agent", TOOL_NAME}
    # The inner agent runs inside the coordinator's tool call.
    assert agent_above(agents["math_agent"]) is tools["math_agent"]
    assert agent_above(tools["math_agent"]) is agents["coordinator"]
    assert tools["math_agent"].attributes[GenAIAttributes.TOOL_CALL_ID] == "call_coord"
    assert "4" in str(tools["math_agent"].attributes[GenAIAttributes.TOOL_CALL_RESULT])
    assert tools[TOOL_NAME].attributes[GenAIAttributes.AGENT_NAME] == "math_agent"

    llm = adapter_spans(spans, GenAIOperationNames.CHAT)
    names = [span.attributes[GenAIAttributes.AGENT_NAME] for span in llm]
    assert sorted(names) == ["coordinator", "coordinator", "math_agent", "math_agent"]
    for span in llm:
        assert agent_above(span) is agents[str(span.attributes[GenAIAttributes.AGENT_NAME])]
    inner = find_llm_calls(spans, agent_match="^math_agent$")
    assert [call.response_id for call in inner] == fake.response_ids("af-inner")


def test_framework_spans_nest_under_the_adapter_and_count_once(fake: FakeOpenAIServer) -> None:
    """Agent Framework's own spans land in the rollout under the adapter's, and each call counts once."""
    script_tool_run(fake, "af-own")
    run = AgentRun(Scenario.TOOL, "af-own: what is 2+2?", fake.base_url)
    spans = traced(lambda: calculator_agent(run, "chat_completions").run(run.question))

    ours = adapter_spans(spans, GenAIOperationNames.CHAT)
    theirs = framework_own_spans(spans, GenAIOperationNames.CHAT)
    assert len(ours) == len(theirs) == 2
    for own in theirs:
        (twin,) = [span for span in ours if span.span_id == own.parent_id]
        assert own.attributes[GenAIAttributes.RESPONSE_ID] == twin.attributes[GenAIAttributes.RESPONSE_ID]
    assert framework_own_spans(spans, GenAIOperationNames.EXECUTE_TOOL)
    calls = find_llm_calls(spans)
    assert [call.response_id for call in calls] == fake.response_ids("af-own")
    assert {call.agent_name for call in calls} == {"calculator_agent"}


def test_framework_instrumentation_off_leaves_the_adapter(fake: FakeOpenAIServer) -> None:
    """With Agent Framework's own telemetry off, the adapter still records every call in full."""
    script_tool_run(fake, "af-quiet")
    run = AgentRun(Scenario.TOOL, "af-quiet: what is 2+2?", fake.base_url)
    OBSERVABILITY_SETTINGS.enable_instrumentation = False
    try:
        spans = traced(lambda: calculator_agent(run, "responses").run(run.question))
    finally:
        OBSERVABILITY_SETTINGS.enable_instrumentation = True
    assert framework_own_spans(spans, GenAIOperationNames.CHAT) == []
    llm = adapter_spans(spans, GenAIOperationNames.CHAT)
    assert [span.attributes[GenAIAttributes.RESPONSE_ID] for span in llm] == fake.response_ids("af-quiet")
    assert all((span.attributes.get(GenAIAttributes.USAGE_OUTPUT_TOKENS) or 0) > 0 for span in llm)


class _SystemNote(ChatMiddleware):
    async def process(self, context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        context.messages.insert(0, Message(role="system", contents=["note-from-user-middleware"]))
        await call_next()


def test_the_request_is_recorded_after_the_users_middleware(fake: FakeOpenAIServer) -> None:
    """The adapter's chat middleware runs last, so the recorded request is what went on the wire."""
    script_tool_run(fake, "af-mw")
    run = AgentRun(Scenario.TOOL, "af-mw: what is 2+2?", fake.base_url)
    agent = calculator_agent(run, "chat_completions")
    spans = traced(lambda: agent.run(run.question, middleware=[_SystemNote()]))

    first = adapter_spans(spans, GenAIOperationNames.CHAT)[0]
    request = json.loads(str(first.attributes[LLMCallAttributes.REQUEST]))
    assert request["messages"][1] == {"role": "system", "content": "note-from-user-middleware"}
    assert request["tools"][0]["function"]["name"] == TOOL_NAME
    sent = [body for body in fake.requests if "af-mw" in json.dumps(body)][0]
    assert [m["content"] for m in request["messages"]] == [m.get("content") for m in sent["messages"]]
    response = json.loads(str(first.attributes[LLMCallAttributes.RESPONSE]))
    assert response["id"] == first.attributes[GenAIAttributes.RESPONSE_ID]
    assert response["choices"][0]["message"]["tool_calls"][0]["id"] == "call_af-mw"


_OWN_PROVIDER_SCRIPT = """
import asyncio, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# The user's own provider and exporter, set up before Agent Lightning is imported.
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

sys.path.insert(0, {harness_dir!r})
from af_harness import run_agent
import agentlightning_agent_framework
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning_testing.conformance import AgentRun, Scenario, TOOL_NAME
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

async def main():
    with FakeOpenAIServer() as server:
        server.enqueue_for("own", FakeReply.tool_call(TOOL_NAME, {{"expression": "2+2"}}), FakeReply.text("4"))
        agentlightning_agent_framework.instrument()
        store = InMemoryLightningStore(watchdog=False)
        attempted = await store.start_rollout({{}})
        tracer = OtelTracer()
        tracer.init_worker(0, store)  # as a runner does
        async with tracer.trace_context(
            rollout_id=attempted.rollout_id, attempt_id=attempted.attempt.attempt_id, store=store
        ):
            await run_agent(AgentRun(Scenario.TOOL, "own: what is 2+2?", server.base_url), "chat_completions")
        stored = await store.query_spans(attempted.rollout_id)
    assert trace.get_tracer_provider() is provider, "the user's provider was replaced"
    exported = {{span.name for span in exporter.get_finished_spans()}}
    stored_names = {{span.name for span in stored}}
    framework = [s for s in stored if "agentlightning.framework" not in s.attributes]
    print("exported:", sorted(exported))
    print("stored:", sorted((s.name, str(s.attributes.get("agentlightning.framework"))) for s in stored))
    assert "invoke_agent calculator_agent" in exported and "chat fake-model" in exported, exported
    assert framework and any(s.attributes.get("gen_ai.operation.name") == "chat" for s in framework)
    assert sum(1 for s in stored if s.attributes.get("agentlightning.framework") == "agent_framework") == 4
    print("OK")

asyncio.run(main())
"""


def test_a_tracer_provider_the_user_set_is_kept() -> None:
    """The user's TracerProvider stays the global one and keeps exporting; the rollout gets the spans too."""
    script = _OWN_PROVIDER_SCRIPT.format(harness_dir=str(HARNESS_DIR))
    env = {key: value for key, value in os.environ.items() if key != "AGL_DISABLE_PLUGIN_AUTOLOAD"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
