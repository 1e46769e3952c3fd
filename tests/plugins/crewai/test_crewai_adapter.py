"""CrewAI-specific behaviour of the adapter, beyond the shared conformance suite: crews of two agents
(sequential and hierarchical), Agent.kickoff, the wire-format request, and the flush at kickoff's end."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from crewai import Process
from crewai_harness import calculator_agent, one_agent_crew, two_agent_crew

import agentlightning_crewai
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import Span
from agentlightning_testing.conformance import TOOL_NAME, AgentRun, Scenario
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

INSTRUMENTOR = agentlightning_crewai.INSTRUMENTOR
DELEGATE_TOOL = "delegate_work_to_coworker"  # as CrewAI sends it to the model


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def adapter_on() -> Iterator[None]:
    agentlightning_crewai.instrument()
    yield
    agentlightning_crewai.uninstrument()


def traced(run: Callable[[], Any]) -> List[Span]:
    """Run ``run()`` in a worker thread inside a rollout's trace context; return the rollout's spans."""

    async def scenario() -> List[Span]:
        store = InMemoryLightningStore(watchdog=False)
        attempted = await store.start_rollout({"task": "test"})
        async with OtelTracer().trace_context(
            rollout_id=attempted.rollout_id, attempt_id=attempted.attempt.attempt_id, store=store
        ):
            result = await asyncio.to_thread(run)
            if asyncio.iscoroutine(result):
                await result
        spans = list(await store.query_spans(attempted.rollout_id))
        await store.close()
        return spans

    return asyncio.run(scenario())


def adapter_spans(spans: List[Span], operation: str) -> List[Span]:
    return [
        span
        for span in spans
        if span.attributes.get(FrameworkAttributes.FRAMEWORK) == "crewai"
        and span.attributes.get(GenAIAttributes.OPERATION_NAME) == operation
    ]


def by_agent(spans: List[Span]) -> Dict[str, Span]:
    return {str(span.attributes[GenAIAttributes.AGENT_NAME]): span for span in spans}


def test_sequential_crew_of_two_agents(fake: FakeOpenAIServer) -> None:
    """Each agent's span sits under the crew's, names its task and position; its LLM and tool calls hang under it."""
    fake.enqueue_for(
        "seq-research",
        FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id="call_seq"),
        FakeReply.text("4"),
    )
    fake.enqueue_for("Write one sentence", FakeReply.text("The result is 4."))
    crew = two_agent_crew(AgentRun(Scenario.TOOL, "seq-research: what is 2+2?", fake.base_url), Process.sequential)
    spans = traced(lambda: crew.kickoff())

    agents = adapter_spans(spans, GenAIOperationNames.INVOKE_AGENT)
    (crew_span,) = [span for span in agents if span.parent_id is None or span.name.endswith("research_crew")]
    assert crew_span.name == "invoke_agent research_crew"
    roles = by_agent([span for span in agents if span is not crew_span])
    assert set(roles) == {"Researcher", "Writer"}
    for index, role in enumerate(("Researcher", "Writer")):
        span = roles[role]
        assert span.parent_id == crew_span.span_id
        assert span.attributes[FrameworkAttributes.STEP_INDEX] == index
    assert "seq-research" in str(roles["Researcher"].attributes[FrameworkAttributes.STEP_NAME])

    llm = adapter_spans(spans, GenAIOperationNames.CHAT)
    assert [span.attributes[GenAIAttributes.AGENT_NAME] for span in llm] == ["Researcher", "Researcher", "Writer"]
    for span in llm:
        assert span.parent_id == roles[str(span.attributes[GenAIAttributes.AGENT_NAME])].span_id
    (tool,) = adapter_spans(spans, GenAIOperationNames.EXECUTE_TOOL)
    assert tool.parent_id == roles["Researcher"].span_id
    assert tool.attributes[GenAIAttributes.TOOL_CALL_ID] == "call_seq"

    # Only the selected agent's calls become training data.
    selected = find_llm_calls(spans, agent_match="^Researcher$")
    assert [call.response_id for call in selected] == fake.response_ids("seq-research")
    assert [call.response_id for call in find_llm_calls(spans, agent_match="^Writer$")] == fake.response_ids(
        "Write one sentence"
    )


def test_hierarchical_crew_nests_the_coworker_under_the_delegation(fake: FakeOpenAIServer) -> None:
    """The manager's delegation is a tool span; the coworker's run, with its own calls, nests under it."""
    fake.enqueue_for(
        "hier-manage",
        FakeReply.tool_call(
            DELEGATE_TOOL,
            {"task": "hier-work: compute 2+2", "context": "Use the calculator.", "coworker": "Researcher"},
            call_id="call_delegate",
        ),
        FakeReply.text("The crew found 4."),
    )
    fake.enqueue_for(
        "hier-work",
        FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id="call_hier"),
        FakeReply.text("4"),
    )
    crew = two_agent_crew(AgentRun(Scenario.TOOL, "hier-manage: what is 2+2?", fake.base_url), Process.hierarchical)
    spans = traced(lambda: crew.kickoff())

    by_id = {span.span_id: span for span in spans}
    tools = {span.attributes[GenAIAttributes.TOOL_NAME]: span for span in adapter_spans(spans, "execute_tool")}
    assert set(tools) == {DELEGATE_TOOL, TOOL_NAME}, list(tools)
    delegation = tools[DELEGATE_TOOL]
    assert delegation.attributes[GenAIAttributes.TOOL_CALL_ID] == "call_delegate"
    manager = by_id[str(delegation.parent_id)]
    assert manager.attributes[GenAIAttributes.AGENT_NAME] == "Crew Manager"
    coworker = [
        span
        for span in adapter_spans(spans, GenAIOperationNames.INVOKE_AGENT)
        if span.attributes[GenAIAttributes.AGENT_NAME] == "Researcher"
    ]
    assert len(coworker) == 1 and coworker[0].parent_id == delegation.span_id
    assert tools[TOOL_NAME].parent_id == coworker[0].span_id
    assert tools[TOOL_NAME].attributes[GenAIAttributes.TOOL_CALL_ID] == "call_hier"
    assert "4" in str(tools[DELEGATE_TOOL].attributes[GenAIAttributes.TOOL_CALL_RESULT])

    researcher_calls = find_llm_calls(spans, agent_match="^Researcher$")
    manager_calls = find_llm_calls(spans, agent_match="^Crew Manager$")
    assert [call.response_id for call in researcher_calls] == fake.response_ids("hier-work")
    assert [call.response_id for call in manager_calls] == fake.response_ids("hier-manage")


def test_request_is_in_the_wire_format(fake: FakeOpenAIServer) -> None:
    """CrewAI's events repr() nested strings; the recorded request holds the tool call as it was sent."""
    fake.enqueue_for(
        "wire-format", FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id="call_wire"), FakeReply.text("4")
    )
    crew = one_agent_crew(AgentRun(Scenario.TOOL, "wire-format: what is 2+2?", fake.base_url))
    spans = traced(lambda: crew.kickoff())
    second = json.loads(str(adapter_spans(spans, GenAIOperationNames.CHAT)[1].attributes[LLMCallAttributes.REQUEST]))
    (assistant,) = [message for message in second["messages"] if message["role"] == "assistant"]
    function = assistant["tool_calls"][0]["function"]
    assert function["name"] == TOOL_NAME
    assert json.loads(function["arguments"]) == {"expression": "2+2"}
    sent = [body for body in fake.requests if "wire-format" in json.dumps(body)][1]
    assert second["messages"] == sent["messages"]
    assert second["tools"][0]["function"]["name"] == TOOL_NAME


