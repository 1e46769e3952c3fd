"""The LLM proxy with real HTTP on both sides: the `openai` SDK in front, a fake OpenAI server behind."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Dict, List, Sequence

import aiohttp
import openai
import pytest

from agentlightning.proxy import AGENT_NAME_HEADER, LLMProxy, ProxyBackend
from agentlightning.semconv import TOKEN_IDS_FROM_ENGINE, TOKEN_IDS_RETOKENIZED, GenAIAttributes, LLMCallAttributes
from agentlightning.store import InMemoryLightningStore, SqliteLightningStore
from agentlightning.types import AttemptedRollout, Span
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

IDS = {"return_token_ids": True, "logprobs": True}


@pytest.fixture
def fake() -> Any:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
async def store() -> InMemoryLightningStore:
    return InMemoryLightningStore()


@pytest.fixture
async def proxy(store: InMemoryLightningStore, fake: FakeOpenAIServer) -> AsyncIterator[LLMProxy]:
    async with LLMProxy(store, [ProxyBackend(fake.base_url, request_extras=IDS)]) as running:
        yield running


async def _attempt(store: Any) -> AttemptedRollout:
    return await store.start_rollout(input={"question": "1+1"})


async def _llm_spans(store: Any, rollout: AttemptedRollout) -> List[Span]:
    spans = await store.query_spans(rollout.rollout_id, rollout.attempt.attempt_id)
    return [s for s in spans if GenAIAttributes.OPERATION_NAME in s.attributes]


def _client(proxy: LLMProxy, rollout: AttemptedRollout, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=proxy.base_url_for(rollout.rollout_id, rollout.attempt.attempt_id), api_key="x", **kwargs
    )


MESSAGES: List[Dict[str, Any]] = [{"role": "user", "content": "What is 12+7?"}]


async def _post(url: str, data: bytes) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=data, headers={"Content-Type": "application/json"}) as r,
    ):
        return r.status, await r.json(content_type=None)


def _chat_url(proxy: LLMProxy, rollout: AttemptedRollout) -> str:
    return proxy.base_url_for(rollout.rollout_id, rollout.attempt.attempt_id) + "/chat/completions"


async def test_plain_chat_records_engine_token_ids(proxy: LLMProxy, store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    fake.enqueue(FakeReply.text("It is 19.", token_ids=[11, 12, 13, 2]))
    completion = await _client(proxy, rollout).chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "It is 19."
    raw = completion.model_dump()
    assert raw["choices"][0]["token_ids"] == [11, 12, 13, 2]  # the client sees the backend's answer as is

    (span,) = await _llm_spans(store, rollout)
    attrs = span.attributes
    assert attrs[LLMCallAttributes.RESPONSE_TOKEN_IDS] == [11, 12, 13, 2]
    assert attrs[LLMCallAttributes.PROMPT_TOKEN_IDS] == raw["prompt_token_ids"]
    assert attrs[LLMCallAttributes.TOKEN_IDS_SOURCE] == TOKEN_IDS_FROM_ENGINE
    assert attrs[GenAIAttributes.RESPONSE_ID] == completion.id
    assert attrs[GenAIAttributes.REQUEST_MODEL] == "fake-model"
    assert attrs[GenAIAttributes.USAGE_OUTPUT_TOKENS] == completion.usage.completion_tokens  # type: ignore[union-attr]
    assert len(attrs[LLMCallAttributes.RESPONSE_LOGPROBS]) == 4
    assert all(v < 0 for v in attrs[LLMCallAttributes.RESPONSE_LOGPROBS])
    assert json.loads(attrs[LLMCallAttributes.REQUEST])["messages"] == MESSAGES
    assert json.loads(attrs[LLMCallAttributes.RESPONSE])["id"] == completion.id
    assert attrs[LLMCallAttributes.LATENCY_SECONDS] >= 0
    assert span.name == "chat fake-model"
    assert span.status.status_code == "OK"
    # The proxy asked the backend for ids and logprobs; the client did not.
    assert fake.requests[-1]["return_token_ids"] is True and fake.requests[-1]["logprobs"] is True


async def test_streamed_chat_is_relayed_and_recorded_with_token_ids(
    proxy: LLMProxy, store: Any, fake: FakeOpenAIServer
) -> None:
    rollout = await _attempt(store)
    fake.enqueue(FakeReply.text("The answer is nineteen.", chunk_delay=0.05))
    stream = await _client(proxy, rollout).chat.completions.create(
        model="fake-model",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    arrivals: List[float] = []
    text, ids = "", []
    async for chunk in stream:
        arrivals.append(time.monotonic())
        raw = chunk.model_dump()
        for choice in raw["choices"]:
            text += choice["delta"].get("content") or ""
            ids += choice.get("token_ids") or []
    assert text == "The answer is nineteen."
    # Chunks reach the client as the backend sends them, not all at once at the end.
    assert arrivals[-1] - arrivals[0] > 0.1

    (span,) = await _llm_spans(store, rollout)
    attrs = span.attributes
    assert attrs[LLMCallAttributes.STREAM] is True
    assert attrs[LLMCallAttributes.RESPONSE_TOKEN_IDS] == ids == list(text.encode())
    assert attrs[LLMCallAttributes.PROMPT_TOKEN_IDS]
    assert len(attrs[LLMCallAttributes.RESPONSE_LOGPROBS]) == len(ids)
    response = json.loads(attrs[LLMCallAttributes.RESPONSE])
    assert response["choices"][0]["message"]["content"] == text
    assert response["choices"][0]["finish_reason"] == "stop"


async def test_streamed_tool_call_is_reassembled(proxy: LLMProxy, store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    fake.enqueue(FakeReply.tool_call("calculator", {"expression": "12*7"}))
    stream = await _client(proxy, rollout).chat.completions.create(
        model="fake-model",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        tools=[{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}],
    )
    async for _ in stream:
        pass
    (span,) = await _llm_spans(store, rollout)
    response = json.loads(span.attributes[LLMCallAttributes.RESPONSE])
    (call,) = response["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "12*7"}
    assert span.attributes[GenAIAttributes.RESPONSE_FINISH_REASONS] == ["tool_calls"]
    assert span.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS]


async def test_text_completions_record_token_ids(proxy: LLMProxy, store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    fake.enqueue(FakeReply.text(" 19"))
    completion = await _client(proxy, rollout).completions.create(model="fake-model", prompt="12+7=")
    assert completion.choices[0].text == " 19"
    (span,) = await _llm_spans(store, rollout)
    assert span.name == "text_completion fake-model"
    assert span.attributes[LLMCallAttributes.PROMPT_TOKEN_IDS] == list(b"12+7=")
    assert span.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] == list(b" 19")


async def test_backend_error_passes_through_and_is_recorded(
    proxy: LLMProxy, store: Any, fake: FakeOpenAIServer
) -> None:
    rollout = await _attempt(store)
    fake.enqueue(FakeReply.error(500, "the model crashed"))
    with pytest.raises(openai.InternalServerError) as caught:
        await _client(proxy, rollout, max_retries=0).chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 500
    assert "the model crashed" in str(caught.value)
    (span,) = await _llm_spans(store, rollout)
    assert span.status.status_code == "ERROR"
    assert "the model crashed" in (span.status.description or "")
    assert span.attributes[LLMCallAttributes.HTTP_STATUS] == 500
    assert span.attributes[GenAIAttributes.ERROR_TYPE] == "500"


async def test_backend_down_gives_502_with_message(store: Any) -> None:
    rollout = await _attempt(store)
    async with LLMProxy(store, [ProxyBackend("http://127.0.0.1:9/v1", name="dead")]) as proxy:
        status, body = await _post(_chat_url(proxy, rollout), json.dumps({"model": "m", "messages": MESSAGES}).encode())
    assert status == 502
    assert body["error"]["type"] == "backend_unreachable"
    assert "dead" in body["error"]["message"]
    (span,) = await _llm_spans(store, rollout)
    assert span.status.status_code == "ERROR"
    assert span.attributes[GenAIAttributes.ERROR_TYPE] == "backend_unreachable"


@pytest.mark.parametrize(
    ("path", "data", "status", "error_type"),
    [
        ("/chat/completions", b"{not json", 400, "invalid_request_error"),
        ("/chat/completions", b"[1, 2]", 400, "invalid_request_error"),
        ("/chat/completions", b'{"model": 5, "messages": []}', 400, "invalid_request_error"),
        ("/chat/completions", b'{"model": "other-model", "messages": []}', 404, "model_not_found"),
    ],
)
async def test_bad_requests_get_4xx_and_store_nothing(
    store: Any, fake: FakeOpenAIServer, path: str, data: bytes, status: int, error_type: str
) -> None:
    rollout = await _attempt(store)
    async with LLMProxy(store, [ProxyBackend(fake.base_url, models=["fake-model"])]) as proxy:
        got, body = await _post(proxy.base_url_for(rollout.rollout_id, rollout.attempt.attempt_id) + path, data)
    assert got == status
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert await _llm_spans(store, rollout) == []
    assert fake.requests == []


async def test_unknown_rollout_is_404_and_never_forwarded(proxy: LLMProxy, fake: FakeOpenAIServer) -> None:
    url = proxy.base_url_for("ro-missing", "at-missing") + "/chat/completions"
    status, body = await _post(url, json.dumps({"model": "fake-model", "messages": MESSAGES}).encode())
    assert status == 404
    assert "ro-missing" in body["error"]["message"]
    assert fake.requests == []


async def test_oversized_body_is_413(store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    big = {"model": "fake-model", "messages": [{"role": "user", "content": "x" * 4096}]}
    async with LLMProxy(store, [ProxyBackend(fake.base_url)], max_body_bytes=1024) as proxy:
        status, body = await _post(_chat_url(proxy, rollout), json.dumps(big).encode())
    assert status == 413
    assert "1024" in body["error"]["message"]
    assert fake.requests == []


async def test_call_outside_a_rollout_is_forwarded_not_recorded(proxy: LLMProxy, store: Any) -> None:
    client = openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="x")
    completion = await client.chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content
    assert proxy.stats.calls == 1


async def test_reward_emitted_after_the_call_sorts_after_it(proxy: LLMProxy, store: Any) -> None:
    rollout = await _attempt(store)
    await _client(proxy, rollout).chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    reward_seq = await store.get_next_span_sequence_id(rollout.rollout_id, rollout.attempt.attempt_id)
    (span,) = await _llm_spans(store, rollout)
    assert span.sequence_id < reward_seq


async def test_agent_name_header_and_traceparent_are_recorded(proxy: LLMProxy, store: Any) -> None:
    rollout = await _attempt(store)
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    client = _client(
        proxy,
        rollout,
        default_headers={AGENT_NAME_HEADER: "writer", "traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    await client.chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    (span,) = await _llm_spans(store, rollout)
    assert span.attributes[GenAIAttributes.AGENT_NAME] == "writer"
    assert span.trace_id == trace_id and span.parent_id == parent_id


async def test_backends_are_chosen_by_model(store: Any) -> None:
    with FakeOpenAIServer(default_text="from A") as a, FakeOpenAIServer(default_text="from B") as b:
        backends = [ProxyBackend(a.base_url, models=["model-a"]), ProxyBackend(b.base_url, models=["model-b"])]
        async with LLMProxy(store, backends) as proxy:
            rollout = await _attempt(store)
            client = _client(proxy, rollout)
            for model in ("model-a", "model-b", "model-a"):
                await client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
            models = await client.models.list()
    assert [r["model"] for r in a.requests] == ["model-a", "model-a"]
    assert [r["model"] for r in b.requests] == ["model-b"]
    assert sorted(m.id for m in models.data) == ["model-a", "model-b"]


def test_backend_url_is_validated() -> None:
    with pytest.raises(ValueError, match="ftp://x"):
        ProxyBackend("ftp://x")
    with pytest.raises(ValueError, match="at least one backend"):
        LLMProxy(InMemoryLightningStore(), [])


class _FlakyStore(InMemoryLightningStore):
    """Refuses the first ``failures`` span writes, like a store server that restarts."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def add_many_spans(self, spans: Sequence[Span]) -> List[Span]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store restarting")
        return await super().add_many_spans(spans)


