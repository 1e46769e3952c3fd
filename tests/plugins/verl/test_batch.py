"""Spans of real proxied rollouts -> verl's DataProto, and verl's own advantage estimators on the result."""

from __future__ import annotations

from typing import Any, AsyncIterator, Dict, List, Tuple

import pytest
import torch
from verl.trainer.ppo.core_algos import AdvantageEstimator
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl_support import tool_agent, user_turn

import agentlightning as agl
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.runner import LitAgentRunner
from agentlightning.semconv import AGL_REWARD, GenAIAttributes, LLMCallAttributes
from agentlightning.store import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import Span
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply
from agentlightning_verl import BatchRow, TruncationCounts, rows_from_spans, rows_to_dataproto

PAD = 0
Setup = Tuple[InMemoryLightningStore, FakeOpenAIServer, LLMProxy, LitAgentRunner[Any]]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    store = InMemoryLightningStore()
    with FakeOpenAIServer() as fake:
        backend = ProxyBackend(fake.base_url, request_extras={"return_token_ids": True, "logprobs": True})
        async with LLMProxy(store, [backend]) as proxy:
            yield store, fake, proxy, LitAgentRunner(OtelTracer())


async def play(setup: Setup, agent: Any, task: Dict[str, Any], *replies: str) -> List[Span]:
    store, fake, proxy, runner = setup
    fake.enqueue(*(FakeReply.text(text) for text in replies))
    with runner.run_context(agent=agent, store=store):
        result = await runner.step(task, resources={"llm": proxy.as_resource(model="fake-model")}, mode="train")
    assert result.status == "succeeded"
    return list(await store.query_spans(result.rollout_id))


def ids(text: str) -> List[int]:
    return list(text.encode())


async def test_a_multi_turn_rollout_becomes_one_row_with_tool_tokens_masked(setup: Setup) -> None:
    spans = await play(setup, tool_agent, {"question": "Hi?"}, "aaaa", "bb")
    (row,) = rows_from_spans(spans, uid="g0")
    tool = "\n" + user_turn("<tool_response>42</tool_response>")
    assert row.prompt_ids == ids(user_turn("Hi?"))
    assert row.response_ids == ids("aaaa" + tool + "bb")
    assert row.response_mask == [1] * 4 + [0] * len(ids(tool)) + [1] * 2
    assert row.rewards == {len(row.response_ids) - 1: pytest.approx(4 / 6)}  # 4 vowels in 6 generated chars
    assert all(lp is not None for lp, m in zip(row.response_logprobs, row.response_mask, strict=True) if m)

    short = await play(setup, tool_agent, {"question": "A much longer question?"}, "e", "ccc")
    (other,) = rows_from_spans(short, uid="g1")
    batch = rows_to_dataproto([row, other], pad_token_id=PAD, meta_info={"global_steps": 3})
    width_p = max(len(row.prompt_ids), len(other.prompt_ids))
    width_r = max(len(row.response_ids), len(other.response_ids))
    b = batch.batch
    assert b["prompts"].shape == (2, width_p) and b["responses"].shape == (2, width_r)
    # Prompts are left-padded, responses right-padded, input_ids their concatenation.
    pad_p = width_p - len(row.prompt_ids)
    assert b["prompts"][0, :pad_p].tolist() == [PAD] * pad_p and b["prompts"][0, pad_p:].tolist() == row.prompt_ids
    pad_r = width_r - len(other.response_ids)
    assert b["responses"][1, len(other.response_ids) :].tolist() == [PAD] * pad_r
    assert torch.equal(b["input_ids"], torch.cat([b["prompts"], b["responses"]], dim=1))
    assert b["attention_mask"][0].tolist() == [0] * pad_p + [1] * (len(row.prompt_ids) + len(row.response_ids)) + [
        0
    ] * (width_r - len(row.response_ids))
    assert b["position_ids"][0, pad_p].item() == 0 and b["position_ids"][0, -1].item() == b["position_ids"][0].max()
    assert b["position_ids"][0, : pad_p + 1].tolist() == [0] * (pad_p + 1)
    assert b["response_mask"][0, : len(row.response_mask)].tolist() == row.response_mask
    assert b["response_mask"][1, len(other.response_ids) :].sum() == 0
    # The reward sits on the last real response token; everything else scores 0.
    scores = b["token_level_scores"]
    assert scores[0].nonzero().flatten().tolist() == [len(row.response_ids) - 1]
    assert scores[1, len(other.response_ids) - 1].item() == pytest.approx(0.25)  # "e" + "ccc": 1 vowel of 4
    assert b["rollout_log_probs"][0, 0].item() == pytest.approx(row.response_logprobs[0])
    assert list(batch.non_tensor_batch["uid"]) == ["g0", "g1"]
    assert batch.meta_info == {"global_steps": 3}


def _span(seq: int, span_id: str, name: str, attributes: Dict[str, Any]) -> Span:
    return Span(
        rollout_id="ro",
        attempt_id="at",
        sequence_id=seq,
        trace_id="t" * 32,
        span_id=span_id,
        name=name,
        attributes=attributes,
    )


def _call(seq: int, prompt: List[int], response: List[int]) -> Span:
    attributes = {
        GenAIAttributes.OPERATION_NAME: "text_completion",
        GenAIAttributes.RESPONSE_ID: f"cmpl-{seq}",
        LLMCallAttributes.PROMPT_TOKEN_IDS: prompt,
        LLMCallAttributes.RESPONSE_TOKEN_IDS: response,
    }
    return _span(seq, f"call{seq}", "text_completion m", attributes)


