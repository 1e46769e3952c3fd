"""The engine's prefix (KV) cache: reused prefixes decode like cold prefills, and the cache stays bounded."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from conftest import MODEL_NAME

from agentlightning_embedded.engine import GenerationEngine, GenerationResult, PrefixCache
from agentlightning_embedded.protocol import SamplingParams

GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)


def _engine(path: Path, **options: Any) -> GenerationEngine:
    return GenerationEngine.from_pretrained(str(path), model_name=MODEL_NAME, max_batch_size=8, **options)


def _prompts(engine: GenerationEngine) -> List[List[int]]:
    """Prompts sharing a long system-like prefix, as an agent's requests do, plus one unrelated prompt."""
    encode = engine.tokenizer.encode
    shared = encode("You are a careful assistant with a calculator tool. " * 6, add_special_tokens=False)
    return [
        shared + encode(" What is 12 plus 7?", add_special_tokens=False),
        shared + encode(" How many boxes are on 31 shelves?", add_special_tokens=False),
        shared + encode(" hello", add_special_tokens=False),
        encode("an unrelated prompt without the shared prefix", add_special_tokens=False),
    ]


def _assert_same(cached: List[GenerationResult], cold: List[GenerationResult]) -> None:
    for hit, miss in zip(cached, cold, strict=True):
        assert hit.token_ids == miss.token_ids
        torch.testing.assert_close(torch.tensor(hit.logprobs), torch.tensor(miss.logprobs), atol=1e-4, rtol=1e-4)


def _generate_together(engine: GenerationEngine, prompts: List[List[int]]) -> List[GenerationResult]:
    """Queue every prompt while a control action holds the worker, then release them: one batch takes them all.

    Returns the results in prompt order and checks that they took exactly one batch.
    """
    results: Dict[int, GenerationResult] = {}
    gate = threading.Event()
    engine.run_between_batches(lambda: gate.wait(30))
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, engine.generate(prompts[i], GREEDY)[0]))
        for i in range(len(prompts))
    ]
    for thread in threads:
        thread.start()
    while engine.queued < len(prompts):
        threading.Event().wait(0.01)
    batches = engine.stats["batches"]
    gate.set()
    for thread in threads:
        thread.join(60)
    assert engine.stats["batches"] == batches + 1
    return [results[i] for i in range(len(prompts))]


@pytest.fixture(scope="module")
def engines(tiny_model_path: Path) -> Any:
    cached, cold = _engine(tiny_model_path), _engine(tiny_model_path, prefix_cache_bytes=0)
    yield cached, cold
    cached.close()
    cold.close()


def test_a_prefix_hit_gives_the_tokens_and_logprobs_of_a_cold_prefill(engines: Any) -> None:
    cached, cold = engines
    prompts = _prompts(cached)
    before = dict(cached.stats)
    results = [cached.generate(p, GREEDY)[0] for p in prompts]  # one by one: later prompts hit earlier entries
    reference = [cold.generate(p, GREEDY)[0] for p in prompts]
    _assert_same(results, reference)
    assert cached.stats["prefix_cache_hits"] - before["prefix_cache_hits"] >= 2
    assert cached.stats["prefilled_tokens"] - before["prefilled_tokens"] < sum(len(p) for p in prompts) - 60
    assert cold.stats["prefix_cache_hits"] == 0


def test_a_later_turn_reuses_the_finished_choice(engines: Any) -> None:
    """The next turn's prompt extends the previous prompt and answer: only the new tokens are prefilled."""
    cached, cold = engines
    first = _prompts(cached)[0] + [5, 6, 7]
    answer = cached.generate(first, GREEDY)[0]
    follow_up = first + answer.token_ids + cached.tokenizer.encode(" and then?", add_special_tokens=False)
    before = cached.stats["prefilled_tokens"]
    result = cached.generate(follow_up, GREEDY)
    # Everything up to the answer's last token (sampled, never fed) came from the cache.
    assert cached.stats["prefilled_tokens"] - before == len(follow_up) - (len(first) + len(answer.token_ids) - 1)
    _assert_same(result, cold.generate(follow_up, GREEDY))