def test_agent_kickoff_is_recorded(fake: FakeOpenAIServer) -> None:
    """An agent run on its own (`Agent.kickoff`, no crew) gets its agent span with its calls under it."""
    fake.enqueue_for(
        "lone-agent", FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id="call_lone"), FakeReply.text("4")
    )
    agent = calculator_agent(AgentRun(Scenario.TOOL, "", fake.base_url), role="Lone")
    spans = traced(lambda: agent.kickoff("lone-agent: what is 2+2?"))
    (agent_span,) = adapter_spans(spans, GenAIOperationNames.INVOKE_AGENT)
    assert agent_span.attributes[GenAIAttributes.AGENT_NAME] == "Lone"
    llm = adapter_spans(spans, GenAIOperationNames.CHAT)
    assert [span.attributes[GenAIAttributes.RESPONSE_ID] for span in llm] == fake.response_ids("lone-agent")
    assert all(span.parent_id == agent_span.span_id for span in llm)
    (tool,) = adapter_spans(spans, GenAIOperationNames.EXECUTE_TOOL)
    assert tool.attributes[GenAIAttributes.TOOL_CALL_ID] == "call_lone"


def test_kickoff_returns_with_every_span_ended(fake: FakeOpenAIServer) -> None:
    """The bus hands events to background threads; kickoff waits for them, so nothing is left open."""
    fake.enqueue_for(
        "flushed",
        FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id="call_flush", delay=0.05),
        FakeReply.text("4"),
    )
    crew = one_agent_crew(AgentRun(Scenario.TOOL, "flushed: what is 2+2?", fake.base_url))
    listener = INSTRUMENTOR.listener()

    def kickoff_and_count() -> int:
        crew.kickoff()
        return listener.open_runs  # read before anything else could flush the bus

    open_after: List[int] = []
    spans = traced(lambda: open_after.append(kickoff_and_count()))
    assert open_after == [0]
    assert len(adapter_spans(spans, GenAIOperationNames.CHAT)) == 2
    assert len(adapter_spans(spans, GenAIOperationNames.INVOKE_AGENT)) == 2  # the crew and its agent