def _reward(seq: int, value: float) -> Span:
    attributes = {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": value}
    return _span(seq, f"reward{seq}", AGL_REWARD, attributes)


def test_first_occurrence_puts_each_reward_at_the_end_of_its_call() -> None:
    # Sequence ids order the spans: each reward follows the call it rewards. (Spans an agent emits
    # are stored when its tracer flushes, so on live runs their ids can come after later proxy calls.)
    spans = [_call(1, [1, 2, 3], [4, 5]), _reward(2, 0.25), _call(3, [1, 2, 3, 4, 5, 9], [6, 7]), _reward(4, 1.0)]
    (row,) = rows_from_spans(spans, uid="g", reward_policy="first_occurrence")
    assert (row.response_ids, row.response_mask) == ([4, 5, 9, 6, 7], [1, 1, 0, 1, 1])
    assert row.rewards == {1: 0.25, 4: 1.0}
    (final,) = rows_from_spans(spans, uid="g", reward_policy="final")
    assert final.rewards == {4: 1.0}
    with pytest.raises(ValueError, match="reward_policy must be"):
        rows_from_spans(spans, uid="g", reward_policy="last")


@agl.rollout
async def silent_agent(task: Dict[str, Any], llm: Any) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=llm.endpoint, api_key="x", max_retries=0)
    await client.completions.create(model=llm.model, prompt=task["question"], max_tokens=4)


async def test_a_rollout_without_reward_is_left_out_or_gets_missing_reward(setup: Setup) -> None:
    spans = await play(setup, silent_agent, {"question": "Hi?"}, "ok")
    assert rows_from_spans(spans, uid="g") == []
    (row,) = rows_from_spans(spans, uid="g", missing_reward=-1.0)
    assert row.rewards == {1: -1.0}


async def test_agent_match_with_no_matching_agent_gives_no_rows(setup: Setup) -> None:
    spans = await play(setup, tool_agent, {"question": "Hi?"}, "aaaa", "bb")
    assert rows_from_spans(spans, uid="g", agent_match="^reviewer$") == []


def test_overlong_rows_are_cut_and_keep_their_reward() -> None:
    row = BatchRow("g", "r", [1, 2, 3, 4, 5], [6, 7, 8, 9], [1, 1, 0, 1], [None] * 4, rewards={3: 1.0})
    counts = TruncationCounts()
    batch = rows_to_dataproto([row], pad_token_id=PAD, max_prompt_length=3, max_response_length=2, truncated=counts)
    assert (counts.prompts, counts.responses) == (1, 1)
    assert batch.batch["prompts"][0].tolist() == [3, 4, 5]  # the prompt keeps its end
    assert batch.batch["responses"][0].tolist() == [6, 7]
    assert batch.batch["token_level_scores"][0].tolist() == [0.0, 1.0]
    assert "rollout_log_probs" not in batch.batch  # the engine reported none


def test_bad_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        BatchRow("g", "r", [1], [2, 3], [1], [None, None])
    with pytest.raises(ValueError, match="outside"):
        BatchRow("g", "r", [1], [2], [1], [None], rewards={5: 1.0})
    with pytest.raises(ValueError, match="at least one row"):
        rows_to_dataproto([], pad_token_id=PAD)


def group_batch(rewards: Dict[str, List[float]]) -> Any:
    rows = []
    for uid, values in rewards.items():
        for index, value in enumerate(values):
            length = 2 + index % 3  # ragged responses: padding must not count
            mask = [1] * length
            mask[0] = 0 if length > 2 else 1  # a tool token inside some rows
            rows.append(
                BatchRow(uid, f"{uid}-{index}", [5, 6], [7] * length, mask, [None] * length, {length - 1: value})
            )
    batch = rows_to_dataproto(rows, pad_token_id=PAD)
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]
    return batch


def test_verls_grpo_estimator_on_our_batch() -> None:
    batch = compute_advantage(
        group_batch({"a": [1.0, 1.0, 0.0, 0.0], "b": [1.0, 0.0, 0.0, 0.0]}), adv_estimator=AdvantageEstimator.GRPO
    )
    advantages, mask = batch.batch["advantages"], batch.batch["response_mask"]
    assert torch.all(advantages[mask == 0] == 0)  # tool tokens and padding get no advantage
    per_row = [advantages[i][mask[i] == 1].unique().tolist() for i in range(8)]
    assert all(len(values) == 1 for values in per_row)  # one advantage per row, on every model token
    flat = [values[0] for values in per_row]
    # Group a: 2 of 4 succeed -> +-0.866 (unbiased std); group b: 1 of 4 -> 1.5 and -0.5.
    assert flat[:4] == pytest.approx([0.866, 0.866, -0.866, -0.866], abs=1e-3)
    assert flat[4:] == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-3)


def test_verls_rloo_estimator_on_our_batch() -> None:
    batch = compute_advantage(group_batch({"a": [1.0, 0.0, 0.0, 0.0]}), adv_estimator=AdvantageEstimator.RLOO)
    advantages, mask = batch.batch["advantages"], batch.batch["response_mask"]
    first = [advantages[i][mask[i] == 1][0].item() for i in range(4)]
    # Leave-one-out baseline: 1 - 0 for the winner, 0 - 1/3 for the others.
    assert first == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3], abs=1e-5)
