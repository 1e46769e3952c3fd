"""The Responses API (`/v1/responses`) through the LLM proxy: the real `openai` SDK in front, the fake server behind."""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator, Dict, List

import openai
import pytest

from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.semconv import TOKEN_IDS_FROM_ENGINE, GenAIAttributes, LLMCallAttributes
from agentlightning.store import InMemoryLightningStore
from agentlightning.types import AttemptedRollout, Span
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

TOOLS: List[Dict[str, Any]] = [
    {
        "type": "function",
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    }
]
LOGPROBS = ["message.output_text.logprobs"]


@pytest.fixture
def fake() -> Any:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
async def store() -> InMemoryLightningStore:
    return InMemoryLightningStore()


@pytest.fixture
async def proxy(store: InMemoryLightningStore, fake: FakeOpenAIServer) -> AsyncIterator[LLMProxy]:
    # As ProxyBackend.vllm() does: token ids for chat and for the Responses API.
    async with LLMProxy(store, [ProxyBackend.vllm(fake.base_url)]) as running:
        yield running


async def _attempt(store: Any) -> AttemptedRollout:
    return await store.start_rollout(input={"question": "1+1"})


async def _llm_spans(store: Any, rollout: AttemptedRollout) -> List[Span]:
    spans = await store.query_spans(rollout.rollout_id, rollout.attempt.attempt_id)
    return [s for s in spans if GenAIAttributes.OPERATION_NAME in s.attributes]


def _client(proxy: LLMProxy, rollout: AttemptedRollout) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url_for(rollout.rollout_id, rollout.attempt.attempt_id), api_key="x")


async def test_plain_response_is_relayed_and_recorded_with_token_ids(
    proxy: LLMProxy, store: Any, fake: FakeOpenAIServer
) -> None:
    rollout = await _attempt(store)
    fake.enqueue(FakeReply.text("It is 19.", token_ids=[11, 12, 13, 2]))
    response = await _client(proxy, rollout).responses.create(
        model="fake-model", input="What is 12+7?", instructions="Be brief.", include=LOGPROBS, max_output_tokens=64
    )
    assert response.output_text == "It is 19."
    # The proxy asked the backend for its token ids (vLLM's enable_response_messages); the client sees them as is.
    assert fake.requests[-1]["enable_response_messages"] is True
    assert response.model_extra is not None and response.model_extra["output_messages"][0]["tokens"] == [11, 12, 13, 2]

    (span,) = await _llm_spans(store, rollout)
    attrs = span.attributes
    assert span.name == "chat fake-model"
    assert attrs[GenAIAttributes.OPERATION_NAME] == "chat"
    assert attrs[GenAIAttributes.REQUEST_MODEL] == "fake-model"
    assert attrs[GenAIAttributes.REQUEST_MAX_TOKENS] == 64
    assert attrs[GenAIAttributes.RESPONSE_ID] == response.id == fake.response_ids()[-1]
    assert attrs[GenAIAttributes.RESPONSE_FINISH_REASONS] == ["stop"]
    assert attrs[GenAIAttributes.USAGE_INPUT_TOKENS] == response.usage.input_tokens  # type: ignore[union-attr]
    assert attrs[GenAIAttributes.USAGE_OUTPUT_TOKENS] == 4
    assert attrs[LLMCallAttributes.STREAM] is False
    assert attrs[LLMCallAttributes.RESPONSE_TOKEN_IDS] == [11, 12, 13, 2]
    assert attrs[LLMCallAttributes.PROMPT_TOKEN_IDS] == response.model_extra["input_messages"][0]["tokens"]
    assert attrs[LLMCallAttributes.TOKEN_IDS_SOURCE] == TOKEN_IDS_FROM_ENGINE
    assert len(attrs[LLMCallAttributes.RESPONSE_LOGPROBS]) == 4
    request = json.loads(attrs[LLMCallAttributes.REQUEST])
    assert request["input"] == "What is 12+7?" and request["instructions"] == "Be brief."
    recorded = json.loads(attrs[LLMCallAttributes.RESPONSE])
    assert recorded["id"] == response.id
    assert recorded["output"][0]["content"][0]["text"] == "It is 19."


