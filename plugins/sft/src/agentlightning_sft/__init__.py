"""SFT for Agent Lightning: iterative rejection-sampling fine-tuning on the agent's own best traces
(TRL's ``SFTTrainer`` + PEFT LoRA), and fine-tuning datasets out (``agl export-dataset``).

- :class:`SFT`: the algorithm (``Trainer(algorithm="sft")``);
- :class:`SFTConfig`: its training settings, validated;
- :mod:`agentlightning_sft.records`: the filter and the record format (torch-free);
- :func:`export_dataset`: a run's (or a store's) records as OpenAI chat JSONL or a ``datasets`` folder.

The names are imported on first use, so the plugin module (``agl export-dataset``) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .algorithm import SFT
    from .config import SFTConfig
    from .export import export_dataset
    from .learner import RoundTraining, SFTLearner
    from .records import FinishedRollout, InvalidRecordError, check_chat_record, reward_at_least

__all__ = [
    "SFT",
    "SFTConfig",
    "SFTLearner",
    "RoundTraining",
    "FinishedRollout",
    "InvalidRecordError",
    "check_chat_record",
    "reward_at_least",
    "export_dataset",
]

_HOMES = {
    "SFT": "algorithm",
    "SFTConfig": "config",
    "SFTLearner": "learner",
    "RoundTraining": "learner",
    "FinishedRollout": "records",
    "InvalidRecordError": "records",
    "check_chat_record": "records",
    "reward_at_least": "records",
    "export_dataset": "export",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
