"""AutoGen-specific behaviour of the adapter, beyond the shared conformance suite: teams of two agents
(round robin and selector), the raw completion with the server's extras, and AutoGen's event logger."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable, Dict, Iterator, List

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core import EVENT_LOGGER_NAME
from autogen_core.logging import LLMCallEvent
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_harness import MODEL_INFO, calculator_agent, model_client

import agentlightning_autogen
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import Span
from agentlightning_testing.conformance import TOOL_NAME, AgentRun, Scenario
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def adapter_on() -> Iterator[None]:
    agentlightning_autogen.instrument()
    yield
    agentlightning_autogen.uninstrument()


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
        if span.attributes.get(FrameworkAttributes.FRAMEWORK) == "autogen"
        and span.attributes.get(GenAIAttributes.OPERATION_NAME) == operation
    ]


def writer(run: AgentRun) -> AssistantAgent:
    return AssistantAgent("writer", model_client=model_client(run), system_message="Report the result in a sentence.")


def test_round_robin_team_names_each_agent(fake: FakeOpenAIServer) -> None:
    """In a two-agent team each turn is its agent's span, and its LLM and tool calls hang under it."""
    run = AgentRun(Scenario.TOOL, "rr-team: what is 2+2?", fake.base_url)
    fake.enqueue_for(
        "rr-team", FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id="call_rr"), FakeReply.text("rr-4")
    )
    fake.enqueue_for("rr-4", FakeReply.text("The team found 4."))
    researcher, reporter = calculator_agent(run, "researcher"), writer(run)
    team = RoundRobinGroupChat([researcher, reporter], termination_condition=MaxMessageTermination(3))
    spans = traced(lambda: team.run(task=run.question))

    turns = {str(span.attributes[GenAIAttributes.AGENT_NAME]): span for span in adapter_spans(spans, "invoke_agent")}
    assert set(turns) == {"researcher", "writer"}
    llm = adapter_spans(spans, GenAIOperationNames.CHAT)
    assert [span.attributes[GenAIAttributes.AGENT_NAME] for span in llm] == ["researcher", "researcher", "writer"]
    for span in llm:
        assert span.parent_id == turns[str(span.attributes[GenAIAttributes.AGENT_NAME])].span_id
    (tool,) = adapter_spans(spans, GenAIOperationNames.EXECUTE_TOOL)
    assert tool.parent_id == turns["researcher"].span_id
    assert tool.attributes[GenAIAttributes.TOOL_CALL_ID] == "call_rr"
    assert tool.attributes[GenAIAttributes.TOOL_CALL_RESULT] == "4"

    # agent_match selects one agent's calls as training data.
    assert [c.response_id for c in find_llm_calls(spans, agent_match="^researcher$")] == fake.response_ids("rr-team")
    assert [c.response_id for c in find_llm_calls(spans, agent_match="^writer$")] == fake.response_ids("rr-4")


def test_selector_team_records_the_selector_calls_apart(fake: FakeOpenAIServer) -> None:
    """A SelectorGroupChat's speaker selection is an LLM call of the team, not of an agent."""
    run = AgentRun(Scenario.TOOL, "sel-team: what is 2+2?", fake.base_url)
    # The selector's prompt holds the conversation, so it is scripted by the same marker, in order.
    fake.enqueue_for(
        "sel-team",
        FakeReply.text("researcher"),
        FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id="call_sel"),
        FakeReply.text("sel-4"),
    )
    fake.enqueue_for("sel-4", FakeReply.text("The team found 4."))
    team = SelectorGroupChat(
        [calculator_agent(run, "researcher"), writer(run)],
        model_client=model_client(run),
        termination_condition=MaxMessageTermination(3),
        allow_repeated_speaker=False,
    )
    spans = traced(lambda: team.run(task=run.question))

    llm = adapter_spans(spans, GenAIOperationNames.CHAT)
    assert [span.attributes.get(GenAIAttributes.AGENT_NAME) for span in llm] == [
        None,  # the selector
        "researcher",
        "researcher",
        "writer",  # the only candidate left: no selector call
    ]
    assert "researcher" in json.loads(str(llm[0].attributes[LLMCallAttributes.REQUEST]))["messages"][0]["content"]
    assert len(find_llm_calls(spans, agent_match="^researcher$")) == 2


def test_raw_completion_keeps_what_the_server_sent(fake: FakeOpenAIServer) -> None:
    """A call that is not streamed records AutoGen's raw chat completion: vendor extras (token ids) included."""
    run = AgentRun(Scenario.TOOL, "raw-ids: what is 2+2?", fake.base_url)
    fake.enqueue_for("raw-ids", FakeReply.text("4"))
    client = OpenAIChatCompletionClient(
        model=run.model,
        base_url=run.base_url,
        api_key=run.api_key,
        max_retries=0,
        model_info=MODEL_INFO,
        temperature=0.5,
        extra_body={"return_token_ids": True},
    )
    agent = AssistantAgent("plain", model_client=client)
    spans = traced(lambda: agent.run(task=run.question))

    (llm,) = adapter_spans(spans, GenAIOperationNames.CHAT)
    request = json.loads(str(llm.attributes[LLMCallAttributes.REQUEST]))
    assert request["model"] == run.model and request["temperature"] == 0.5
    assert request["messages"][-1] == {"role": "user", "content": run.question, "name": "user"}
    assert llm.attributes[GenAIAttributes.REQUEST_TEMPERATURE] == 0.5
    response = json.loads(str(llm.attributes[LLMCallAttributes.RESPONSE]))
    assert response["id"] == llm.attributes[GenAIAttributes.RESPONSE_ID] == fake.response_ids("raw-ids")[0]
    assert response["prompt_token_ids"] and response["choices"][0]["token_ids"]
    assert llm.attributes[GenAIAttributes.RESPONSE_FINISH_REASONS] == ["stop"]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_event_logger_output_does_not_change(fake: FakeOpenAIServer) -> None:
    """The adapter reads AutoGen's LLM events without letting handlers see records their level hid."""
    events = logging.getLogger(EVENT_LOGGER_NAME)
    root_handler = _Collect()
    logging.getLogger().addHandler(root_handler)
    saved: Dict[str, Any] = {"level": events.level}
    try:
        run = AgentRun(Scenario.TOOL, "log-quiet: what is 2+2?", fake.base_url)
        fake.enqueue_for("log-quiet", FakeReply.text("4"))
        agent = AssistantAgent("quiet", model_client=model_client(run))
        spans = traced(lambda: agent.run(task=run.question))
        assert adapter_spans(spans, GenAIOperationNames.CHAT)[0].attributes[LLMCallAttributes.RESPONSE]
        assert not [r for r in root_handler.records if r.name == EVENT_LOGGER_NAME], "AutoGen's events leaked"

        # A user who asked for the events still gets every one of them.
        agentlightning_autogen.uninstrument()
        events.setLevel(logging.INFO)
        agentlightning_autogen.instrument()
        run = AgentRun(Scenario.TOOL, "log-loud: what is 2+2?", fake.base_url)
        fake.enqueue_for("log-loud", FakeReply.text("4"))
        agent = AssistantAgent("loud", model_client=model_client(run))
        traced(lambda: agent.run(task=run.question))
        assert [r for r in root_handler.records if isinstance(r.msg, LLMCallEvent)]
        agentlightning_autogen.uninstrument()
        assert events.level == logging.INFO
    finally:
        logging.getLogger().removeHandler(root_handler)
        events.setLevel(saved["level"])
