"""Token-level training data: one sequence per trajectory, with the tokens the model produced marked."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field, model_validator

__all__ = ["TokenSequence"]


class TokenSequence(BaseModel):
    """Exact token ids of (part of) a trajectory, ready for a policy-gradient update.

    ``token_ids`` is the prompt of the first call followed by everything after it: each model
    response and each piece of context added between calls (tool results, new user turns).
    ``loss_mask[i]`` is 1 when token ``i`` was sampled by the model, else 0. ``logprobs[i]`` is the
    log-probability the serving engine reported for a sampled token (``None`` when unknown or
    masked). ``prompt_length`` is the length of the first prompt; every masked-in token lies after it.
    """

    rollout_id: str
    attempt_id: Optional[str] = None
    token_ids: List[int]
    loss_mask: List[int]
    logprobs: List[Optional[float]]
    prompt_length: int
    reward: Optional[float] = None
    # Which LLM calls (span ids) this sequence covers, in order.
    span_ids: List[str] = Field(default_factory=list)
    metadata: Dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _aligned(self) -> "TokenSequence":
        n = len(self.token_ids)
        if len(self.loss_mask) != n or len(self.logprobs) != n:
            raise ValueError(
                f"token_ids ({n}), loss_mask ({len(self.loss_mask)}) and logprobs ({len(self.logprobs)}) "
                "must have the same length"
            )
        if not 0 <= self.prompt_length <= n:
            raise ValueError(f"prompt_length {self.prompt_length} is outside 0..{n}")
        return self

    @property
    def n_model_tokens(self) -> int:
        return sum(self.loss_mask)
