"""A plain `openai` agent through the LLM proxy to the embedded model server (tiny model): exact token ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import openai
from conftest import MODEL_NAME
from transformers import AutoTokenizer

from agentlightning.adapter import TraceToTokenSequences
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.semconv import TOKEN_IDS_FROM_ENGINE, TOKEN_IDS_RETOKENIZED, LLMCallAttributes
from agentlightning.store import InMemoryLightningStore
from agentlightning_embedded.server import ModelServer
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

MESSAGES: List[Dict[str, Any]] = [{"role": "user", "content": "What is 12+7?"}]


async def _llm_spans(store: InMemoryLightningStore, rollout_id: str) -> List[Any]:
    return [s for s in await store.query_spans(rollout_id) if LLMCallAttributes.REQUEST in s.attributes]


async def test_plain_and_streamed_calls_record_the_servers_token_ids(
    server: ModelServer, tiny_model_path: Path
) -> None:
    store = InMemoryLightningStore()
    rollout = await store.start_rollout(input="q")
    async with LLMProxy(store, [ProxyBackend(server.base_url)]) as proxy:
        client = openai.AsyncOpenAI(
            base_url=proxy.base_url_for(rollout.rollout_id, rollout.attempt.attempt_id), api_key="x"
        )
        plain = await client.chat.completions.create(
            model=MODEL_NAME,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,  # type: ignore[arg-type]
        )
        stream = await client.chat.completions.create(
            model=MODEL_NAME,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,
            stream=True,  # type: ignore[arg-type]
        )
        streamed_ids: List[int] = []
        async for chunk in stream:
            for choice in chunk.model_dump()["choices"]:
                streamed_ids += choice.get("token_ids") or []

    plain_raw = plain.model_dump()
    template_ids = AutoTokenizer.from_pretrained(tiny_model_path).apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True
    )
    template_ids = list(template_ids["input_ids"] if hasattr(template_ids, "keys") else template_ids)
    first, second = await _llm_spans(store, rollout.rollout_id)
    assert first.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] == plain_raw["choices"][0]["token_ids"]
    assert first.attributes[LLMCallAttributes.PROMPT_TOKEN_IDS] == plain_raw["prompt_token_ids"] == template_ids
    assert first.attributes[LLMCallAttributes.TOKEN_IDS_SOURCE] == TOKEN_IDS_FROM_ENGINE
    assert len(first.attributes[LLMCallAttributes.RESPONSE_LOGPROBS]) == len(plain_raw["choices"][0]["token_ids"])
    # Greedy: the streamed call produced the same tokens, and the proxy recorded exactly those.
    assert second.attributes[LLMCallAttributes.STREAM] is True
    assert (
        second.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] == streamed_ids == plain_raw["choices"][0]["token_ids"]
    )
    assert second.attributes[LLMCallAttributes.PROMPT_TOKEN_IDS] == template_ids


async def test_drift_check_with_the_models_tokenizer(server: ModelServer, tiny_model_path: Path) -> None:
    store = InMemoryLightningStore()
    rollout = await store.start_rollout(input="q")
    backend = ProxyBackend(server.base_url, tokenizer=str(tiny_model_path))
    async with LLMProxy(store, [backend]) as proxy:
        client = openai.AsyncOpenAI(
            base_url=proxy.base_url_for(rollout.rollout_id, rollout.attempt.attempt_id), api_key="x"
        )
        await client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=8, temperature=0)  # type: ignore[arg-type]
        stats = proxy.stats.as_dict()
    (span,) = await _llm_spans(store, rollout.rollout_id)
    assert stats["drift_checked"] == 1 and stats["prompt_drift"] == 0
    assert isinstance(span.attributes[LLMCallAttributes.RETOKENIZATION_DRIFT], bool)
    assert span.attributes[LLMCallAttributes.TOKEN_IDS_SOURCE] == TOKEN_IDS_FROM_ENGINE


async def test_a_backend_without_ids_is_retokenized_with_the_chat_template(tiny_model_path: Path) -> None:
    store = InMemoryLightningStore()
    rollout = await store.start_rollout(input="q")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    with FakeOpenAIServer() as fake:
        fake.enqueue(FakeReply.text("nineteen"))
        async with LLMProxy(store, [ProxyBackend(fake.base_url, tokenizer=str(tiny_model_path))]) as proxy:
            client = openai.AsyncOpenAI(
                base_url=proxy.base_url_for(rollout.rollout_id, rollout.attempt.attempt_id), api_key="x"
            )
            await client.chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    (span,) = await _llm_spans(store, rollout.rollout_id)
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    assert span.attributes[LLMCallAttributes.TOKEN_IDS_SOURCE] == TOKEN_IDS_RETOKENIZED
    assert span.attributes[LLMCallAttributes.PROMPT_TOKEN_IDS] == prompt
    response_ids = span.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS]
    assert tokenizer.decode(response_ids).startswith("nineteen")
    assert response_ids[-1] == tokenizer.convert_tokens_to_ids(tokenizer.eos_token)


async def test_a_multi_turn_chat_merges_or_reports_where_it_split(server: ModelServer) -> None:
    """Two turns with a tool result between them, through the real chat template."""
    store = InMemoryLightningStore()
    rollout = await store.start_rollout(input="q")
    async with LLMProxy(store, [ProxyBackend(server.base_url)]) as proxy:
        client = openai.AsyncOpenAI(
            base_url=proxy.base_url_for(rollout.rollout_id, rollout.attempt.attempt_id), api_key="x"
        )
        messages: List[Dict[str, Any]] = list(MESSAGES)
        first = await client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=10, temperature=0)  # type: ignore[arg-type]
        messages.append({"role": "assistant", "content": first.choices[0].message.content or ""})
        messages.append({"role": "user", "content": json.dumps({"tool_result": 19})})
        await client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=10, temperature=0)  # type: ignore[arg-type]

    spans = await store.query_spans(rollout.rollout_id)
    calls = await _llm_spans(store, rollout.rollout_id)
    responses = [c.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] for c in calls]
    adapter = TraceToTokenSequences()
    sequences = adapter.adapt(spans)
    trained = [t for s in sequences for t, m in zip(s.token_ids, s.loss_mask, strict=True) if m]
    # Whether the template re-renders the first answer exactly or not, the model's tokens are what is trained.
    assert trained == responses[0] + responses[1]
    assert len(sequences) == 1 + len(adapter.breaks)
