"""0.3 module path of the verl (GRPO/PPO on GPUs) algorithm, which ships in the ``agentlightning-verl``
plugin: ``from agentlightning.algorithm.verl import VERL`` gives the class registered as ``"verl"``, or
an :class:`~agentlightning.algorithm.AlgorithmNotInstalledError` saying what to install."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "VERL":
        from agentlightning.algorithm import algorithm_class

        return algorithm_class("verl")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
