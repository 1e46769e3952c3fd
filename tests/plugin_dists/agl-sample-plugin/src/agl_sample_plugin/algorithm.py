"""A tiny algorithm published through the ``agentlightning.algorithms`` entry point group."""

from __future__ import annotations

from typing import Any

from agl_sample_plugin import log_import

log_import(__name__)


class SampleAlgorithm:
    """Does nothing useful; it exists to be found by name."""

    name = "sample-algo"

    def __init__(self, **config: Any) -> None:
        self.config = config

    def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:
        return None
