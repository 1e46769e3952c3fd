"""0.3 module paths of algorithms that now ship as plugins (``agentlightning.algorithm.apo.APO``):
resolved by name through the ``agentlightning.algorithms`` entry points; when the plugin is missing,
the error says what to install (:func:`agentlightning.plugins.install_hint`)."""

from __future__ import annotations

import importlib
from typing import Any

from agentlightning.plugins import UnknownComponentError, resolve

__all__ = ["AlgorithmNotInstalledError", "LazyAlgorithm", "load_plugin_algorithm"]


class AlgorithmNotInstalledError(UnknownComponentError):
    """An algorithm with a 0.3 path whose plugin is not installed; the message says what to install."""


def load_plugin_algorithm(name: str) -> type:
    """The class registered as algorithm ``name``, or :class:`AlgorithmNotInstalledError`."""
    try:
        algorithm: type = resolve("algorithms", name)
    except UnknownComponentError as exc:
        raise AlgorithmNotInstalledError(exc.kind, name, exc.known, exc.hint) from None
    return algorithm


class LazyAlgorithm:
    """A 0.3 top-level shortcut (``agl.APO(...)``): calling it imports ``module.attr`` and builds it."""

    def __init__(self, module: str, attr: str) -> None:
        self.module = module
        self.attr = attr

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<lazy algorithm {self.module}.{self.attr}>"