async def test_spans_the_store_refused_are_written_later(fake: FakeOpenAIServer) -> None:
    store = _FlakyStore(failures=1)
    rollout = await _attempt(store)
    async with LLMProxy(store, [ProxyBackend(fake.base_url, request_extras=IDS)]) as proxy:
        client = _client(proxy, rollout)
        first = await client.chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
        assert proxy.stats.spans_pending == 1
        second = await client.chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
        assert proxy.stats.spans_pending == 0
    ids = [s.attributes[GenAIAttributes.RESPONSE_ID] for s in await _llm_spans(store, rollout)]
    assert ids == [first.id, second.id]


async def test_a_pending_span_of_an_ended_attempt_is_dropped_alone(fake: FakeOpenAIServer) -> None:
    """A span kept through a store outage whose attempt ended meanwhile must not block the others."""
    store = _FlakyStore(failures=1)
    ended, live = await _attempt(store), await _attempt(store)
    async with LLMProxy(store, [ProxyBackend(fake.base_url, request_extras=IDS)]) as proxy:
        await _client(proxy, ended).chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
        assert proxy.stats.spans_pending == 1
        await store.update_attempt(ended.rollout_id, ended.attempt.attempt_id, status="succeeded")
        kept = await _client(proxy, live).chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
        assert proxy.stats.spans_pending == 0
        again = await _client(proxy, live).chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert await _llm_spans(store, ended) == []
    ids = [s.attributes[GenAIAttributes.RESPONSE_ID] for s in await _llm_spans(store, live)]
    assert ids == [kept.id, again.id]