def test_uninstrument_removes_the_flush(fake: FakeOpenAIServer) -> None:
    from crewai import Crew

    patched = Crew.__dict__["kickoff"]
    agentlightning_crewai.uninstrument()
    assert Crew.__dict__["kickoff"] is not patched
    assert not hasattr(Crew.__dict__["kickoff"], "__wrapped__")


def test_events_are_recorded_in_the_emitting_thread(fake: FakeOpenAIServer) -> None:
    """The listener is none of the bus's handlers: it sees every event, in order, in the thread that emitted it
    (CrewAI's own worker thread), never on the bus's handler threads."""
    from crewai.events import LLMCallCompletedEvent, LLMCallStartedEvent, crewai_event_bus

    fake.enqueue_for(
        "inline",
        FakeReply.tool_call(TOOL_NAME, {"expression": "2+2"}, call_id="call_inline"),
        FakeReply.text("4"),
    )
    crew = one_agent_crew(AgentRun(Scenario.TOOL, "inline: what is 2+2?", fake.base_url))
    listener = INSTRUMENTOR.listener()
    for event_type in listener.event_types:
        handlers = [
            *crewai_event_bus._sync_handlers.get(event_type, ()),
            *crewai_event_bus._async_handlers.get(event_type, ()),
        ]
        assert not [handler for handler in handlers if getattr(handler, "__self__", None) is listener]
    seen: List[Tuple[str, str]] = []
    originals = dict(listener._by_type)

    def spy(event_type: type) -> Callable[[Any, Any], None]:
        def handler(source: Any, event: Any) -> None:
            seen.append((event_type.__name__, threading.current_thread().name))
            originals[event_type](source, event)

        return handler

    listener._by_type.update({kind: spy(kind) for kind in (LLMCallStartedEvent, LLMCallCompletedEvent)})
    try:
        spans = traced(crew.kickoff)
    finally:
        listener._by_type.update(originals)
    assert [name for name, _ in seen] == ["LLMCallStartedEvent", "LLMCallCompletedEvent"] * 2
    threads = {thread for _, thread in seen}
    assert not [name for name in threads if name.startswith("CrewAISyncHandler") or name == "CrewAIEventsLoop"]
    assert len(adapter_spans(spans, GenAIOperationNames.CHAT)) == 2