def test_requests_prefilled_together_with_different_hits_match_cold_runs(engines: Any) -> None:
    """Rows of one prefill pass with different reused lengths (and a miss) decode like cold prefills."""
    cached, cold = engines
    prompts = _prompts(cached)
    cached.generate(prompts[0], GREEDY)  # the shared prefix is now cached
    variants = [prompts[1] + [9], prompts[2] + [9, 9], prompts[3] + [9], prompts[0] + [3]]
    reference = [cold.generate(p, GREEDY)[0] for p in variants]
    _assert_same(_generate_together(cached, variants), reference)


def test_cold_requests_starting_together_prefill_their_shared_prefix_once(tiny_model_path: Path) -> None:
    engine, cold = _engine(tiny_model_path), _engine(tiny_model_path, prefix_cache_bytes=0)
    try:
        prompts = _prompts(engine)[:3]
        shared = len(prompts[0]) - len(engine.tokenizer.encode(" What is 12 plus 7?", add_special_tokens=False))
        results = _generate_together(engine, prompts)
        # The shared prefix once, then each prompt's own tokens (within a few ids where the texts join).
        assert engine.stats["prefilled_tokens"] <= shared + sum(len(p) - shared for p in prompts) + 3
        assert engine.stats["prefilled_tokens"] < sum(len(p) for p in prompts) - shared
        _assert_same(results, [cold.generate(p, GREEDY)[0] for p in prompts])
    finally:
        engine.close()
        cold.close()


def test_memory_stays_bounded_over_many_requests(tiny_model_path: Path) -> None:
    bound = 256 * 1024
    engine = _engine(tiny_model_path, prefix_cache_bytes=bound)
    try:
        assert engine.prefix_cache is not None
        encode = engine.tokenizer.encode
        for index in range(40):
            engine.generate(encode(f"request number {index} " * 8, add_special_tokens=False), GREEDY)
            assert engine.prefix_cache.nbytes <= bound
        assert 0 < len(engine.prefix_cache) < 40
        # A weight swap empties it: cached keys and values belong to the old weights.
        engine.load_weights(dict(engine.model.state_dict()))
        assert len(engine.prefix_cache) == 0 and engine.prefix_cache.nbytes == 0
    finally:
        engine.close()


def test_prefix_cache_bounds_and_lookup() -> None:
    def layers(length: int) -> List[Any]:
        return [(torch.full((2, length, 4), float(length)), torch.zeros(2, length, 4))]

    cache = PrefixCache(max_bytes=2 * 2 * 40 * 4 * 4, max_entries=8, min_tokens=4)  # room for 40 tokens
    cache.store(list(range(20)), layers(20))
    assert cache.lookup(list(range(20)))[0] == 19  # at least one token is left to prefill
    length, kv = cache.lookup(list(range(10)) + [99, 98])
    assert length == 10 and kv is not None and kv[0][0].shape == (2, 10, 4)
    assert cache.lookup([99] * 12) == (0, None)
    assert cache.lookup(list(range(3)) + [7]) == (0, None)  # shorter than min_tokens
    cache.store(list(range(30)), layers(30))  # extends the first entry, which is dropped as redundant
    assert len(cache) == 1
    cache.store(list(range(100, 125)), layers(25))  # over the byte bound: the least recently used goes
    assert len(cache) == 1 and cache.lookup(list(range(100, 125)))[0] == 24
    cache.store(list(range(1000)), layers(1000))  # larger than the whole bound: not kept
    assert len(cache) == 1
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(-1)


def test_a_batched_prefill_hands_the_output_layer_a_contiguous_last_position(tiny_model_path: Path) -> None:
    # A strided last-position slice made torch's CPU linear copy the whole vocabulary weight for every
    # row of a bfloat16 prefill (6.5 GB and over a minute for 24 rows of the default model).
    engine = _engine(tiny_model_path, prefix_cache_bytes=0)
    seen: List[torch.Size] = []

    def check(_module: torch.nn.Module, inputs: Any) -> None:
        hidden = inputs[0]
        assert hidden.is_contiguous(), f"output layer got a strided input of shape {tuple(hidden.shape)}"
        seen.append(hidden.shape)

    hook = engine.model.get_output_embeddings().register_forward_pre_hook(check)
    try:
        prompts = _prompts(engine)
        results = _generate_together(engine, prompts)
        assert len(results) == len(prompts)
        # The prefill ran every prompt in one pass, and only its last position reached the output layer.
        assert any(shape[0] == len(prompts) for shape in seen), seen
        assert all(shape[1] == 1 for shape in seen), seen
    finally:
        hook.remove()
        engine.close()