async def test_spans_pending_at_stop_are_flushed(fake: FakeOpenAIServer) -> None:
    store = _FlakyStore(failures=1)
    rollout = await _attempt(store)
    async with LLMProxy(store, [ProxyBackend(fake.base_url)]) as proxy:
        await _client(proxy, rollout).chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert len(await _llm_spans(store, rollout)) == 1


def test_sync_client_against_a_proxy_thread(tmp_path: Any, fake: FakeOpenAIServer) -> None:
    store = SqliteLightningStore(str(tmp_path / "store.db"))
    rollout = asyncio.run(_attempt(store))
    with LLMProxy(store, [ProxyBackend(fake.base_url, request_extras=IDS)]) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url_for(rollout.rollout_id, rollout.attempt.attempt_id), api_key="x")
        for _ in range(3):
            client.chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    spans = asyncio.run(_llm_spans(store, rollout))
    assert len(spans) == 3
    assert [s.sequence_id for s in spans] == sorted(s.sequence_id for s in spans)
    assert all(s.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] for s in spans)


async def test_concurrent_rollouts_never_mix(proxy: LLMProxy, store: Any, fake: FakeOpenAIServer) -> None:
    rollouts = [await _attempt(store) for _ in range(8)]

    async def play(rollout: AttemptedRollout, index: int) -> str:
        fake.enqueue_for(f"task-{index}", FakeReply.text(f"answer-{index}", delay=0.01 * (8 - index)))
        messages = [{"role": "user", "content": f"task-{index}"}]
        completion = await _client(proxy, rollout).chat.completions.create(model="fake-model", messages=messages)  # type: ignore[arg-type]
        return completion.choices[0].message.content or ""

    answers = await asyncio.gather(*(play(r, i) for i, r in enumerate(rollouts)))
    assert answers == [f"answer-{i}" for i in range(8)]
    for index, rollout in enumerate(rollouts):
        (span,) = await _llm_spans(store, rollout)
        assert f"task-{index}" in span.attributes[LLMCallAttributes.REQUEST]
        assert span.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] == list(f"answer-{index}".encode())


