"""Algorithms: the base class, ``@algo``, ``Baseline`` and lookup by name."""

from __future__ import annotations

from typing import Any, Dict, List

from agentlightning.plugins import UnknownComponentError

from .base import Algorithm, FastAlgorithm
from .baseline import Baseline
from .decorator import FunctionalAlgorithm, algo

__all__ = [
    "Algorithm",
    "FastAlgorithm",
    "FunctionalAlgorithm",
    "Baseline",
    "algo",
    "APO",
    "VERL",
    "AlgorithmNotInstalledError",
    "algorithm_class",
]

PLUGIN_PACKAGES: Dict[str, str] = {
    "apo": "agentlightning-apo",
    "grpo": "agentlightning-grpo",
    "sft": "agentlightning-sft",
    "verl": "agentlightning-verl",
}
"""Algorithms that ship as plugins, and the distribution that provides each."""


class AlgorithmNotInstalledError(UnknownComponentError):
    """A well-known algorithm whose plugin is not installed; the message says what to install."""

    def __init__(self, name: str, package: str, known: List[str]) -> None:
        super().__init__("algorithms", name, known)
        self.package = package
        self.args = (f"{self.args[0]}. The {name!r} algorithm comes with the {package} plugin: pip install {package}",)


def algorithm_class(name: str) -> type:
    """The algorithm class registered as ``name`` (see :func:`agentlightning.resolve_algorithm`).

    Raises :class:`AlgorithmNotInstalledError` (an ``UnknownComponentError``, a ``LookupError``)
    naming the package to install when a plugin algorithm such as ``"apo"`` is missing.
    """
    from agentlightning.plugins import resolve_algorithm

    try:
        return resolve_algorithm(name)
    except AlgorithmNotInstalledError:
        raise
    except UnknownComponentError as exc:
        package = PLUGIN_PACKAGES.get(name)
        if package is None:
            raise
        raise AlgorithmNotInstalledError(name, package, exc.known) from None


def _by_name(name: str, *args: Any, **kwargs: Any) -> Algorithm:
    algorithm: Algorithm = algorithm_class(name)(*args, **kwargs)
    return algorithm


def APO(*args: Any, **kwargs: Any) -> Algorithm:
    """The prompt optimization algorithm (``pip install agentlightning-apo``)."""
    return _by_name("apo", *args, **kwargs)


def VERL(*args: Any, **kwargs: Any) -> Algorithm:
    """The verl GRPO/PPO trainer (``pip install agentlightning-verl``)."""
    return _by_name("verl", *args, **kwargs)
