"""OpenAI Agents SDK-specific behaviour of the adapter, beyond the shared conformance suite."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, List

import pytest
from agents import Agent, GuardrailFunctionOutput, InputGuardrail, RunConfig, Runner
from agents.tracing import TracingProcessor, get_trace_provider
from agents.tracing.processors import BackendSpanExporter, BatchTraceProcessor
from agents_harness import ModelKind, agents_state, calculator_agent, model_for

import agentlightning_openai_agents
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import Span
from agentlightning_openai_agents.processor import GUARDRAIL_TRIGGERED, HANDOFF_FROM, HANDOFF_TO
from agentlightning_testing.conformance import FAILING_EXPRESSION, TOOL_NAME, AgentRun, Scenario
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

INSTRUMENTOR = agentlightning_openai_agents.INSTRUMENTOR


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def adapter_off() -> Iterator[None]:
    INSTRUMENTOR.uninstrument()
    yield
    INSTRUMENTOR.uninstrument()


async def traced(run: Callable[[str], Awaitable[Any]], proxy: Any = None) -> List[Span]:
    """Run ``run(base_url)`` inside a rollout's trace context (through ``proxy`` when given); return its spans."""
    store = InMemoryLightningStore(watchdog=False)
    attempted = await store.start_rollout({"task": "test"})
    rollout_id, attempt_id = attempted.rollout_id, attempted.attempt.attempt_id
    async with OtelTracer().trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        if proxy is None:
            await run("")
        else:
            async with LLMProxy(store, [proxy]) as running:
                await run(running.base_url_for(rollout_id, attempt_id))
    spans = list(await store.query_spans(rollout_id))
    await store.close()
    return spans


def adapter_spans(spans: List[Span], operation: str | None = None) -> List[Span]:
    return [
        span
        for span in spans
        if span.attributes.get(FrameworkAttributes.FRAMEWORK) == "openai_agents"
        and (operation is None or span.attributes.get(GenAIAttributes.OPERATION_NAME) == operation)
    ]


def script_handoff(fake: FakeOpenAIServer, marker: str) -> None:
    fake.enqueue_for(
        marker,
        FakeReply.tool_call("transfer_to_math_agent", {}, call_id=f"handoff_{marker}"),
        FakeReply.tool_call(TOOL_NAME, {"expression": "6*7"}, call_id=f"calc_{marker}"),
        FakeReply.text("It is 42."),
    )


def handoff_agents(run: AgentRun) -> Agent[Any]:
    math_agent = calculator_agent(run, "responses", name="math_agent")
    return Agent(
        name="triage_agent",
        instructions="Hand arithmetic over to the math agent.",
        handoffs=[math_agent],
        model=model_for(run, "responses"),
    )


@pytest.mark.parametrize("streamed", [False, True])
def test_handoffs_name_each_agent_and_join_the_proxy_token_ids(fake: FakeOpenAIServer, streamed: bool) -> None:
    """Through the LLM proxy: agent_match selects the math agent's calls, which carry the proxy's token ids."""
    marker = f"handoff-{int(streamed)}"
    script_handoff(fake, marker)
    INSTRUMENTOR.instrument()

    async def run(base_url: str) -> None:
        agent = handoff_agents(AgentRun(Scenario.TOOL, f"{marker}: 6*7?", base_url))
        result: Any
        if streamed:
            result = Runner.run_streamed(agent, f"{marker}: 6*7?")
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, f"{marker}: 6*7?")
        assert result.final_output == "It is 42."

    spans = asyncio.run(traced(run, proxy=ProxyBackend.vllm(fake.base_url)))
    agents = adapter_spans(spans, GenAIOperationNames.INVOKE_AGENT)
    assert [span.attributes[GenAIAttributes.AGENT_NAME] for span in agents] == ["triage_agent", "math_agent"]
    (handoff,) = [span for span in adapter_spans(spans) if span.name.startswith("handoff")]
    assert handoff.name == "handoff triage_agent -> math_agent"
    assert (handoff.attributes[HANDOFF_FROM], handoff.attributes[HANDOFF_TO]) == ("triage_agent", "math_agent")

    math_calls = find_llm_calls(spans, agent_match="^math_agent$", require_token_ids=True)
    assert [call.response_id for call in math_calls] == fake.response_ids(marker)[1:]
    for call in math_calls:
        assert call.token_ids_source == "engine" and call.prompt_token_ids and call.response_token_ids
    assert [call.agent_name for call in find_llm_calls(spans)] == ["triage_agent", "math_agent", "math_agent"]
    # Each LLM span names its turn: the agent and the turn number of the run.
    steps = [
        (span.attributes[FrameworkAttributes.STEP_NAME], span.attributes[FrameworkAttributes.STEP_INDEX])
        for span in adapter_spans(spans, GenAIOperationNames.CHAT)
    ]
    assert steps == [("triage_agent", 1), ("math_agent", 2), ("math_agent", 3)]
    (tool,) = adapter_spans(spans, GenAIOperationNames.EXECUTE_TOOL)
    assert tool.attributes[GenAIAttributes.TOOL_CALL_ID] == f"calc_{marker}"
    assert tool.attributes[GenAIAttributes.TOOL_CALL_RESULT] == "42"
    assert tool.attributes[GenAIAttributes.AGENT_NAME] == "math_agent"


