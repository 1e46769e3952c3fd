"""0.3 module path of the prompt optimization (APO) algorithm, which ships in the ``agentlightning-apo``
plugin: ``from agentlightning.algorithm.apo import APO`` gives the class registered as ``"apo"``, or
an :class:`~agentlightning.algorithm.AlgorithmNotInstalledError` saying what to install."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "APO":
        from agentlightning.algorithm import algorithm_class

        return algorithm_class("apo")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
