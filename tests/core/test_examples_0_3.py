"""The public calls of the 0.3 line's own examples, driven the way those examples drive them.

The examples (microsoft/agent-lightning, ``examples/minimal``, ``apo``, ``calc_x``, ``spider``, ``rag``
and ``unsloth``) are not copied here: each test below makes the same Agent Lightning calls, in its
own words, with the hosted model replaced by the fake OpenAI server (``agentlightning_testing``) and
GPU training steps left out. The agents' own frameworks (AutoGen, LangGraph, the OpenAI Agents SDK,
MCP tools) are replaced by plain ``openai`` calls: what is tested is the Agent Lightning side.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from typing import Any, Dict, Iterator, List, Optional

import pytest
from openai import AsyncOpenAI, OpenAI

import agentlightning as agl
from agentlightning.adapter import LlmProxyTraceToTriplet, TraceToMessages
from agentlightning.algorithm import AlgorithmNotInstalledError, algo
from agentlightning.env_var import LightningEnvVar, resolve_bool_env_var, resolve_str_env_var
from agentlightning.litagent import rollout
from agentlightning.llm_proxy import LLMProxy, ModelConfig
from agentlightning.runner import LitAgentRunner
from agentlightning.semconv import AGL_OPERATION, LightningSpanAttributes
from agentlightning.store import InMemoryLightningStore, LightningStore, LightningStoreClient
from agentlightning.tracer import OtelTracer
from agentlightning.types import Dataset, Hook, PromptTemplate
from agentlightning.utils.otel import (
    extract_links_from_attributes,
    extract_tags_from_attributes,
    filter_and_unflatten_attributes,
    get_tracer_provider,
    make_link_attributes,
    make_tag_attributes,
    query_linked_spans,
)
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from agentlightning.reward import find_final_reward
    from agentlightning.tracer.agentops import AgentOpsTracer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def openai_env(fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAIServer:
    """The examples build ``OpenAI()`` with no arguments: the environment points it at the fake server."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    return fake


@pytest.fixture(params=["in-process", "client"])
async def example_store(request: pytest.FixtureRequest) -> Any:
    """The store an example writes to: the in-memory store itself, or a client of a store server."""
    store = InMemoryLightningStore()
    if request.param == "in-process":
        yield store
        return
    server = agl.LightningStoreServer(store, "127.0.0.1", 0)
    await server.start()
    client = LightningStoreClient(server.endpoint)
    try:
        yield client
    finally:
        await client.close()
        await server.stop()


# -- examples/minimal ------------------------------------------------------------------------------


async def test_minimal_write_traces_with_the_otel_tracer(example_store: LightningStore) -> None:
    tracer = OtelTracer()
    rollout = await example_store.start_rollout(input={"origin": "write_traces"})
    with tracer.lifespan(example_store):
        async with tracer.trace_context(
            "manual", store=example_store, rollout_id=rollout.rollout_id, attempt_id=rollout.attempt.attempt_id
        ) as otel:
            with otel.start_as_current_span("outer"), otel.start_as_current_span("inner"):
                time.sleep(0.001)
            with otel.start_as_current_span("sibling"):
                pass
            agl.emit_reward(1.0)
    spans = await example_store.query_spans(rollout_id=rollout.rollout_id)
    assert len(spans) == 4
    assert {"outer", "inner", "sibling", "agentlightning.annotation"} == {span.name for span in spans}
    assert spans[-1].name == "agentlightning.annotation"
    assert spans[-1].attributes["agentlightning.reward.0.value"] == 1.0
    for span in spans:  # 0.3's spans name their rollout and attempt in the resource, too
        assert span.resource.attributes["agentlightning.rollout_id"] == rollout.rollout_id
        assert span.resource.attributes["agentlightning.attempt_id"] == rollout.attempt.attempt_id


async def test_minimal_write_traces_with_the_agentops_tracer(
    example_store: LightningStore, openai_env: FakeOpenAIServer
) -> None:
    tracer = AgentOpsTracer()
    rollout = await example_store.start_rollout(input={"origin": "write_traces"})
    with tracer.lifespan(example_store):
        provider = get_tracer_provider(inspect=True)
        assert provider.get_tracer("example") is not None
        async with tracer.trace_context(
            "trace-1", rollout_id=rollout.rollout_id, attempt_id=rollout.attempt.attempt_id
        ):
            response = await AsyncOpenAI().chat.completions.create(
                model="gpt-4.1-mini", messages=[{"role": "user", "content": "Hello, what's your name?"}]
            )
            assert response.choices[0].message.content
            agl.emit_reward(0.5)
    assert agl.find_final_reward(await example_store.query_spans(rollout_id=rollout.rollout_id)) == 0.5


