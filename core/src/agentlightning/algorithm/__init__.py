"""Algorithms: the base class, ``@algo``, ``Baseline`` and lookup by name."""

from __future__ import annotations

from typing import Any

from .base import Algorithm, FastAlgorithm
from .baseline import Baseline
from .decorator import FunctionalAlgorithm, algo

__all__ = ["Algorithm", "FastAlgorithm", "FunctionalAlgorithm", "Baseline", "algo", "APO", "VERL"]


def _by_name(name: str, *args: Any, **kwargs: Any) -> Algorithm:
    from agentlightning.plugins import resolve_algorithm

    algorithm: Algorithm = resolve_algorithm(name)(*args, **kwargs)
    return algorithm


def APO(*args: Any, **kwargs: Any) -> Algorithm:
    """The prompt optimization algorithm (``pip install agentlightning-apo``)."""
    return _by_name("apo", *args, **kwargs)


def VERL(*args: Any, **kwargs: Any) -> Algorithm:
    """The verl GRPO/PPO trainer (``pip install agentlightning-verl``)."""
    return _by_name("verl", *args, **kwargs)
