"""A LoRA adapter for the tiny test model (``agentlightning_testing.tiny_model``), built locally.

Needs torch, transformers and peft, so only the opt-in vLLM tests import it.
"""

from __future__ import annotations

from pathlib import Path


def build_lora_adapter(base: Path, path: Path, rank: int = 8, seed: int = 1) -> Path:
    """A PEFT LoRA adapter on the attention projections of ``base`` with random, non-zero weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    # init_lora_weights=False draws both A and B at random (the default zeroes B, a no-op adapter);
    # a large alpha makes the adapter's effect on a random model obvious.
    config = LoraConfig(
        r=rank,
        lora_alpha=rank * 8,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(path))
    return path
