"""Adapters on spans recorded by real rollouts: a runner plays an `openai` agent through the LLM proxy.

The fake backend reports token ids as UTF-8 bytes (prompt ids of a text prompt are its bytes), so an
agent that keeps extending one ChatML text prompt produces calls whose prompts extend each other
exactly, like a real engine behind a chat template.
"""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator, Dict, List

import openai
import pytest

from agentlightning.adapter import (
    LlmProxyTraceToTriplet,
    TracerTraceToTriplet,
    TraceToMessages,
    TraceToTokenSequences,
)
from agentlightning.litagent import rollout
from agentlightning.proxy import AGENT_NAME_HEADER, LLMProxy, ProxyBackend
from agentlightning.runner import LitAgentRunner
from agentlightning.store import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import LLM, Span
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

IDS = {"return_token_ids": True, "logprobs": True}
END = "<|im_end|>"


def _user(text: str) -> str:
    return f"<|im_start|>user\n{text}{END}\n<|im_start|>assistant\n"


@rollout
async def calculator_agent(task: Dict[str, Any], llm: LLM) -> float:
    """Asks the model, runs the calculator tool it calls, feeds the result back, until a final answer."""
    client = openai.AsyncOpenAI(base_url=llm.endpoint, api_key="x")
    prompt = _user(task["question"])
    text = ""
    for _ in range(4):
        completion = await client.completions.create(model=llm.model, prompt=prompt, max_tokens=64)
        text = completion.choices[0].text
        prompt += text
        call = re.search(r"<tool_call>(.*?)</tool_call>", text, re.S)
        if call is None:
            break
        expression = json.loads(call.group(1))["arguments"]["expression"]
        a, b = (int(x) for x in expression.split("*"))
        prompt += "\n" + _user(f"<tool_response>{a * b}</tool_response>")
        if task.get("rewrite_history"):
            # An agent that edits earlier turns breaks the prefix: training must split there.
            prompt = prompt.replace(task["question"], task["question"].upper())
    return 1.0 if str(task["answer"]) in text else 0.0


@rollout
async def two_agents(task: Dict[str, Any], llm: LLM) -> float:
    """A writer drafts, a reviewer checks: two agents, each naming itself in a header."""
    answers = []
    for agent in ("writer", "reviewer"):
        client = openai.AsyncOpenAI(base_url=llm.endpoint, api_key="x", default_headers={AGENT_NAME_HEADER: agent})
        reply = await client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": f"{agent}: {task['question']}"}]
        )
        answers.append(reply.choices[0].message.content)
    return 0.5


@pytest.fixture
async def setup() -> AsyncIterator[tuple[InMemoryLightningStore, FakeOpenAIServer, LLMProxy, LitAgentRunner[Any]]]:
    store = InMemoryLightningStore()
    with FakeOpenAIServer() as fake:
        async with LLMProxy(store, [ProxyBackend(fake.base_url, request_extras=IDS)]) as proxy:
            runner: LitAgentRunner[Any] = LitAgentRunner(OtelTracer())
            yield store, fake, proxy, runner


async def _play(setup: Any, agent: Any, task: Dict[str, Any]) -> List[Span]:
    store, _, proxy, runner = setup
    with runner.run_context(agent=agent, store=store):
        result = await runner.step(task, resources={"llm": proxy.as_resource("fake-model")}, mode="train")
    assert result.status == "succeeded"
    return await store.query_spans(result.rollout_id)


def _tool_turns(fake: FakeOpenAIServer) -> None:
    fake.enqueue(
        FakeReply.text('<tool_call>{"name": "calculator", "arguments": {"expression": "12*7"}}</tool_call>' + END),
        FakeReply.text("12*7 is 84." + END),
    )


