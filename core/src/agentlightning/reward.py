"""Deprecated module: import the reward helpers from ``agentlightning`` (or ``agentlightning.emitter``)."""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any

from agentlightning.emitter.reward import (
    emit_reward,
    find_final_reward,
    find_reward_spans,
    get_reward_value,
    get_rewards_from_span,
    is_reward_span,
    reward,
)

__all__ = [
    "emit_reward",
    "find_final_reward",
    "find_reward_spans",
    "get_reward_value",
    "get_rewards_from_span",
    "is_reward_span",
    "reward",
]


class _CallableModule(types.ModuleType):
    """Importing this module makes ``agentlightning.reward`` the module rather than the decorator of
    that name; calling the module applies the decorator, so ``@agentlightning.reward`` keeps working."""

    def __call__(self, func: Any) -> Any:
        return reward(func)


sys.modules[__name__].__class__ = _CallableModule

warnings.warn(
    "agentlightning.reward is deprecated; import these names from agentlightning or agentlightning.emitter",
    DeprecationWarning,
    stacklevel=2,
)
