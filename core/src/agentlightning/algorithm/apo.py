"""0.3 path of the automatic prompt optimization (APO) algorithm, which ships as the agentlightning-apo plugin.

``from agentlightning.algorithm.apo import APO`` resolves the ``apo`` entry point of the
``agentlightning.algorithms`` group when the attribute is read, and says what to install when absent.
"""

from __future__ import annotations

from typing import Any

from .compat import load_plugin_algorithm


def __getattr__(name: str) -> Any:
    if name == "APO":
        return load_plugin_algorithm("apo")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
