"""verl's PPO/GRPO trainer as an Agent Lightning algorithm (``Trainer(algorithm="verl")``).

- :class:`VERL`: the algorithm (entry point ``verl`` of ``agentlightning.algorithms``);
- :func:`build_verl_config`, :class:`VerlSettings`, :class:`VerlConfigError`: verl's config plus this
  product's settings, validated before anything starts;
- :func:`rows_from_spans`, :func:`rows_to_dataproto`: a rollout's spans -> verl's ``DataProto``;
- :class:`PolicyWorkers`: what the step loop asks of verl's workers; :class:`VerlRayWorkers` is the
  GPU implementation.

Names are imported on first use: this module imports without verl (or torch) installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .algorithm import VERL
    from .batch import BatchRow, TruncationCounts, rows_from_spans, rows_to_dataproto
    from .gpu import VerlRayWorkers
    from .settings import VerlConfigError, VerlSettings, build_verl_config
    from .workers import PolicyWorkers, WorkersFactory

__all__ = [
    "VERL",
    "BatchRow",
    "PolicyWorkers",
    "TruncationCounts",
    "VerlConfigError",
    "VerlRayWorkers",
    "VerlSettings",
    "WorkersFactory",
    "build_verl_config",
    "rows_from_spans",
    "rows_to_dataproto",
]

_HOMES = {
    "VERL": "algorithm",
    "BatchRow": "batch",
    "TruncationCounts": "batch",
    "rows_from_spans": "batch",
    "rows_to_dataproto": "batch",
    "VerlRayWorkers": "gpu",
    "VerlConfigError": "settings",
    "VerlSettings": "settings",
    "build_verl_config": "settings",
    "PolicyWorkers": "workers",
    "WorkersFactory": "workers",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