async def test_minimal_write_traces_operation_linked_to_a_reward(example_store: LightningStore) -> None:
    tracer = OtelTracer()
    tags = ["demo.operation", "reward.positive"]
    rollout = await example_store.start_rollout(input={"origin": "operation"})
    with tracer.lifespan(example_store):
        async with tracer.trace_context(
            "operation-demo", store=example_store, rollout_id=rollout.rollout_id, attempt_id=rollout.attempt.attempt_id
        ):
            with agl.operation(conversation_id="chat-42", operation_id="op-1") as op:
                op.set_input(task={"conversation_id": "chat-42"}, metadata={"operation_id": "op-1"})
                op.set_output({"status": "ok"})
            links = make_link_attributes({"conversation_id": "chat-42", "operation_id": "op-1"})
            agl.emit_reward(0.9, attributes={**links, **make_tag_attributes(tags)})
    spans = await example_store.query_spans(rollout_id=rollout.rollout_id)
    operations = [span for span in spans if span.name == AGL_OPERATION]
    assert operations
    (reward_span,) = [
        s for s in spans if filter_and_unflatten_attributes(s.attributes, LightningSpanAttributes.REWARD.value)
    ]
    rewards = filter_and_unflatten_attributes(reward_span.attributes, LightningSpanAttributes.REWARD.value)
    assert isinstance(rewards, list) and rewards[0]["value"] == 0.9
    assert extract_tags_from_attributes(reward_span.attributes) == tags
    matches = query_linked_spans(operations, extract_links_from_attributes(reward_span.attributes))
    assert matches and matches[0].attributes["conversation_id"] == "chat-42"
    assert matches[0].attributes["operation_id"] == "op-1"


async def test_minimal_llm_proxy_in_front_of_a_vllm_like_server(fake: FakeOpenAIServer) -> None:
    store = agl.InMemoryLightningStore()
    store_server = agl.LightningStoreServer(store, "127.0.0.1", 0)
    await store_server.start()
    model_list: List[ModelConfig] = [
        {"model_name": "tiny", "litellm_params": {"model": "hosted_vllm/fake-model", "api_base": fake.base_url}}
    ]
    llm_proxy = agl.LLMProxy(port=0, model_list=model_list, store=store_server)
    client = agl.LightningStoreClient(store_server.endpoint)
    try:
        await llm_proxy.start()
        rollout = await client.start_rollout(input={"origin": "test_llm_proxy"})
        base = llm_proxy.as_resource(rollout.rollout_id, rollout.attempt.attempt_id).endpoint
        answer = await AsyncOpenAI(base_url=base, api_key="unused").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello, what's your name?"}]
        )
        assert answer.choices[0].message.content
        assert getattr(answer, "prompt_token_ids", None)  # vLLM's extra fields come back to the client
        spans = await client.query_spans(rollout_id=rollout.rollout_id, attempt_id=rollout.attempt.attempt_id)
        assert spans
        for span in spans:
            for key in ("agentlightning.rollout_id", "agentlightning.attempt_id", "agentlightning.span_sequence_id"):
                assert key in span.resource.attributes
        assert fake.requests[-1]["model"] == "fake-model" and fake.requests[-1]["return_token_ids"] is True
        (triplet,) = LlmProxyTraceToTriplet().adapt(spans)
        assert triplet.prompt["token_ids"] and triplet.response["token_ids"]
    finally:
        await llm_proxy.stop()
        await client.close()
        await store_server.stop()


