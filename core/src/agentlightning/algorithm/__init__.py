"""Algorithms: the base class, ``@algo``, ``Baseline``, and the 0.3 shortcuts of plugin algorithms.

Algorithms are found by name with :func:`agentlightning.plugins.resolve` (``"algorithms"``), through
the ``agentlightning.algorithms`` entry point group. ``APO`` and ``VERL`` are the 0.3 lazy factories:
calling one builds the algorithm of the plugin that provides it, or says which distribution to install.
"""

from __future__ import annotations

from .base import Algorithm, FastAlgorithm
from .baseline import Baseline
from .chain import Chain
from .compat import AlgorithmNotInstalledError, LazyAlgorithm
from .decorator import FunctionalAlgorithm, algo

__all__ = [
    "Algorithm",
    "FastAlgorithm",
    "FunctionalAlgorithm",
    "Baseline",
    "Chain",
    "algo",
    "APO",
    "VERL",
    "AlgorithmNotInstalledError",
]

APO = LazyAlgorithm("agentlightning.algorithm.apo", "APO")
VERL = LazyAlgorithm("agentlightning.algorithm.verl", "VERL")
