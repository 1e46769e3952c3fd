"""LangChain-specific behaviour of the adapter, beyond the shared conformance suite."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator, List, Tuple

import pytest
from langchain_core.messages import HumanMessage
from langchain_harness import build_two_node_graph, chat_model, run_create_agent

import agentlightning as agl
import agentlightning_langchain
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import Span
from agentlightning_testing.conformance import AgentRun, Scenario
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

INSTRUMENTOR = agentlightning_langchain.INSTRUMENTOR


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    # One loop for the module: langchain-openai caches its async HTTP client per base_url, bound to
    # the loop that created it, so a loop per test would break the second async test.
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture(autouse=True)
def adapter_off() -> Iterator[None]:
    INSTRUMENTOR.uninstrument()
    yield
    INSTRUMENTOR.uninstrument()


def script_tool_then_answer(fake: FakeOpenAIServer, marker: str) -> None:
    fake.enqueue_for(
        marker, FakeReply.tool_call("calculator", {"expression": "2+2"}), FakeReply.text("The answer is 4.")
    )


async def traced(run: Any) -> List[Span]:
    """Run ``run()`` (sync, in a thread with the trace context) inside a trace context; return its spans."""
    store = InMemoryLightningStore(watchdog=False)
    attempted = await store.start_rollout({"task": "test"})
    async with OtelTracer().trace_context(
        rollout_id=attempted.rollout_id, attempt_id=attempted.attempt.attempt_id, store=store
    ):
        result = run()
        if asyncio.iscoroutine(result):
            await result
    spans = list(await store.query_spans(attempted.rollout_id))
    await store.close()
    return spans


def adapter_spans(spans: List[Span], operation: str) -> List[Span]:
    return [
        span
        for span in spans
        if span.attributes.get(FrameworkAttributes.FRAMEWORK) == "langchain"
        and span.attributes.get(GenAIAttributes.OPERATION_NAME) == operation
    ]


def test_explicit_handler_records_one_run_without_instrument(
    fake: FakeOpenAIServer, loop: asyncio.AbstractEventLoop
) -> None:
    script_tool_then_answer(fake, "explicit-form")
    run = AgentRun(Scenario.TOOL, "explicit-form: 2+2?", fake.base_url)

    async def invoke() -> None:
        model = chat_model(run)
        config: Any = {"callbacks": [agentlightning_langchain.handler()]}
        await asyncio.to_thread(model.invoke, [HumanMessage(run.question)], config)
        await asyncio.to_thread(model.invoke, [HumanMessage("not traced")])  # no handler, not instrumented

    spans = loop.run_until_complete(traced(invoke))
    assert not INSTRUMENTOR.is_instrumented
    chats = adapter_spans(spans, GenAIOperationNames.CHAT)
    assert len(chats) == 1
    assert chats[0].attributes[GenAIAttributes.RESPONSE_ID] == fake.response_ids("explicit-form")[0]


def test_instrument_and_explicit_handler_record_each_call_once(
    fake: FakeOpenAIServer, loop: asyncio.AbstractEventLoop
) -> None:
    script_tool_then_answer(fake, "both-forms")
    agentlightning_langchain.instrument()
    run = AgentRun(Scenario.TOOL, "both-forms: 2+2?", fake.base_url)

    def invoke() -> None:
        model = chat_model(run)
        model.invoke([HumanMessage(run.question)], config={"callbacks": [agentlightning_langchain.handler()]})

    spans = loop.run_until_complete(traced(lambda: asyncio.to_thread(invoke)))
    assert len(adapter_spans(spans, GenAIOperationNames.CHAT)) == 1


def test_node_spans_make_a_tree_and_agent_match_selects_nodes(
    fake: FakeOpenAIServer, loop: asyncio.AbstractEventLoop
) -> None:
    script_tool_then_answer(fake, "nodes")
    agentlightning_langchain.instrument()
    agentlightning_langchain.configure(node_spans=True)
    try:
        graph = build_two_node_graph(AgentRun(Scenario.TOOL, "", fake.base_url))
        spans = loop.run_until_complete(traced(lambda: graph.ainvoke({"messages": [HumanMessage("nodes: 2+2?")]})))
    finally:
        agentlightning_langchain.configure()

    agents = adapter_spans(spans, GenAIOperationNames.INVOKE_AGENT)
    assert [span.attributes[GenAIAttributes.AGENT_NAME] for span in agents] == [
        "research_graph",
        "researcher",
        "tools",
        "researcher",
    ]
    assert [span.attributes.get(FrameworkAttributes.STEP_INDEX) for span in agents[1:]] == [1, 2, 3]
    root = agents[0]
    assert root.parent_id is None and all(span.parent_id == root.span_id for span in agents[1:])
    (tool,) = adapter_spans(spans, GenAIOperationNames.EXECUTE_TOOL)
    assert tool.attributes[GenAIAttributes.AGENT_NAME] == "tools"
    assert tool.parent_id == agents[2].span_id

    calls = find_llm_calls(spans, agent_match="^researcher$")
    assert [call.response_id for call in calls] == fake.response_ids("nodes")
    assert find_llm_calls(spans, agent_match="^tools$") == []


def test_root_run_nests_under_the_callers_span(fake: FakeOpenAIServer, loop: asyncio.AbstractEventLoop) -> None:
    script_tool_then_answer(fake, "nested")
    agentlightning_langchain.instrument()

    def invoke() -> None:
        with agl.operation(name="my-step"):
            run_create_agent(AgentRun(Scenario.TOOL, "nested: 2+2?", fake.base_url))

    spans = loop.run_until_complete(traced(lambda: asyncio.to_thread(invoke)))
    operation = next(span for span in spans if span.attributes.get(FrameworkAttributes.FRAMEWORK) is None)
    root = next(span for span in adapter_spans(spans, GenAIOperationNames.INVOKE_AGENT) if span.parent_id is not None)
    assert root.attributes[GenAIAttributes.AGENT_NAME] == "calculator_agent"
    assert root.parent_id == operation.span_id


def test_no_run_is_left_open(fake: FakeOpenAIServer) -> None:
    """Successful, failing and streamed runs all end their spans (nothing leaks in the handler)."""
    agentlightning_langchain.instrument()
    handler = agentlightning_langchain.handler()
    for scenario in (Scenario.TOOL, Scenario.TOOL_ERROR, Scenario.LLM_ERROR, Scenario.STREAM):
        marker = f"open-{scenario.value}"
        if scenario is Scenario.LLM_ERROR:
            fake.enqueue_for(marker, FakeReply.error(400, "no"))
        elif scenario is Scenario.TOOL_ERROR:
            fake.enqueue_for(marker, FakeReply.tool_call("calculator", {"expression": "boom"}))
        else:
            script_tool_then_answer(fake, marker)
        try:
            run_create_agent(AgentRun(scenario, f"{marker}: 2+2?", fake.base_url))
        except Exception:
            pass
    assert handler.open_runs == 0


def test_a_context_can_opt_out(fake: FakeOpenAIServer, loop: asyncio.AbstractEventLoop) -> None:
    """Setting the hook's context variable to None turns capture off for that context only."""
    script_tool_then_answer(fake, "opt-out")
    agentlightning_langchain.instrument()
    hook_var = INSTRUMENTOR.hook_var
    assert hook_var is not None

    def invoke() -> None:
        token = hook_var.set(None)
        try:
            run_create_agent(AgentRun(Scenario.TOOL, "opt-out: 2+2?", fake.base_url))
        finally:
            hook_var.reset(token)

    spans = loop.run_until_complete(traced(lambda: asyncio.to_thread(invoke)))
    assert [span for span in spans if span.attributes.get(FrameworkAttributes.FRAMEWORK)] == []
    assert len(fake.response_ids("opt-out")) == 2


