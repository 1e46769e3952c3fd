"""Filtering and record building on spans of real rollouts (runner -> LLM proxy -> fake OpenAI server),
and the loss masks TRL trains with on the tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Tuple

import openai
import pytest

from agentlightning.litagent import rollout
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.runner import LitAgentRunner
from agentlightning.semconv import LLMCallAttributes
from agentlightning.store import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import LLM, Rollout, Span
from agentlightning_sft import (
    FinishedRollout,
    InvalidRecordError,
    SFTConfig,
    SFTLearner,
    check_chat_record,
    reward_at_least,
)
from agentlightning_sft.records import build_chat_records, build_token_records
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

IDS = {"return_token_ids": True, "logprobs": True}
END = "<|im_end|>"
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}

Setup = Tuple[InMemoryLightningStore, FakeOpenAIServer, LLMProxy, LitAgentRunner]


@rollout
async def chat_tool_agent(task: Dict[str, Any], llm: LLM) -> float:
    """Chat with a calculator tool until the model answers in text (or a call fails)."""
    client = openai.AsyncOpenAI(base_url=llm.endpoint, api_key="x", max_retries=0)
    messages: List[Dict[str, Any]] = [{"role": "user", "content": task["question"]}]
    for _ in range(3):
        try:
            reply = await client.chat.completions.create(model=llm.model, messages=messages, tools=[CALCULATOR])  # type: ignore[arg-type, list-item]
        except openai.APIStatusError:
            return 0.0
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "84"})
    return 1.0


def _user(text: str) -> str:
    return f"<|im_start|>user\n{text}{END}\n<|im_start|>assistant\n"


@rollout
async def text_tool_agent(task: Dict[str, Any], llm: LLM) -> float:
    """One growing ChatML text prompt (token ids = UTF-8 bytes on the fake): calls extend each other exactly."""
    client = openai.AsyncOpenAI(base_url=llm.endpoint, api_key="x")
    prompt = _user(task["question"])
    for _ in range(3):
        text = (await client.completions.create(model=llm.model, prompt=prompt, max_tokens=64)).choices[0].text
        prompt += text
        if re.search(r"<tool_call>", text) is None:
            break
        prompt += "\n" + _user("<tool_response>84</tool_response>")
    return 1.0


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    store = InMemoryLightningStore()
    with FakeOpenAIServer() as fake:
        async with LLMProxy(store, [ProxyBackend(fake.base_url, request_extras=IDS)]) as proxy:
            yield store, fake, proxy, LitAgentRunner(OtelTracer())


async def _play(setup: Setup, agent: Any, task: Dict[str, Any]) -> List[Span]:
    store, _, proxy, runner = setup
    with runner.run_context(agent=agent, store=store):
        result = await runner.step(task, resources={"llm": proxy.as_resource("fake-model")}, mode="train")
    assert result.status == "succeeded"
    return list(await store.query_spans(result.rollout_id))


def _with_response(span: Span, response: Dict[str, Any]) -> Span:
    """The same recorded call, answered differently (what a model emitting a broken tool call leaves)."""
    return span.model_copy(update={"attributes": {**span.attributes, LLMCallAttributes.RESPONSE: json.dumps(response)}})


# ------------------------------------------------------------------------------------------ filtering


def test_the_default_filter_keeps_rewards_at_or_above_the_threshold() -> None:
    keep = reward_at_least(0.5)
    finished = [
        FinishedRollout(Rollout(rollout_id=f"r{i}", input={}, start_time=0.0), reward, [])
        for i, reward in enumerate([None, 0.4, 0.5, 1.0])
    ]
    assert [keep(f) for f in finished] == [False, False, True, True]


# ----------------------------------------------------------------------------------- chat records


async def test_tool_calls_and_tools_survive_into_chat_records(setup: Setup) -> None:
    setup[1].enqueue(FakeReply.tool_call("calculator", {"expression": "12*7"}), FakeReply.text("It is 84."))
    built = build_chat_records(await _play(setup, chat_tool_agent, {"question": "What is 12*7?"}))

    assert built.excluded == {}
    first, second = built.records
    (call,) = first["messages"][-1]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "12*7"}
    assert first["tools"] == second["tools"] == [CALCULATOR]
    # The second call's prompt carries the tool call and its result, as the agent sent them.
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert second["messages"][2] == {"role": "tool", "content": "84", "tool_call_id": call["id"]}
    assert second["messages"][-1] == {"role": "assistant", "content": "It is 84."}


async def test_records_that_cannot_be_built_are_left_out_and_counted(setup: Setup) -> None:
    fake = setup[1]
    fake.enqueue(FakeReply.tool_call("calculator", {"expression": "1+1"}), FakeReply.text("2"))
    spans = await _play(setup, chat_tool_agent, {"question": "1+1?"})
    fake.enqueue(FakeReply.error(500, "the engine crashed"))
    failed_spans = await _play(setup, chat_tool_agent, {"question": "2+2?"})

    # A call the backend failed has no answer.
    failed = build_chat_records(failed_spans)
    assert failed.records == [] and failed.excluded == {"no_response": 1}

    calls = [s for s in spans if LLMCallAttributes.RESPONSE in s.attributes]
    response = json.loads(calls[0].attributes[LLMCallAttributes.RESPONSE])
    broken_json = json.loads(json.dumps(response))
    broken_json["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"expression": "1+'
    unknown_tool = json.loads(json.dumps(response))
    unknown_tool["choices"][0]["message"]["tool_calls"][0]["function"]["name"] = "shell"
    for edited in (broken_json, unknown_tool):
        built = build_chat_records([_with_response(s, edited) if s is calls[0] else s for s in spans])
        assert built.excluded == {"broken_tool_call": 1}
        assert len(built.records) == 1 and built.records[0]["messages"][-1]["content"] == "2"


@pytest.mark.parametrize(
    ("record", "reason", "message"),
    [
        ({"messages": []}, "bad_messages", "non-empty list of messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "bad_messages", "unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": "x"}]}, "no_response", "not an answer"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
            "no_response",
            "neither",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "bad_messages",
            "content must be text",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]},
            "broken_tool_call",
            "without a function name",
        ),
    ],
)
def test_check_chat_record_names_what_is_wrong(record: Dict[str, Any], reason: str, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=re.escape(message)) as caught:
        check_chat_record(record)
    assert caught.value.reason == reason


# ---------------------------------------------------------------------------------- token records


async def test_token_records_train_on_the_model_tokens_only(setup: Setup) -> None:
    setup[1].enqueue(
        FakeReply.text('<tool_call>{"name": "calculator", "arguments": {"expression": "12*7"}}</tool_call>' + END),
        FakeReply.text("12*7 is 84." + END),
    )
    built = build_token_records(await _play(setup, text_tool_agent, {"question": "What is 12*7?"}))
    assert built.excluded == {}
    (record,) = built.records
    ids, mask = record["input_ids"], record["completion_mask"]
    trained = bytes(i for i, bit in zip(ids, mask, strict=True) if bit).decode()
    context = bytes(i for i, bit in zip(ids, mask, strict=True) if not bit).decode()
    assert (
        trained
        == '<tool_call>{"name": "calculator", "arguments": {"expression": "12*7"}}</tool_call>'
        + END
        + "12*7 is 84."
        + END
    )
    assert context == _user("What is 12*7?") + "\n" + _user("<tool_response>84</tool_response>")


async def test_a_sequence_holding_a_failed_call_is_left_out(setup: Setup) -> None:
    setup[1].enqueue(FakeReply.text("fine" + END))
    spans = await _play(setup, text_tool_agent, {"question": "q"})
    (call,) = [s for s in spans if LLMCallAttributes.RESPONSE in s.attributes]
    emptied = [_with_response(s, {"choices": [{"text": ""}]}) if s is call else s for s in spans]
    built = build_token_records(emptied)
    assert built.records == [] and built.excluded == {"no_response": 1}
    stripped = [
        s.model_copy(
            update={"attributes": {k: v for k, v in s.attributes.items() if k != LLMCallAttributes.RESPONSE_TOKEN_IDS}}
        )
        for s in spans
    ]
    assert build_token_records(stripped).excluded == {"no_token_ids": 1}


# ------------------------------------------------------------------------- what TRL trains on


def test_trl_trains_on_the_answer_only(tiny_model: Path, tmp_path: Path) -> None:
    learner = SFTLearner.from_pretrained(tiny_model, SFTConfig(lora_r=4))
    tool_answer = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "12*7"}'}}
        ],
    }
    records = [
        {"messages": [{"role": "user", "content": "What is 12*7?"}, tool_answer], "tools": [CALCULATOR]},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello there"},
            ]
        },
    ]
    prepared = learner.prepared_dataset([check_chat_record(r) for r in records], tmp_path)
    answers = []
    for ids, labels in zip(prepared["input_ids"], prepared["labels"], strict=True):
        answers.append(learner.tokenizer.decode([label for label in labels if label != -100]))
        # The whole conversation is read (the tools' schema included), only the answer is in the loss.
        assert len(ids) == len(labels)
    assert "calculator" in learner.tokenizer.decode(prepared["input_ids"][0][:-20])
    assert answers[0].startswith(
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12*7"}}\n</tool_call>'
    )
    assert answers[1].startswith("hello there") and "hi" not in answers[1]
    assert all(answer.rstrip().endswith(END) for answer in answers)

    tokens = SFTLearner.from_pretrained(tiny_model, SFTConfig(lora_r=4, record_format="tokens"))
    prepared = tokens.prepared_dataset([{"input_ids": [5, 6, 7, 8, 9], "completion_mask": [0, 0, 1, 0, 1]}], tmp_path)
    assert prepared["labels"][0] == [-100, -100, 7, -100, 9]
