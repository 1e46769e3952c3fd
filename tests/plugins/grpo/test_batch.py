"""From TokenSequences to padded, shifted tensors; masked tokens never reach the loss."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from agentlightning.adapter.sequence import TokenSequence
from agentlightning_grpo import build_micro_batches, clipped_policy_loss


def _sequence(
    rollout_id: str, token_ids: list[int], loss_mask: list[int], logprobs: list[float | None]
) -> TokenSequence:
    return TokenSequence(
        rollout_id=rollout_id, token_ids=token_ids, loss_mask=loss_mask, logprobs=logprobs, prompt_length=2
    )


def test_padding_shift_and_masks() -> None:
    # Prompt [10, 11], model token 12, tool result 13, model tokens 14 (logprob unknown) and 15.
    long = _sequence("long", [10, 11, 12, 13, 14, 15], [0, 0, 1, 0, 1, 1], [None, None, -0.5, None, None, -1.5])
    short = _sequence("short", [20, 21, 22], [0, 0, 1], [None, None, -0.25])
    prepared = build_micro_batches(
        [short, long], {"long": 2.0, "short": -1.0}, max_length=16, micro_batch_tokens=64, pad_token_id=7
    )
    assert len(prepared.micro_batches) == 1
    batch = prepared.micro_batches[0]
    assert batch.rollout_ids == ["long", "short"]  # longest first
    assert batch.input_ids.tolist() == [[10, 11, 12, 13, 14, 15], [20, 21, 22, 7, 7, 7]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    # Column t is about token t + 1.
    assert batch.loss_mask.tolist() == [[0, 1, 0, 1, 1], [0, 1, 0, 0, 0]]
    assert batch.old_logprobs.tolist() == [[0, -0.5, 0, 0, -1.5], [0, -0.25, 0, 0, 0]]
    assert batch.old_logprobs_known.tolist() == [
        [False, True, False, False, True],
        [False, True, False, False, False],
    ]
    assert batch.advantages.tolist() == [[0, 2, 0, 2, 2], [0, -1, 0, 0, 0]]
    assert (prepared.loss_tokens, prepared.tokens, prepared.padded_tokens) == (4, 9, 12)


def test_truncation_keeps_the_head_and_reports_it(sequence_factory: Callable[..., TokenSequence]) -> None:
    long = sequence_factory("long", prompt_length=4, segments=[6, 4, 6], seed=1)
    prompt_only = sequence_factory("prompt-only", prompt_length=12, segments=[3], seed=2)
    prepared = build_micro_batches(
        [long, prompt_only], {"long": 1.0, "prompt-only": 1.0}, max_length=10, micro_batch_tokens=100
    )
    assert prepared.truncated == ["long", "prompt-only"]
    assert prepared.dropped == ["prompt-only"]  # its first 10 tokens are all prompt
    (batch,) = prepared.micro_batches
    assert batch.input_ids[0].tolist() == long.token_ids[:10]
    assert batch.loss_mask[0].tolist() == [float(bit) for bit in long.loss_mask[1:10]]


def test_sequences_without_an_advantage_are_dropped(sequence_factory: Callable[..., TokenSequence]) -> None:
    kept = sequence_factory("kept", prompt_length=3, segments=[4], seed=1)
    failed = sequence_factory("failed", prompt_length=3, segments=[4], seed=2)
    prepared = build_micro_batches([kept, failed], {"kept": 0.5}, max_length=64, micro_batch_tokens=64)
    assert prepared.dropped == ["failed"] and prepared.sequences == 1


def test_micro_batches_respect_the_token_budget(sequence_factory: Callable[..., TokenSequence]) -> None:
    lengths = [10, 9, 5, 3, 30]
    sequences = [
        sequence_factory(f"r{length}", prompt_length=1, segments=[length - 1], seed=length) for length in lengths
    ]
    prepared = build_micro_batches(
        sequences, {s.rollout_id: 1.0 for s in sequences}, max_length=64, micro_batch_tokens=20
    )
    rows = [batch.rollout_ids for batch in prepared.micro_batches]
    # 30 exceeds the budget alone; 10 + 9 pad to 2 x 10 = 20; then 5 + 3 (2 x 5 = 10).
    assert rows == [["r30"], ["r10", "r9"], ["r5", "r3"]]
    for batch in prepared.micro_batches[1:]:
        assert batch.padded_tokens <= 20
    assert prepared.sequences == len(lengths)


def test_masked_tokens_contribute_nothing_to_the_loss() -> None:
    sequence = _sequence("r", [1, 2, 3, 4, 5, 6], [0, 0, 1, 0, 1, 1], [None, None, -0.5, None, -1.0, -1.5])
    # Whatever the sequence carries at context tokens is ignored when building the batch.
    noisy = sequence.model_copy(update={"logprobs": [-9.0, -9.0, -0.5, 123.0, -1.0, -1.5]})
    (batch,) = build_micro_batches([sequence], {"r": 1.0}, max_length=16, micro_batch_tokens=64).micro_batches
    (noisy_batch,) = build_micro_batches([noisy], {"r": 1.0}, max_length=16, micro_batch_tokens=64).micro_batches
    assert torch.equal(batch.old_logprobs, noisy_batch.old_logprobs)

    policy_logprobs = torch.tensor([[0.0, -0.4, 0.0, -1.2, -1.3]], requires_grad=True)
    reference = clipped_policy_loss(
        policy_logprobs, batch, clip_eps_low=0.2, clip_eps_high=0.2, ref_logprobs=policy_logprobs.detach() - 0.1
    )
    # Change the policy's (and reference's) logprobs on masked-out columns only, even to infinities.
    masked_out = batch.loss_mask == 0
    wild = torch.where(masked_out, torch.tensor(float("-inf")), policy_logprobs.detach()).requires_grad_(True)
    changed = clipped_policy_loss(
        wild,
        batch,
        clip_eps_low=0.2,
        clip_eps_high=0.2,
        ref_logprobs=torch.where(masked_out, 50.0, wild.detach() - 0.1),
    )
    assert changed.loss_sum.item() == pytest.approx(reference.loss_sum.item())
    assert changed.kl_sum.item() == pytest.approx(reference.kl_sum.item())
    changed.loss_sum.backward()
    assert wild.grad is not None and torch.all(wild.grad[masked_out] == 0)


def test_identical_old_and_new_logprobs_give_ratio_one_and_no_clipping() -> None:
    sequence = _sequence("r", [1, 2, 3, 4, 5], [0, 0, 1, 1, 1], [None, None, -0.7, -2.0, -0.1])
    (batch,) = build_micro_batches([sequence], {"r": -1.3}, max_length=16, micro_batch_tokens=64).micro_batches
    logprobs = batch.old_logprobs.clone().requires_grad_(True)
    terms = clipped_policy_loss(logprobs, batch, clip_eps_low=0.2, clip_eps_high=0.2)
    assert terms.ratio_sum.item() == pytest.approx(3.0)
    assert terms.clipped_tokens.item() == 0
    # pg = -ratio * A per token.
    assert terms.loss_sum.item() == pytest.approx(3 * 1.3)


def test_ratio_is_clipped_only_where_it_cuts_the_gradient() -> None:
    sequence = _sequence("r", [1, 2, 3, 4], [0, 1, 1, 1], [None, -1.0, -1.0, -1.0])
    (batch,) = build_micro_batches([sequence], {"r": 1.0}, max_length=16, micro_batch_tokens=64).micro_batches
    # Ratios e^0.5 (above 1.2: clipped for A > 0), e^-0.5 (below 0.8: not clipped for A > 0), 1.
    logprobs = torch.tensor([[-0.5, -1.5, -1.0]], requires_grad=True)
    terms = clipped_policy_loss(logprobs, batch, clip_eps_low=0.2, clip_eps_high=0.2)
    assert terms.clipped_tokens.item() == 1
    terms.loss_sum.backward()
    assert logprobs.grad is not None
    assert logprobs.grad[0, 0].item() == 0.0 and logprobs.grad[0, 1].item() != 0.0


def test_missing_sampling_logprobs_fall_back_to_ratio_one() -> None:
    sequence = _sequence("r", [1, 2, 3, 4], [0, 1, 1, 1], [None, None, -1.0, None])
    (batch,) = build_micro_batches([sequence], {"r": 2.0}, max_length=16, micro_batch_tokens=64).micro_batches
    logprobs = torch.tensor([[-3.0, -1.0, -4.0]], requires_grad=True)
    terms = clipped_policy_loss(logprobs, batch, clip_eps_low=0.2, clip_eps_high=0.2)
    assert terms.missing_logprob_tokens.item() == 2
    assert terms.ratio_sum.item() == pytest.approx(3.0)
    terms.loss_sum.backward()
    # Ratio 1 at every token: the gradient is -A per token (d ratio / d logp = ratio = 1).
    assert logprobs.grad is not None and logprobs.grad.tolist() == [[-2.0, -2.0, -2.0]]