def test_streamed_and_plain_calls_join_the_proxy_with_token_ids(
    fake: FakeOpenAIServer, loop: asyncio.AbstractEventLoop
) -> None:
    """Through the LLM proxy, agent_match picks the graph node's calls, with the proxy's exact token ids."""
    proxy_module = pytest.importorskip("agentlightning.proxy", reason="proxy not available")
    agentlightning_langchain.instrument()

    async def scenario() -> Tuple[List[Span], List[str]]:
        store = InMemoryLightningStore(watchdog=False)
        attempted = await store.start_rollout({"task": "proxy"})
        rollout_id, attempt_id = attempted.rollout_id, attempted.attempt.attempt_id
        markers = ["proxy-plain", "proxy-stream"]
        for marker in markers:
            script_tool_then_answer(fake, marker)
        proxy = proxy_module.LLMProxy(store=store, backends=[proxy_module.ProxyBackend.vllm(fake.base_url)])
        await proxy.start()
        try:
            async with OtelTracer().trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
                for marker, scenario in zip(markers, (Scenario.TOOL, Scenario.STREAM), strict=True):
                    run = AgentRun(scenario, "", proxy.base_url_for(rollout_id, attempt_id))
                    graph = build_two_node_graph(run)
                    inputs = {"messages": [HumanMessage(f"{marker}: 2+2?")]}
                    if run.stream:
                        async for _ in graph.astream(inputs, stream_mode="messages"):
                            pass
                    else:
                        await graph.ainvoke(inputs)
        finally:
            await proxy.stop()
        spans = list(await store.query_spans(rollout_id))
        await store.close()
        return spans, [rid for marker in markers for rid in fake.response_ids(marker)]

    spans, response_ids = loop.run_until_complete(scenario())
    calls = find_llm_calls(spans, agent_match="^researcher$", require_token_ids=True)
    assert sorted(call.response_id or "" for call in calls) == sorted(response_ids)
    assert all(call.has_token_ids and call.agent_name == "researcher" for call in calls)


def test_by_default_calls_name_their_node_without_node_spans(
    fake: FakeOpenAIServer, loop: asyncio.AbstractEventLoop
) -> None:
    script_tool_then_answer(fake, "lean")
    agentlightning_langchain.instrument()
    graph = build_two_node_graph(AgentRun(Scenario.TOOL, "", fake.base_url))
    spans = loop.run_until_complete(traced(lambda: graph.ainvoke({"messages": [HumanMessage("lean: 2+2?")]})))
    agents = adapter_spans(spans, GenAIOperationNames.INVOKE_AGENT)
    assert [span.attributes[GenAIAttributes.AGENT_NAME] for span in agents] == ["research_graph"]
    chats = adapter_spans(spans, GenAIOperationNames.CHAT)
    assert [span.attributes[GenAIAttributes.AGENT_NAME] for span in chats] == ["researcher", "researcher"]
    assert [span.attributes[FrameworkAttributes.STEP_INDEX] for span in chats] == [1, 3]
    (tool,) = adapter_spans(spans, GenAIOperationNames.EXECUTE_TOOL)
    assert tool.attributes[GenAIAttributes.AGENT_NAME] == "tools"
    assert all(span.parent_id == agents[0].span_id for span in [*chats, tool])
    assert [call.response_id for call in find_llm_calls(spans, agent_match="^researcher$")] == fake.response_ids("lean")
