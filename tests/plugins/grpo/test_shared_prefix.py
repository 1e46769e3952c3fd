"""The update runs a prefix every row shares (an agent's system prompt) once: same logprobs and gradients."""

from __future__ import annotations

from typing import List, Tuple

import pytest
import torch
from grpo_test_support import VOCAB_SIZE, make_tiny_model

from agentlightning_embedded.backend import share_base_weights
from agentlightning_grpo.batch import MicroBatch
from agentlightning_grpo.update import MIN_SHARED_PREFIX, shared_prefix_length, token_logprobs


def _micro_batch(shared: int, *, first_model_column: int) -> MicroBatch:
    generator = torch.Generator().manual_seed(3)
    rows, width = 3, shared + 30
    input_ids = torch.randint(1, VOCAB_SIZE, (rows, width), generator=generator)
    input_ids[:, :shared] = input_ids[0, :shared]
    attention = torch.ones(rows, width, dtype=torch.long)
    attention[2, width - 6 :] = 0  # a shorter row, padded on the right
    input_ids[2, width - 6 :] = 0
    loss_mask = torch.zeros(rows, width - 1)
    loss_mask[:, first_model_column : first_model_column + 8] = 1
    loss_mask[0, width - 4 : width - 1] = 1  # a second model turn after some context
    unknown = torch.zeros(rows, width - 1, dtype=torch.bool)
    return MicroBatch(
        input_ids, attention, loss_mask, torch.zeros(rows, width - 1), unknown, loss_mask.clone(), ["a", "b", "c"]
    )


def _logprobs_and_grads(
    model: torch.nn.Module, batch: MicroBatch, share: bool
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    model.zero_grad()
    logprobs, _ = token_logprobs(model, batch, selection="mask", share_prefix=share)
    (logprobs * torch.linspace(-1, 1, logprobs.numel()).reshape(logprobs.shape)).sum().backward()
    return logprobs.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prefix_gives_the_logprobs_and_gradients_of_per_row_forwards(lora: bool) -> None:
    model = make_tiny_model()
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = get_peft_model(model, config)
    batch = _micro_batch(40, first_model_column=43)
    assert shared_prefix_length(batch) == 40
    plain, plain_grads = _logprobs_and_grads(model, batch, share=False)
    shared, shared_grads = _logprobs_and_grads(model, batch, share=True)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    assert len(shared_grads) == len(plain_grads) > 0
    for got, expected in zip(shared_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_the_prefix_stops_before_the_first_model_token_and_needs_length() -> None:
    assert shared_prefix_length(_micro_batch(40, first_model_column=36)) == 36
    assert shared_prefix_length(_micro_batch(MIN_SHARED_PREFIX - 1, first_model_column=40)) == 0
    one_row = _micro_batch(40, first_model_column=43)
    one_row.input_ids, one_row.attention_mask, one_row.loss_mask = (
        one_row.input_ids[:1],
        one_row.attention_mask[:1],
        one_row.loss_mask[:1],
    )
    assert shared_prefix_length(one_row) == 0


def test_a_lora_policy_shares_its_frozen_base_weights_with_a_serving_model() -> None:
    from agentlightning_grpo import GRPOConfig, TrainablePolicy

    policy = TrainablePolicy(make_tiny_model(seed=1), GRPOConfig(lora_r=4))
    serving = make_tiny_model(seed=2)
    base = policy.frozen_base_weights()
    assert share_base_weights(serving, base)
    for name, param in serving.named_parameters():
        assert param.data_ptr() == base[name].data_ptr()
    # Tied weights stay tied, and a model of another shape is left alone.
    assert serving.lm_head.weight.data_ptr() == serving.model.embed_tokens.weight.data_ptr()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    other = Qwen2ForCausalLM(
        Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=VOCAB_SIZE,
        )
    )
    assert not share_base_weights(other, base)
