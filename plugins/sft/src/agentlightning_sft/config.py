"""Settings of an SFT run's training: what is trained, how records become tokens, and the optimizer.

Bad values raise ``pydantic.ValidationError`` whose message names the field and the rejected value,
e.g. ``epochs: Input should be greater than 0 [input_value=0]``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["SFTConfig", "RecordFormat", "FinetuningMode", "DTypeName"]

RecordFormat = Literal["messages", "tokens"]
FinetuningMode = Literal["lora", "full"]
DTypeName = Literal["float32", "bfloat16", "float16"]


class SFTConfig(BaseModel):
    """Everything one round's fine-tuning needs; JSON-serializable, stored with every checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # What the model learns from.
    record_format: RecordFormat = Field(
        "messages",
        description="'messages': one chat record per LLM call (TraceToMessages), tokenized by the model's chat "
        "template, loss on the answer; 'tokens': the exact token ids the model produced (TraceToTokenSequences), "
        "loss on model tokens only (tool results and other context masked).",
    )

    # What is trained.
    finetuning: FinetuningMode = "lora"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: Union[List[str], Literal["all-linear"]] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )

    # Optimization (each round trains on its own records with a fresh optimizer, as TRL's trainer does).
    learning_rate: float = Field(1e-4, gt=0)
    epochs: float = Field(1.0, gt=0, description="Passes over the round's records.")
    batch_size: int = Field(8, ge=1, description="Records per optimizer step (per device).")
    gradient_accumulation_steps: int = Field(1, ge=1)
    lr_scheduler_type: str = "constant"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: Optional[int] = Field(2048, ge=2, description="Longer records keep their first max_length tokens.")
    gradient_checkpointing: bool = False

    # Where and how.
    dtype: DTypeName = Field("float32", description="Dtype of the model weights (LoRA adapters stay float32).")
    device: Optional[str] = Field(None, description="torch device; None picks cuda when available, else cpu.")
    seed: int = 0
    trl_options: Dict[str, Any] = Field(
        default_factory=dict, description="Further keyword arguments of trl.SFTConfig (they override ours)."
    )

    @field_validator("lora_target_modules")
    @classmethod
    def _targets_not_empty(cls, value: Union[List[str], str]) -> Union[List[str], str]:
        if isinstance(value, list) and (not value or any(not name for name in value)):
            raise ValueError(f"lora_target_modules must name at least one module, got {value!r}")
        return value