def test_guardrails_are_recorded(fake: FakeOpenAIServer) -> None:
    fake.enqueue_for("guarded", FakeReply.text("Fine."))
    INSTRUMENTOR.instrument()

    def allow_everything(context: Any, agent: Any, user_input: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info="ok", tripwire_triggered=False)

    async def run(_: str) -> None:
        agent = calculator_agent(AgentRun(Scenario.TOOL, "", fake.base_url), "chat")
        agent.input_guardrails = [InputGuardrail(guardrail_function=allow_everything, name="allow_everything")]
        await Runner.run(agent, "guarded: hello")

    spans = asyncio.run(traced(run))
    (guardrail,) = [span for span in adapter_spans(spans) if span.name.startswith("guardrail")]
    assert guardrail.name == "guardrail allow_everything"
    assert guardrail.attributes[GUARDRAIL_TRIGGERED] is False
    assert guardrail.attributes[GenAIAttributes.AGENT_NAME] == "calculator_agent"


def test_the_sdk_export_to_openai_never_runs_while_instrumented(fake: FakeOpenAIServer) -> None:
    """A processor exporting to OpenAI's backend (pointed at the fake server here) receives nothing; others keep running."""
    exporter = BackendSpanExporter(api_key="sk-unused", endpoint=f"{fake.url}/v1/traces/ingest", max_retries=1)
    exporting = BatchTraceProcessor(exporter, schedule_delay=0.05)

    class Counting(TracingProcessor):
        spans = 0

        def on_trace_start(self, trace: Any) -> None: ...
        def on_trace_end(self, trace: Any) -> None: ...
        def on_span_start(self, span: Any) -> None: ...
        def on_span_end(self, span: Any) -> None:
            Counting.spans += 1

        def shutdown(self) -> None: ...
        def force_flush(self) -> None: ...

    provider: Any = get_trace_provider()
    original = tuple(provider._multi_processor._processors)
    counting = Counting()
    provider.set_processors([*original, exporting, counting])
    try:
        before = agents_state()
        fake.enqueue_for("no-export", FakeReply.text("Fine."))
        agentlightning_openai_agents.instrument()

        async def run(_: str) -> None:
            await Runner.run(calculator_agent(AgentRun(Scenario.TOOL, "", fake.base_url), "chat"), "no-export: hi")

        spans = asyncio.run(traced(run))
        exporting.force_flush()
        assert adapter_spans(spans, GenAIOperationNames.CHAT)
        assert Counting.spans > 0, "a processor the user registered stopped receiving spans"
        assert not [r for r in fake.received if r.path == "/v1/traces/ingest"], "spans were exported to OpenAI"
        agentlightning_openai_agents.uninstrument()
        assert agents_state() == before
    finally:
        provider.set_processors(list(original))
        exporting.shutdown()


@pytest.mark.parametrize("kind", ["chat", "responses"])
def test_sensitive_data_off_keeps_prompts_answers_and_tool_errors_out(fake: FakeOpenAIServer, kind: ModelKind) -> None:
    marker = f"private-{kind}"
    fake.enqueue_for(
        marker,
        FakeReply.tool_call(TOOL_NAME, {"expression": FAILING_EXPRESSION}, call_id=f"call_{marker}"),
        FakeReply.text("The secret answer."),
    )
    INSTRUMENTOR.instrument()

    async def run(_: str) -> None:
        agent = calculator_agent(AgentRun(Scenario.TOOL_ERROR, "", fake.base_url), kind)
        await Runner.run(agent, f"{marker}: boom?", run_config=RunConfig(trace_include_sensitive_data=False))

    spans = asyncio.run(traced(run))
    (tool,) = adapter_spans(spans, GenAIOperationNames.EXECUTE_TOOL)
    assert tool.status.status_code == "ERROR"
    assert tool.attributes[GenAIAttributes.TOOL_CALL_ID] == f"call_{marker}"
    assert FAILING_EXPRESSION not in json.dumps(tool.attributes) + (tool.status.description or "")
    llm_spans = adapter_spans(spans, GenAIOperationNames.CHAT)
    assert [span.attributes[GenAIAttributes.RESPONSE_ID] for span in llm_spans] == fake.response_ids(marker)
    for llm in llm_spans:
        # No prompt or answer in the spans; the ids that join the proxy's spans and the usage stay.
        assert marker not in json.dumps(llm.attributes) and "secret" not in json.dumps(llm.attributes)
        assert llm.attributes[GenAIAttributes.REQUEST_MODEL] == "fake-model"
        assert llm.attributes[GenAIAttributes.USAGE_OUTPUT_TOKENS] > 0


def test_instrument_needs_no_runner_and_uninstrument_stops_recording(fake: FakeOpenAIServer) -> None:
    fake.enqueue_for("explicit", FakeReply.text("One."), FakeReply.text("Two."))
    agentlightning_openai_agents.instrument()

    async def run(_: str) -> None:
        agent = calculator_agent(AgentRun(Scenario.TOOL, "", fake.base_url), "responses")
        await Runner.run(agent, "explicit: first")
        agentlightning_openai_agents.uninstrument()
        await Runner.run(agent, "explicit: second")

    spans = asyncio.run(traced(run))
    chats = adapter_spans(spans, GenAIOperationNames.CHAT)
    assert [span.attributes[GenAIAttributes.RESPONSE_ID] for span in chats] == fake.response_ids("explicit")[:1]
    # The package's accessor, also once the processor module is imported.
    assert agentlightning_openai_agents.tracing_processor() is INSTRUMENTOR.processor()
    assert INSTRUMENTOR.processor().open_runs == 0


def test_the_example_runs_with_trainer_dev() -> None:
    """examples/openai_agents_dev.py: Trainer.dev with two runners; every rollout succeeds with reward 1."""
    script = Path(__file__).resolve().parents[3] / "examples" / "openai_agents_dev.py"
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("succeeded") == 3 and "handoff triage_agent -> math_agent" in result.stdout
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
