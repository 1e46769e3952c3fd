"""Token-level training data: one sequence per trajectory, with the tokens the model produced marked."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field, model_validator

__all__ = ["TokenSequence"]


class TokenSequence(BaseModel):
    """Exact token ids of (part of) a trajectory for a policy-gradient update: ``loss_mask[i]`` is 1 for
    tokens the model sampled (with their ``logprobs``), 0 for prompts and context added between calls."""

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
