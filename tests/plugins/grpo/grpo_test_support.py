"""Helpers of the GRPO plugin's tests: a tiny Qwen2 built from a config (random weights, no tokenizer:
token ids are random ints) and synthetic trajectories."""

from __future__ import annotations

from typing import List, Optional

import torch

from agentlightning.adapter.sequence import TokenSequence

VOCAB_SIZE = 512


def make_tiny_model(seed: int = 0) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB_SIZE,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def make_sequence(
    rollout_id: str,
    *,
    prompt_length: int,
    segments: List[int],
    seed: int,
    reward: Optional[float] = None,
    logprob: Optional[float] = None,
) -> TokenSequence:
    """A trajectory: a prompt, then alternating model (odd segments masked in) and context tokens.

    ``segments=[4, 3, 5]`` is 4 model tokens, 3 context tokens (a tool result), 5 model tokens.
    Every model token gets ``logprob`` as its sampling logprob (None: unknown).
    """
    generator = torch.Generator().manual_seed(seed)
    total = prompt_length + sum(segments)
    token_ids = torch.randint(1, VOCAB_SIZE, (total,), generator=generator).tolist()
    loss_mask = [0] * prompt_length
    for index, length in enumerate(segments):
        loss_mask += [1 if index % 2 == 0 else 0] * length
    logprobs = [logprob if bit else None for bit in loss_mask]
    return TokenSequence(
        rollout_id=rollout_id,
        token_ids=token_ids,
        loss_mask=loss_mask,
        logprobs=logprobs,
        prompt_length=prompt_length,
        reward=reward,
    )
