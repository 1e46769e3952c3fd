"""Settings of a GRPO run: sampling groups, the clipped objective, LoRA, batching and the optimizer.

Bad values raise ``pydantic.ValidationError`` whose message names the field and the rejected value,
e.g. ``clip_eps_low: Input should be less than 1 [input_value=1.5]``.
"""

from __future__ import annotations

from typing import List, Literal, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["GRPOConfig", "DTypeName", "FinetuningMode"]

DTypeName = Literal["float32", "bfloat16", "float16"]
FinetuningMode = Literal["lora", "full"]


class GRPOConfig(BaseModel):
    """Everything the GRPO update needs to know; JSON-serializable, stored with every checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Sampling: each task is played ``group_size`` times; advantages compare the members of a group.
    group_size: int = Field(4, ge=1, description="Rollouts per task; advantages are relative within a group.")
    scale_rewards: bool = Field(True, description="Divide (reward - group mean) by the group's standard deviation.")
    advantage_eps: float = Field(1e-6, gt=0, description="Added to the group std before dividing.")

    # Objective.
    learning_rate: float = Field(1e-5, gt=0)
    clip_eps_low: float = Field(0.2, ge=0, lt=1, description="The ratio is clipped below at 1 - clip_eps_low.")
    clip_eps_high: float = Field(0.2, ge=0, description="The ratio is clipped above at 1 + clip_eps_high.")
    beta: float = Field(0.0, ge=0, description="Weight of the k3 KL penalty to the reference policy; 0 turns it off.")
    temperature: float = Field(
        1.0,
        gt=0,
        description="Logits are divided by it before the softmax: set it to the sampling temperature when the "
        "serving engine reports logprobs of the tempered distribution.",
    )

    # What is trained.
    finetuning: FinetuningMode = "lora"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    # Module names (suffixes) to adapt, or PEFT's "all-linear".
    lora_target_modules: Union[List[str], Literal["all-linear"]] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )

    # Batching.
    max_length: int = Field(4096, ge=2, description="Longer sequences keep their first max_length tokens.")
    # Bounds memory: besides activations, a micro-batch holds float32 logits for its model tokens,
    # up to micro_batch_tokens x vocab x 4 bytes (kept for the backward), e.g. 8192 x 152k = 5 GB
    # for Qwen2.5's vocabulary; lower it for large vocabularies.
    micro_batch_tokens: int = Field(
        8192, ge=2, description="Padded tokens (rows x longest row) per forward/backward; gradients accumulate."
    )
    gradient_checkpointing: bool = False

    # Optimizer (AdamW) and gradient clipping.
    max_grad_norm: Optional[float] = Field(1.0, gt=0, description="Clip the global grad norm; None turns it off.")
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)

    # Where and how.
    dtype: DTypeName = Field("float32", description="Dtype of the model weights (LoRA adapters stay float32).")
    device: Optional[str] = Field(None, description="torch device; None picks cuda when available, else cpu.")
    seed: int = 0

    @field_validator("lora_target_modules")
    @classmethod
    def _targets_not_empty(cls, value: Union[List[str], str]) -> Union[List[str], str]:
        if isinstance(value, list) and (not value or any(not name for name in value)):
            raise ValueError(f"lora_target_modules must name at least one module, got {value!r}")
        return value

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, value: Tuple[float, float]) -> Tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError(f"adam_betas must both lie in [0, 1), got {value!r}")
        return value