async def test_multi_turn_tool_use_becomes_one_sequence(setup: Any) -> None:
    _tool_turns(setup[1])
    spans = await _play(setup, calculator_agent, {"question": "What is 12*7?", "answer": 84})

    triplets = TracerTraceToTriplet().adapt(spans)
    assert len(triplets) == 2
    first, second = triplets
    assert bytes(first.prompt["token_ids"]).decode() == _user("What is 12*7?")
    assert bytes(first.response["token_ids"]).decode().startswith("<tool_call>")
    assert len(first.response["logprobs"]) == len(first.response["token_ids"])
    # The reward comes after the last call: it is that call's (first_occurrence rule).
    assert first.reward is None and second.reward == 1.0
    assert second.metadata["response_id"] and second.metadata["token_ids_source"] == "engine"
    assert [t.reward for t in LlmProxyTraceToTriplet(reward_match="final").adapt(spans)] == [1.0, 1.0]

    adapter = TraceToTokenSequences()
    (sequence,) = adapter.adapt(spans)
    assert adapter.breaks == []
    text = bytes(sequence.token_ids).decode()
    assert text == bytes(second.prompt["token_ids"] + second.response["token_ids"]).decode()
    assert sequence.reward == 1.0 and sequence.prompt_length == len(first.prompt["token_ids"])
    # Exactly the model's tokens are trained on: both responses, not the prompt or the tool result.
    trained = bytes(t for t, m in zip(sequence.token_ids, sequence.loss_mask, strict=True) if m).decode()
    assert trained == bytes(first.response["token_ids"] + second.response["token_ids"]).decode()
    masked = [lp for lp, m in zip(sequence.logprobs, sequence.loss_mask, strict=True) if m]
    assert all(lp is not None and lp < 0 for lp in masked)
    assert sequence.span_ids == [t.metadata["span_id"] for t in triplets]


async def test_a_broken_prefix_splits_the_sequence_and_is_reported(setup: Any) -> None:
    _tool_turns(setup[1])
    task = {"question": "What is 12*7?", "answer": 84, "rewrite_history": True}
    spans = await _play(setup, calculator_agent, task)
    adapter = TraceToTokenSequences()
    sequences = adapter.adapt(spans)
    assert len(sequences) == 2
    (split,) = adapter.breaks
    assert split.span_id == sequences[1].span_ids[0]
    # "What" became "WHAT": the first difference is the "h", right after the question's "W".
    assert split.position == len("<|im_start|>user\nW")
    assert [s.metadata["part"] for s in sequences] == [0, 1]
    assert all(s.reward == 1.0 for s in sequences)
    assert sequences[1].prompt_length == split.prompt_length


async def test_agent_match_selects_one_agent(setup: Any) -> None:
    spans = await _play(setup, two_agents, {"question": "2+2"})
    every = TracerTraceToTriplet().adapt(spans)
    assert [t.metadata["agent_name"] for t in every] == ["writer", "reviewer"]
    (reviewer,) = TracerTraceToTriplet(agent_match="^review").adapt(spans)
    assert reviewer.metadata["agent_name"] == "reviewer"
    assert reviewer.reward == 0.5
    (writer_sequence,) = TraceToTokenSequences(agent_match="writer").adapt(spans)
    assert bytes(writer_sequence.token_ids[: writer_sequence.prompt_length]).decode().count("writer: 2+2") == 1
    (writer_record,) = TraceToMessages(agent_match="writer").adapt(spans)
    assert writer_record["messages"][0] == {"role": "user", "content": "writer: 2+2"}
    assert writer_record["messages"][-1]["role"] == "assistant"


async def test_messages_keep_tools_and_tool_calls(setup: Any) -> None:
    store, fake, proxy, runner = setup
    fake.enqueue(FakeReply.tool_call("calculator", {"expression": "3*3"}))
    attempt = await store.start_rollout(input="q")
    client = openai.AsyncOpenAI(
        base_url=proxy.base_url_for(attempt.rollout_id, attempt.attempt.attempt_id), api_key="x"
    )
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]
    await client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "3*3?"}],
        tools=tools,  # type: ignore[arg-type]
    )
    (record,) = TraceToMessages().adapt(await store.query_spans(attempt.rollout_id))
    assert record["tools"] == tools
    (call,) = record["messages"][-1]["tool_calls"]
    assert call["function"]["name"] == "calculator"


def test_unknown_reward_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="'nearest'"):
        TracerTraceToTriplet(reward_match="nearest")
