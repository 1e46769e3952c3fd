"""Automatic prompt optimization (APO) for Agent Lightning: textual gradients and beam search over
several named ``PromptTemplate`` resources of one agent.

``Trainer(algorithm="apo", ...)`` (the ``apo`` entry point of ``agentlightning.algorithms``),
``agentlightning.algorithm.apo.APO`` (the 0.3 path) and ``agentlightning_apo.APO`` are the same class.
Names are imported on first use so that importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .algorithm import APO, METADATA_KEY, Candidate
    from .optimizer import Budget, BudgetExhausted, OptimizerEndpoint, OptimizerEndpointError
    from .prompts import (
        DEFAULT_APPEND_TEMPLATE,
        DEFAULT_CRITIQUE_TEMPLATE,
        DEFAULT_EDIT_TEMPLATE,
        DEFAULT_ONE_CALL_TEMPLATE,
        EditRejected,
        check_edited_prompt,
    )

__all__ = [
    "APO",
    "Candidate",
    "METADATA_KEY",
    "Budget",
    "BudgetExhausted",
    "OptimizerEndpoint",
    "OptimizerEndpointError",
    "DEFAULT_APPEND_TEMPLATE",
    "DEFAULT_CRITIQUE_TEMPLATE",
    "DEFAULT_EDIT_TEMPLATE",
    "DEFAULT_ONE_CALL_TEMPLATE",
    "EditRejected",
    "check_edited_prompt",
]

_HOMES = {
    "APO": "algorithm",
    "Candidate": "algorithm",
    "METADATA_KEY": "algorithm",
    "Budget": "optimizer",
    "BudgetExhausted": "optimizer",
    "OptimizerEndpoint": "optimizer",
    "OptimizerEndpointError": "optimizer",
    "DEFAULT_APPEND_TEMPLATE": "prompts",
    "DEFAULT_CRITIQUE_TEMPLATE": "prompts",
    "DEFAULT_EDIT_TEMPLATE": "prompts",
    "DEFAULT_ONE_CALL_TEMPLATE": "prompts",
    "EditRejected": "prompts",
    "check_edited_prompt": "prompts",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