async def test_tool_call_round_trip_is_recorded(proxy: LLMProxy, store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    client = _client(proxy, rollout)
    fake.enqueue(FakeReply.tool_call("calculator", {"expression": "12+7"}, call_id="call_1"))
    first = await client.responses.create(model="fake-model", input="What is 12+7?", tools=TOOLS)  # type: ignore[arg-type]
    (call,) = first.output
    assert call.type == "function_call" and call.name == "calculator" and call.call_id == "call_1"
    # The default policy answers from the tool's output.
    second = await client.responses.create(
        model="fake-model",
        input=[
            {"role": "user", "content": "What is 12+7?"},
            {"type": "function_call", "call_id": "call_1", "name": "calculator", "arguments": call.arguments},
            {"type": "function_call_output", "call_id": "call_1", "output": "19"},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert second.output_text == "The result is 19."

    spans = await _llm_spans(store, rollout)
    assert [span.attributes[GenAIAttributes.RESPONSE_ID] for span in spans] == [first.id, second.id]
    assert [span.attributes[GenAIAttributes.RESPONSE_FINISH_REASONS] for span in spans] == [["tool_calls"], ["stop"]]
    recorded_call = json.loads(spans[0].attributes[LLMCallAttributes.RESPONSE])["output"][0]
    assert recorded_call["name"] == "calculator" and json.loads(recorded_call["arguments"]) == {"expression": "12+7"}
    assert "function_call_output" in spans[1].attributes[LLMCallAttributes.REQUEST]


async def test_streamed_response_is_relayed_and_recorded(proxy: LLMProxy, store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    fake.enqueue(FakeReply.text("The answer is nineteen.", chunk_delay=0.05))
    stream = await _client(proxy, rollout).responses.create(
        model="fake-model", input="What is 12+7?", stream=True, include=LOGPROBS
    )
    arrivals: List[float] = []
    text = ""
    completed: Any = None
    async for event in stream:
        arrivals.append(time.monotonic())
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.completed":
            completed = event.response
            # The span is stored before the client sees the stream's end.
            assert len(await _llm_spans(store, rollout)) == 1
    assert text == "The answer is nineteen."
    assert completed is not None and completed.output_text == text
    # Events reach the client as the backend sends them, not all at once at the end.
    assert arrivals[-1] - arrivals[0] > 0.1

    (span,) = await _llm_spans(store, rollout)
    attrs = span.attributes
    assert attrs[LLMCallAttributes.STREAM] is True
    assert attrs[GenAIAttributes.RESPONSE_ID] == completed.id
    assert attrs[GenAIAttributes.USAGE_OUTPUT_TOKENS] == len(text.encode())
    assert attrs[LLMCallAttributes.RESPONSE_TOKEN_IDS] == list(text.encode())
    assert attrs[LLMCallAttributes.PROMPT_TOKEN_IDS]
    assert len(attrs[LLMCallAttributes.RESPONSE_LOGPROBS]) == len(text.encode())
    recorded = json.loads(attrs[LLMCallAttributes.RESPONSE])
    assert recorded["status"] == "completed"
    assert recorded["output"][0]["content"][0]["text"] == text


async def test_streamed_tool_call_with_the_stream_helper(proxy: LLMProxy, store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    fake.enqueue(FakeReply.tool_call("calculator", {"expression": "2+2"}, call_id="call_s"))
    async with _client(proxy, rollout).responses.stream(
        model="fake-model",
        input="What is 2+2?",
        tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    (call,) = final.output
    assert call.type == "function_call" and call.call_id == "call_s"

    (span,) = await _llm_spans(store, rollout)
    assert span.attributes[GenAIAttributes.RESPONSE_FINISH_REASONS] == ["tool_calls"]
    recorded = json.loads(span.attributes[LLMCallAttributes.RESPONSE])
    assert recorded["output"][0]["arguments"] == call.arguments


async def test_a_long_streamed_response_is_not_cut(proxy: LLMProxy, store: Any, fake: FakeOpenAIServer) -> None:
    # The terminal event holds the whole response on one line: far more than aiohttp's 128 KiB line limit.
    rollout = await _attempt(store)
    long_text = "x" * 300_000  # one word: a few events, each with the whole text
    fake.enqueue(FakeReply.text(long_text))
    stream = await _client(proxy, rollout).responses.create(model="fake-model", input="Talk.", stream=True)
    final: Any = None
    async for event in stream:
        if event.type == "response.completed":
            final = event.response
    assert final is not None and final.output_text == long_text
    (span,) = await _llm_spans(store, rollout)
    assert span.status.status_code == "OK"
    assert len(span.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS]) == len(long_text.encode())


async def test_backend_error_is_relayed_and_recorded(proxy: LLMProxy, store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    fake.enqueue(FakeReply.error(400, "the model refused"))
    with pytest.raises(openai.BadRequestError, match="the model refused"):
        await _client(proxy, rollout).responses.create(model="fake-model", input="Hi")
    (span,) = await _llm_spans(store, rollout)
    assert span.status.status_code == "ERROR"
    assert "the model refused" in (span.status.description or "")
    assert span.attributes[LLMCallAttributes.HTTP_STATUS] == 400


async def test_unknown_rollout_is_404_and_never_forwarded(proxy: LLMProxy, fake: FakeOpenAIServer) -> None:
    client = openai.AsyncOpenAI(base_url=proxy.base_url_for("ro-missing", "at-missing"), api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="fake-model", input="Hi")
    assert fake.requests == []


async def test_call_outside_a_rollout_is_forwarded_not_recorded(proxy: LLMProxy, store: Any) -> None:
    client = openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="x")
    response = await client.responses.create(model="fake-model", input="Hi")
    assert response.output_text
    assert proxy.stats.calls == 1
    assert proxy.stats.spans_pending == 0
