"""GRPO for Agent Lightning: group-relative advantages and a clipped policy-gradient update on the
exact token ids that agents produced through the proxy (multi-call trajectories, tool results masked).

Building blocks (the algorithm loop drives them):

- :func:`compute_group_advantages`: rewards of the rollouts of each task -> advantages;
- :class:`TrainablePolicy`: a causal LM with LoRA (PEFT) or full fine-tuning; ``update(sequences,
  advantages)`` runs one optimizer step and returns :class:`UpdateMetrics`; it exports the adapter or
  merged weights for the serving backend and saves/loads checkpoints;
- :class:`GRPOConfig`: every setting, validated.

The names are imported on first use, so the plugin module (``agl quickstart``) loads without torch;
using any of them imports torch. ``agentlightning`` itself never does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .advantages import FailedRolloutWarning, GroupAdvantages, RolloutReward, compute_group_advantages
    from .algorithm import GRPO
    from .batch import MicroBatch, PreparedBatch, build_micro_batches
    from .config import GRPOConfig
    from .policy import TrainablePolicy, UpdateMetrics, checkpoint_dir, latest_checkpoint, resolve_device
    from .update import PolicyLossTerms, clipped_policy_loss, detect_logit_selection, token_logprobs

__all__ = [
    "GRPO",
    "GRPOConfig",
    "RolloutReward",
    "GroupAdvantages",
    "FailedRolloutWarning",
    "compute_group_advantages",
    "MicroBatch",
    "PreparedBatch",
    "build_micro_batches",
    "TrainablePolicy",
    "UpdateMetrics",
    "checkpoint_dir",
    "latest_checkpoint",
    "resolve_device",
    "PolicyLossTerms",
    "clipped_policy_loss",
    "detect_logit_selection",
    "token_logprobs",
]

_HOMES = {
    "GRPO": "algorithm",
    "GRPOConfig": "config",
    "RolloutReward": "advantages",
    "GroupAdvantages": "advantages",
    "FailedRolloutWarning": "advantages",
    "compute_group_advantages": "advantages",
    "MicroBatch": "batch",
    "PreparedBatch": "batch",
    "build_micro_batches": "batch",
    "TrainablePolicy": "policy",
    "UpdateMetrics": "policy",
    "checkpoint_dir": "policy",
    "latest_checkpoint": "policy",
    "resolve_device": "policy",
    "PolicyLossTerms": "update",
    "clipped_policy_loss": "update",
    "detect_logit_selection": "update",
    "token_logprobs": "update",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