async def test_minimal_llm_proxy_in_front_of_openai(fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    store = agl.InMemoryLightningStore()
    model_list = [{"model_name": "gpt-4.1-mini", "litellm_params": {"model": "openai/gpt-4.1-mini"}}]
    proxy = agl.LLMProxy(port=0, model_list=model_list, store=store, callbacks=["opentelemetry"])
    assert proxy.backends[0].base_url == "https://api.openai.com/v1"
    assert proxy.backends[0].api_key == "sk-from-the-environment"
    # The same entry with api_base reaches any OpenAI-compatible server.
    proxy.update_model_list(
        [{"model_name": "gpt-4.1-mini", "litellm_params": {"model": "openai/gpt-4.1-mini", "api_base": fake.base_url}}]
    )
    async with proxy:
        rollout = await store.start_rollout(input=None)
        llm = proxy.as_resource(rollout.rollout_id, rollout.attempt.attempt_id)
        await AsyncOpenAI(base_url=llm.endpoint, api_key="x").chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert fake.received[-1].headers.get("authorization") == "Bearer sk-from-the-environment"
        assert len(await store.query_spans(rollout.rollout_id)) == 1


async def test_minimal_write_metrics_to_the_console_and_prometheus(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import socket

    import httpx
    from prometheus_client import start_http_server

    from agentlightning.utils.metrics import (
        ConsoleMetricsBackend,
        MetricsBackend,
        MultiMetricsBackend,
        PrometheusMetricsBackend,
    )

    console = ConsoleMetricsBackend(window_seconds=15.0, log_interval_seconds=0.0, group_level=1)
    backend: MetricsBackend = MultiMetricsBackend([console, PrometheusMetricsBackend()])
    assert backend.has_prometheus()
    backend.register_counter("example_requests_total", ["operation", "status"])
    backend.register_histogram("example_latency_seconds", ["operation"], buckets=[0.01, 0.1, 1.0])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_http_server(port, addr="127.0.0.1")
    with caplog.at_level(logging.INFO, logger="agentlightning.utils.metrics"):
        for status in ("200", "200", "500"):
            await backend.inc_counter("example_requests_total", labels={"operation": "search", "status": status})
            await backend.observe_histogram("example_latency_seconds", value=0.05, labels={"operation": "search"})
    exposed = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'example_requests_total{operation="search",status="200"} 2.0' in exposed
    assert 'example_latency_seconds_bucket{le="0.1",operation="search"} 3.0' in exposed
    assert any("example_requests_total{operation=search} total=3" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="labels"):
        await backend.inc_counter("example_requests_total", labels={"operation": "search"})
    with pytest.raises(ValueError, match="already registered"):
        backend.register_counter("example_latency_seconds", ["operation"])


# -- examples/apo ----------------------------------------------------------------------------------


@agl.rollout
async def judged_prompt(task: str, prompt_template: agl.PromptTemplate) -> float:
    """Like the APO example's rollout: one call with the prompt, and a number from a judge."""
    client = AsyncOpenAI()
    answer = await client.chat.completions.create(
        model="gpt-4.1-nano", messages=[{"role": "user", "content": prompt_template.format(any_question=task)}]
    )
    verdict = await client.chat.completions.create(
        model="gpt-4.1-nano", messages=[{"role": "user", "content": f"Score: {answer.choices[0].message.content}"}]
    )
    return float(verdict.choices[0].message.content or 0.0)


async def prompt_search(store: agl.LightningStore, prompts: List[str]) -> List[tuple]:
    """The APO example's hand-written algorithm: publish each prompt, run one task, read its reward."""
    results = []
    for prompt in prompts:
        await store.add_resources({"main_prompt": agl.PromptTemplate(template=prompt, engine="f-string")})
        queued = await store.enqueue_rollout(input="Why is the sky blue?", mode="train")
        for _ in range(600):
            done = await store.wait_for_rollouts(rollout_ids=[queued.rollout_id], timeout=0.01)
            if done:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the rollout did not finish")
        assert done[0].status == "succeeded"
        spans = await store.query_spans(queued.rollout_id)
        results.append((prompt, agl.find_final_reward(spans)))
    return results


async def test_apo_custom_algorithm_with_a_runner_over_http(openai_env: FakeOpenAIServer) -> None:
    prompts = ["You are helpful. {any_question}", "You are terse. {any_question}"]
    openai_env.enqueue(FakeReply.text("Rayleigh."), FakeReply.text("0.25"))
    openai_env.enqueue(FakeReply.text("Scattering."), FakeReply.text("0.75"))
    server = agl.LightningStoreServer(agl.InMemoryLightningStore(), "127.0.0.1", 0)
    await server.start()
    algorithm_side, runner_side = agl.LightningStoreClient(server.endpoint), agl.LightningStoreClient(server.endpoint)
    runner = agl.LitAgentRunner[str](tracer=agl.AgentOpsTracer(), max_rollouts=2, poll_interval=0.05)

    async def run_runner() -> None:
        with runner.run_context(agent=judged_prompt, store=runner_side):
            await runner.iter()

    try:
        runner_task = asyncio.ensure_future(run_runner())
        results = await prompt_search(algorithm_side, prompts)
        await asyncio.wait_for(runner_task, 30)
    finally:
        await algorithm_side.close()
        await runner_side.close()
        await server.stop()
    assert results == [(prompts[0], 0.25), (prompts[1], 0.75)]
    assert max(results, key=lambda item: item[1])[0] == prompts[1]


def test_apo_custom_algorithm_in_a_trainer(openai_env: FakeOpenAIServer) -> None:
    openai_env.enqueue(FakeReply.text("a"), FakeReply.text("0.5"))
    found: Dict[str, Any] = {}

    @algo
    async def search(*, store: agl.LightningStore) -> None:
        found["results"] = await prompt_search(store, ["Q: {any_question}"])

    trainer = agl.Trainer(n_workers=1, algorithm=search, store="memory://")
    trainer.fit(judged_prompt)
    assert found["results"] == [("Q: {any_question}", 0.5)]


async def test_apo_debug_with_a_runner_and_hooks(openai_env: FakeOpenAIServer) -> None:
    openai_env.enqueue(FakeReply.text("blue"), FakeReply.text("1"))
    tracer = agl.AgentOpsTracer()
    runner = LitAgentRunner[str](tracer)
    store = InMemoryLightningStore()
    traces: List[int] = []

    class LastTrace(Hook):
        async def on_trace_end(self, *, agent: Any, runner: Any, tracer: Any, rollout: Any) -> None:
            traces.append(len(tracer.get_last_trace()))

    resource = PromptTemplate(template="You are a helpful assistant. {any_question}", engine="f-string")
    with runner.run_context(agent=judged_prompt, store=store, hooks=[LastTrace()]):
        result = await runner.step("Why is the sky blue?", resources={"main_prompt": resource})
    assert result.status == "succeeded" and traces == [0]  # the reward span is added after the trace ends
    assert find_final_reward(await store.query_spans(result.rollout_id)) == 1.0


def test_apo_debug_with_a_trainer(openai_env: FakeOpenAIServer, tmp_path: Any) -> None:
    openai_env.enqueue(FakeReply.text("x"), FakeReply.text("0.5"), FakeReply.text("y"), FakeReply.text("0.5"))
    dataset: Dataset[str] = ["Why is the sky blue?", "What's the capital of France?"]
    resource = PromptTemplate(template="You are a helpful assistant. {any_question}", engine="f-string")
    trainer = agl.Trainer(n_workers=1, initial_resources={"main_prompt": resource}, run_dir=tmp_path)
    trainer.dev(judged_prompt, dataset)
    assert trainer.store is not None
    rollouts = asyncio.run(trainer.store.query_rollouts())
    assert sorted(r.status for r in rollouts) == ["succeeded", "succeeded"]
    trainer.close()


ROOM_TOOL = {
    "type": "function",
    "function": {
        "name": "get_rooms_and_availability",
        "description": "Rooms free at a date and time.",
        "parameters": {
            "type": "object",
            "properties": {"date": {"type": "string"}, "time": {"type": "string"}, "duration_min": {"type": "integer"}},
            "required": ["date", "time", "duration_min"],
        },
    },
}


@rollout
def room_selector(task: Dict[str, Any], prompt_template: PromptTemplate) -> float:
    """Like the room selector: a tool call, the tool's answer, a final choice graded against the task."""
    client = OpenAI()
    messages: List[Any] = [
        {"role": "system", "content": "You are a scheduling assistant."},
        {"role": "user", "content": prompt_template.format(**task["task_input"])},
    ]
    first = client.chat.completions.create(model="gpt-4.1-nano", messages=messages, tools=[ROOM_TOOL], temperature=0)
    calls = first.choices[0].message.tool_calls or []
    messages.append({"role": "assistant", "content": first.choices[0].message.content, "tool_calls": calls})
    for call in calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"rooms": ["Orion"]}'})
    final = client.chat.completions.create(model="gpt-4.1-nano", messages=messages, temperature=0)
    return 1.0 if task["expected_choice"] in (final.choices[0].message.content or "") else 0.0


async def test_apo_room_selector_debug_run(openai_env: FakeOpenAIServer) -> None:
    openai_env.enqueue(
        FakeReply.tool_call("get_rooms_and_availability", {"date": "2025-10-13", "time": "10:00", "duration_min": 30}),
        FakeReply.text("final_choice: Orion"),
    )
    runner = LitAgentRunner[Dict[str, Any]](AgentOpsTracer())
    store = InMemoryLightningStore()
    task = {"task_input": {"date": "2025-10-13", "attendees": 3}, "expected_choice": "Orion"}
    template = PromptTemplate(template="Find a room on {date} for {attendees} people.", engine="f-string")
    with runner.run_context(agent=room_selector, store=store):
        result = await runner.step(task, resources={"main_prompt": template})
    spans = await store.query_spans(result.rollout_id)
    assert isinstance(TraceToMessages().adapt(spans), list)
    assert find_final_reward(spans) == 1.0
    assert openai_env.requests[0]["messages"][1]["content"] == "Find a room on 2025-10-13 for 3 people."


def test_apo_algorithm_module_path_names_its_plugin() -> None:
    try:
        from agentlightning.algorithm.apo import APO
    except AlgorithmNotInstalledError as exc:  # the APO algorithm ships as a plugin distribution
        assert "agentlightning-apo" in str(exc)
    else:  # pragma: no cover - with the plugin installed
        assert callable(APO)


# -- examples/calc_x -------------------------------------------------------------------------------


@agl.rollout
async def calc_agent(task: Dict[str, Any], llm: agl.LLM) -> None:
    """Like calc_x's agent: answer through the LLM resource, emit the reward, return nothing."""
    client = AsyncOpenAI(base_url=llm.endpoint, api_key="unused")
    result = await client.chat.completions.create(
        model=llm.model,
        messages=[{"role": "user", "content": task["question"]}],
        temperature=llm.sampling_parameters.get("temperature", 0.7),
    )
    found = re.search(r"###\s*ANSWER:\s*(.+?)(\s*###|$)", result.choices[0].message.content or "")
    agl.emit_reward(1.0 if found and found.group(1).strip() == task["result"] else 0.0)


async def test_calc_x_debug_run(fake: FakeOpenAIServer) -> None:
    fake.enqueue(FakeReply.text("### ANSWER: 180 ###"), FakeReply.text("### ANSWER: 15 ###"))
    tracer = agl.OtelTracer()
    runner = agl.LitAgentRunner[Dict[str, Any]](tracer)
    store = agl.InMemoryLightningStore()
    resource = agl.LLM(endpoint=fake.base_url, model="gpt-4.1-nano", sampling_parameters={"temperature": 1.0})
    tasks = [{"question": "12 * 15?", "result": "180"}, {"question": "sqrt(256)?", "result": "16"}]
    rewards = []
    with runner.run_context(agent=calc_agent, store=store):
        for task in tasks:
            result = await runner.step(task, resources={"main_llm": resource})
            rewards.append(agl.find_final_reward(await store.query_spans(result.rollout_id)))
    assert rewards == [1.0, 0.0]
    assert fake.requests[0]["temperature"] == 1.0


def test_calc_x_training_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGL_CURRENT_ROLE", "both")
    assert resolve_str_env_var(LightningEnvVar.AGL_CURRENT_ROLE) == "both"
    assert resolve_bool_env_var(LightningEnvVar.AGL_MANAGED_STORE, fallback=True) is True
    with pytest.raises(AlgorithmNotInstalledError, match="agentlightning-verl"):
        agl.VERL({"trainer": {"total_epochs": 1}})
    store = agl.LightningStoreClient("http://127.0.0.1:9")  # an external store, not contacted here
    trainer = agl.Trainer(
        algorithm=agl.Baseline(),
        n_runners=2,
        store=store,
        tracer=agl.OtelTracer(),
        adapter=agl.LlmProxyTraceToTriplet(),
    )
    assert trainer.store is store and trainer.n_runners == 2
    assert isinstance(trainer.adapter, agl.LlmProxyTraceToTriplet)
    asyncio.run(store.close())


# -- examples/spider -------------------------------------------------------------------------------


class SqlLikeAgent(agl.LitAgent[Dict[str, Any]]):
    """Like spider's LitSQLAgent: a sync rollout over resources and the attempted rollout."""

    def __init__(self, trained_agents: Optional[str] = r"write", val_temperature: Optional[float] = None) -> None:
        super().__init__(trained_agents=trained_agents)
        self.val_temperature = val_temperature
        self.seen: List[tuple] = []

    def rollout(self, task: Dict[str, Any], resources: agl.NamedResources, rollout: agl.Rollout) -> Optional[float]:
        llm: agl.LLM = resources["main_llm"]  # type: ignore[assignment]
        attempted = rollout
        assert isinstance(attempted, agl.AttemptedRollout)
        endpoint = llm.get_base_url(attempted.rollout_id, attempted.attempt.attempt_id)
        handler = self.tracer.get_langchain_handler()  # None: adapters instrument LangChain themselves
        temperature = llm.sampling_parameters.get("temperature") if rollout.mode == "train" else self.val_temperature
        self.seen.append((task["question"], rollout.mode, endpoint, handler, temperature))
        return None if task["question"] == "skip" else 1.0


def test_spider_dev_run_and_training_setup() -> None:
    resource = agl.LLM(endpoint="http://127.0.0.1:9/v1", model="m", sampling_parameters={"temperature": 0.7})
    trainer = agl.Trainer(n_workers=1, initial_resources={"main_llm": resource}, store="memory://")
    agent = SqlLikeAgent(val_temperature=0.0)
    with pytest.warns(UserWarning, match="LangChain handler"):  # as 0.3's base tracer, it has none
        trainer.dev(agent, [{"question": "how many singers?"}, {"question": "skip"}])
    assert sorted(agent.seen) == [
        ("how many singers?", "train", "http://127.0.0.1:9/v1", None, 0.7),
        ("skip", "train", "http://127.0.0.1:9/v1", None, 0.7),
    ]
    statuses = sorted(r.status for r in asyncio.run(trainer.store.query_rollouts()))  # type: ignore[union-attr]
    assert statuses == ["succeeded", "succeeded"]  # None is a valid result (no reward)
    training = agl.Trainer(n_runners=10, algorithm=agl.Baseline(), adapter={"agent_match": "write"})
    assert isinstance(training.adapter, agl.TracerTraceToTriplet) and training.adapter.agent_match == "write"


# -- examples/rag ----------------------------------------------------------------------------------


class RagLikeAgent(agl.LitAgent[Dict[str, Any]]):
    """Like rag's RAGAgent: async training and validation rollouts, validation with other resources."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[tuple] = []

    async def training_rollout_async(
        self, task: Dict[str, Any], resources: agl.NamedResources, rollout: agl.Rollout
    ) -> Optional[float]:
        llm: agl.LLM = resources["main_llm"]  # type: ignore[assignment]
        assert isinstance(rollout, agl.AttemptedRollout)
        self.calls.append((rollout.mode, llm.get_base_url(rollout.rollout_id, rollout.attempt.attempt_id)))
        return 0.5

    async def validation_rollout_async(
        self, task: Dict[str, Any], resources: agl.NamedResources, rollout: agl.Rollout
    ) -> Optional[float]:
        llm: agl.LLM = resources["main_llm"]  # type: ignore[assignment]
        cooler = {"main_llm": agl.LLM(endpoint=llm.endpoint, model=llm.model, sampling_parameters={"temperature": 0})}
        return await self.training_rollout_async(task, cooler, rollout)


def test_rag_dev_run(tmp_path: Any, restore_logging: None) -> None:
    agl.setup_logging("DEBUG", apply_to=["rag-like-agent"])
    resources: Dict[str, agl.ResourceUnion] = {
        "main_llm": agl.LLM(endpoint="http://localhost:8000/v1", model="Qwen", sampling_parameters={"temperature": 0.0})
    }
    trainer = agl.Trainer(initial_resources=resources, run_dir=tmp_path)
    agent = RagLikeAgent()
    assert agent.is_async()
    trainer.dev(agent, train_dataset=[{"question": "q1"}], val_dataset=[{"question": "q2"}])
    assert sorted(agent.calls) == [("train", "http://localhost:8000/v1"), ("val", "http://localhost:8000/v1")]
    trainer.close()
    import logging

    logging.getLogger("rag-like-agent").handlers.clear()


# -- examples/unsloth ------------------------------------------------------------------------------


@rollout
async def math_agent(task: Dict[str, Any], llm: agl.LLM) -> float:
    """Like unsloth's math agent: an OpenAI client on the LLM resource's endpoint, the reward returned."""
    client = AsyncOpenAI(base_url=llm.endpoint, api_key=llm.api_key or "dummy")
    answer = await client.chat.completions.create(model=llm.model, messages=[{"role": "user", "content": task["q"]}])
    return 1.0 if task["a"] in (answer.choices[0].message.content or "") else 0.0


def _rollout_runner_process(store: LightningStore, worker_id: int) -> None:
    """Like sft_rollout_runners.run_rollout: a runner in its own process, on the store server's client."""
    runner = LitAgentRunner[Dict[str, Any]](tracer=OtelTracer(), max_rollouts=1, poll_interval=0.05)
    with runner.run_context(agent=math_agent, store=store, worker_id=worker_id):
        asyncio.run(runner.iter())


async def test_unsloth_sft_loop_with_runner_processes(fake: FakeOpenAIServer) -> None:
    fake.enqueue_for("7*6", FakeReply.text("### 42 ###"))
    fake.enqueue_for("1+1", FakeReply.text("### 3 ###"))
    store = agl.InMemoryLightningStore()
    server = agl.LightningStoreServer(store, "127.0.0.1", 0)
    await server.start()
    model_list: List[ModelConfig] = [
        {
            "model_name": "Qwen3-4B-Instruct",
            "litellm_params": {"model": "hosted_vllm/models/version_0", "api_base": fake.base_url},
        }
    ]
    llm_proxy = LLMProxy(port=0, model_list=model_list, store=server)
    processes: List[Any] = []
    try:
        await llm_proxy.start()
        llm_proxy.update_model_list(model_list)
        await llm_proxy.restart()
        update = await server.add_resources({"main_llm": llm_proxy.as_resource()})
        problems = [{"q": "7*6", "a": "42"}, {"q": "1+1", "a": "2"}]
        queued = [
            await server.enqueue_rollout(input=p, mode="train", resources_id=update.resources_id) for p in problems
        ]
        context = multiprocessing.get_context("fork")
        client = LightningStoreClient(server.endpoint)
        processes = [context.Process(target=_rollout_runner_process, args=(client, i)) for i in range(2)]
        for process in processes:
            process.start()
        completed: List[agl.Rollout] = []
        deadline = time.monotonic() + 60
        while len(completed) < len(queued) and time.monotonic() < deadline:
            completed = await server.wait_for_rollouts(rollout_ids=[r.rollout_id for r in queued], timeout=0.0)
            await asyncio.sleep(0.1)
        assert len(completed) == 2
        rewards = {}
        for done in completed:
            triplets = LlmProxyTraceToTriplet().adapt(await server.query_spans(done.rollout_id, "latest"))
            (triplet,) = triplets
            assert triplet.prompt["token_ids"] and triplet.response["token_ids"]
            rewards[done.input["q"]] = triplet.reward  # type: ignore[index]
        assert rewards == {"7*6": 1.0, "1+1": 0.0}
        assert {r["model"] for r in fake.requests} == {"models/version_0"}
    finally:
        for process in processes:
            process.join(30)
        await llm_proxy.stop()
        await server.stop()
    assert [p.exitcode for p in processes] == [0, 0]


# -- the `agl store --port` form -------------------------------------------------------------------


async def test_agl_store_with_the_0_3_options_serves_a_memory_store() -> None:
    env = {**os.environ, "AGL_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("AGL_STORE_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "agentlightning.cli", "store", "--port", "0", "--log-level", "INFO"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = None
        for _ in range(40):
            line = process.stdout.readline()
            found = re.search(r"listening:\s+(http://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None and "memory://" not in url
        client = agl.LightningStoreClient(url)
        queued = await client.enqueue_rollout(input={"task": 1})
        assert (await client.get_rollout_by_id(queued.rollout_id)) is not None
        await client.close()
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