class _ByteTokenizer:
    """A CallTokenizer whose ids are UTF-8 bytes; the prompt renders like the fake server's prompt ids."""

    def __init__(self, prompt_suffix: str = "") -> None:
        self.prompt_suffix = prompt_suffix

    def prompt_ids(self, operation: str, request: Dict[str, Any]) -> List[int]:
        rendered = json.dumps(request["messages"], sort_keys=True, separators=(",", ":"))
        return list((rendered + self.prompt_suffix).encode())

    def response_ids(self, operation: str, request: Dict[str, Any], response: Dict[str, Any]) -> List[int]:
        return list((response["choices"][0]["message"].get("content") or "").encode())


async def test_backend_without_token_ids_is_retokenized(store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    async with LLMProxy(store, [ProxyBackend(fake.base_url, tokenizer=_ByteTokenizer())]) as proxy:
        fake.enqueue(FakeReply.text("nineteen"))
        await _client(proxy, rollout).chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
        assert proxy.stats.retokenized == 1
    (span,) = await _llm_spans(store, rollout)
    assert span.attributes[LLMCallAttributes.TOKEN_IDS_SOURCE] == TOKEN_IDS_RETOKENIZED
    assert span.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] == list(b"nineteen")
    assert LLMCallAttributes.RETOKENIZATION_DRIFT not in span.attributes


async def test_drift_between_engine_and_retokenized_ids_is_reported(store: Any, fake: FakeOpenAIServer) -> None:
    rollout = await _attempt(store)
    same = ProxyBackend(fake.base_url, request_extras=IDS, tokenizer=_ByteTokenizer(), models=["same"])
    drifting = ProxyBackend(fake.base_url, request_extras=IDS, tokenizer=_ByteTokenizer("\n"), models=["drift"])
    async with LLMProxy(store, [same, drifting]) as proxy:
        client = _client(proxy, rollout)
        await client.chat.completions.create(model="same", messages=MESSAGES)  # type: ignore[arg-type]
        await client.chat.completions.create(model="drift", messages=MESSAGES)  # type: ignore[arg-type]
        async with aiohttp.ClientSession() as http, http.get(f"{proxy.url}/v1/agl/proxy/stats") as response:
            stats = await response.json()
    assert stats["drift_checked"] == 2 and stats["drift_calls"] == 1 and stats["prompt_drift"] == 1
    clean, drifted = await _llm_spans(store, rollout)
    assert clean.attributes[LLMCallAttributes.RETOKENIZATION_DRIFT] is False
    assert drifted.attributes[LLMCallAttributes.RETOKENIZATION_DRIFT] is True
    detail = json.loads(drifted.attributes[LLMCallAttributes.DRIFT_DETAIL])
    assert detail["response"] is None
    assert detail["prompt"]["position"] == len(drifted.attributes[LLMCallAttributes.PROMPT_TOKEN_IDS])
    # The engine's ids are what is kept for training.
    assert drifted.attributes[LLMCallAttributes.TOKEN_IDS_SOURCE] == TOKEN_IDS_FROM_ENGINE
