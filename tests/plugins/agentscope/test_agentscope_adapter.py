"""AgentScope-specific behaviour of the adapter, beyond the shared conformance suite: tool calls that would
wait for a permission answer, agents built before instrument(), the explicit middleware form, and several
agents in one rollout."""

from __future__ import annotations

import json
import uuid
from typing import Any, Awaitable, Callable, Iterator, List, Tuple

import pytest
from agentscope.message import UserMsg
from agentscope_harness import calculator_agent, run_agent

import agentlightning_agentscope
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import Span
from agentlightning_agentscope.middleware import PERMISSION_ERROR_TYPE, LightningMiddleware
from agentlightning_testing.conformance import TOOL_NAME, AgentRun, Scenario
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

INSTRUMENTOR = agentlightning_agentscope.INSTRUMENTOR


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def adapter_on() -> Iterator[None]:
    agentlightning_agentscope.instrument()
    yield
    agentlightning_agentscope.uninstrument()


async def traced(run: Callable[[], Awaitable[Any]]) -> Tuple[Any, List[Span]]:
    """Await ``run()`` inside a rollout's trace context; its result and the rollout's spans."""
    store = InMemoryLightningStore(watchdog=False)
    attempted = await store.start_rollout({"task": "test"})
    async with OtelTracer().trace_context(
        rollout_id=attempted.rollout_id, attempt_id=attempted.attempt.attempt_id, store=store
    ):
        result = await run()
    spans = list(await store.query_spans(attempted.rollout_id))
    await store.close()
    return result, spans


def of(spans: List[Span], operation: str) -> List[Span]:
    return [
        span
        for span in spans
        if span.attributes.get(FrameworkAttributes.FRAMEWORK) == "agentscope"
        and span.attributes.get(GenAIAttributes.OPERATION_NAME) == operation
    ]


def tool_run(fake: FakeOpenAIServer, final_text: str = "The answer is 4.") -> AgentRun:
    marker = f"m{uuid.uuid4().hex[:10]}"
    fake.enqueue_for(
        marker,
        FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id=f"call_{marker}"),
        FakeReply.text(final_text),
    )
    return AgentRun(Scenario.TOOL, f"Task {marker}: what is 2+2?", fake.base_url)


async def test_a_permission_prompt_in_a_rollout_is_an_error_and_the_reply_goes_on(fake: FakeOpenAIServer) -> None:
    run = tool_run(fake, final_text="I was not allowed to use the calculator.")
    reply, spans = await traced(lambda: run_agent(run, permission=None))  # AgentScope's default: ASK
    assert "waiting for your permission" not in reply.get_text_content()
    assert reply.get_text_content() == "I was not allowed to use the calculator."
    (tool,) = of(spans, GenAIOperationNames.EXECUTE_TOOL)
    assert tool.status.status_code == "ERROR"
    assert tool.attributes[GenAIAttributes.ERROR_TYPE] == PERMISSION_ERROR_TYPE
    assert "permission" in (tool.status.description or "")
    assert tool.attributes[GenAIAttributes.TOOL_CALL_ID] == f"call_{run.question.split()[1].rstrip(':')}"
    llm = of(spans, GenAIOperationNames.CHAT)
    assert len(llm) == 2
    # The model's second call got the denial as the tool's result.
    second = json.loads(llm[1].attributes[LLMCallAttributes.REQUEST])
    assert "nobody gives during a rollout" in json.dumps(second["messages"])


async def test_a_permission_prompt_outside_a_rollout_is_left_to_agentscope(fake: FakeOpenAIServer) -> None:
    run = tool_run(fake)
    reply = await run_agent(run, permission=None)
    assert "waiting for your permission" in reply.get_text_content()


async def test_agents_built_before_instrument_are_recorded_and_left_as_built(fake: FakeOpenAIServer) -> None:
    agentlightning_agentscope.uninstrument()
    run = tool_run(fake)
    agent = await calculator_agent(run)
    built = {name: list(value) for name, value in vars(agent).items() if name.endswith("_middlewares")}
    agentlightning_agentscope.instrument()
    _, spans = await traced(lambda: agent.reply(UserMsg(name="user", content=run.question)))
    assert len(of(spans, GenAIOperationNames.CHAT)) == 2
    assert len(of(spans, GenAIOperationNames.EXECUTE_TOOL)) == 1
    agentlightning_agentscope.uninstrument()
    assert {name: getattr(agent, name) for name in built} == built
    assert agent._model_call_middlewares == []


@pytest.mark.parametrize("instrumented", [False, True])
async def test_the_explicit_middleware_records_each_call_once(fake: FakeOpenAIServer, instrumented: bool) -> None:
    if not instrumented:
        agentlightning_agentscope.uninstrument()
    run = tool_run(fake)
    agent = await calculator_agent(run)
    explicit = type(agent)(
        name="Explicit",
        system_prompt="You answer arithmetic questions with the calculator tool.",
        model=agent.model,
        toolkit=agent.toolkit,
        middlewares=[LightningMiddleware()],
        model_config=agent.model_config,
        injection_config=agent.injection_config,
    )
    _, spans = await traced(lambda: explicit.reply(UserMsg(name="user", content=run.question)))
    llm = of(spans, GenAIOperationNames.CHAT)
    assert sorted(str(span.attributes[GenAIAttributes.RESPONSE_ID]) for span in llm) == sorted(
        fake.response_ids(run.question.split()[1].rstrip(":"))
    )
    assert {span.attributes[GenAIAttributes.AGENT_NAME] for span in llm} == {"Explicit"}


async def test_two_agents_in_one_rollout_keep_their_names(fake: FakeOpenAIServer) -> None:
    first, second = tool_run(fake, "Alice says 4."), tool_run(fake, "Bob says 4.")

    async def conversation() -> None:
        alice = await calculator_agent(first, name="Alice")
        bob = await calculator_agent(second, name="Bob")
        said = await alice.reply(UserMsg(name="user", content=first.question))
        await bob.reply([said, UserMsg(name="user", content=second.question)])

    _, spans = await traced(conversation)
    replies = of(spans, GenAIOperationNames.INVOKE_AGENT)
    assert [span.attributes[GenAIAttributes.AGENT_NAME] for span in replies] == ["Alice", "Bob"]
    assert all(span.attributes.get(FrameworkAttributes.RUN_ID) for span in replies)
    by_id = {span.span_id: span for span in spans}
    for operation in (GenAIOperationNames.CHAT, GenAIOperationNames.EXECUTE_TOOL):
        for span in of(spans, operation):
            parent = by_id[span.parent_id]  # model and tool calls hang from their agent's reply
            assert parent.attributes[GenAIAttributes.AGENT_NAME] == span.attributes[GenAIAttributes.AGENT_NAME]
    alice_calls = find_llm_calls(spans, agent_match="^Alice$")
    assert len(alice_calls) == 2 and {call.agent_name for call in alice_calls} == {"Alice"}
    assert {call.agent_name for call in find_llm_calls(spans, agent_match="^Bob$")} == {"Bob"}
    # The recorded request is the OpenAI wire format the formatter sent: roles and the tool result.
    request = json.loads(of(spans, GenAIOperationNames.CHAT)[1].attributes[LLMCallAttributes.REQUEST])
    assert [message["role"] for message in request["messages"]][:2] == ["system", "user"]
    assert any(message["role"] == "tool" for message in request["messages"])
