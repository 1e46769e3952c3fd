"""0.3 path of the verl (PPO/GRPO on GPUs) algorithm, which ships as the agentlightning-verl plugin.

``from agentlightning.algorithm.verl import VERL`` resolves the ``verl`` entry point of the
``agentlightning.algorithms`` group when the attribute is read, and says what to install when absent.
"""

from __future__ import annotations

from typing import Any

from .compat import load_plugin_algorithm


def __getattr__(name: str) -> Any:
    if name == "VERL":
        return load_plugin_algorithm("verl")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
