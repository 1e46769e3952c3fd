"""The ``ExecutionStrategy`` interface and the bundles it places."""

from __future__ import annotations

from typing import Awaitable, Protocol

from agentlightning.runner.base import ExecutionEvent
from agentlightning.store.base import LightningStore

__all__ = ["ExecutionStrategy", "AlgorithmBundle", "RunnerBundle"]


class AlgorithmBundle(Protocol):
    """Runs the algorithm against ``store``; sets nothing, returns when the algorithm is done."""

    def __call__(self, store: LightningStore, event: ExecutionEvent) -> Awaitable[None]: ...


class RunnerBundle(Protocol):
    """Runs runner number ``worker_id`` until ``event`` is set."""

    def __call__(self, store: LightningStore, worker_id: int, event: ExecutionEvent) -> Awaitable[None]: ...


class ExecutionStrategy:
    """Places one algorithm bundle and ``n_runners`` runner bundles, and stops them all cleanly."""

    n_runners: int = 1

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        raise NotImplementedError
