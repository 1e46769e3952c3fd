"""``Chain``: several algorithms one after the other in one run, on one store (prompt, then weights)."""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from agentlightning.types import Dataset, NamedResources

from .base import Algorithm

__all__ = ["Chain"]


class Chain(Algorithm):
    """Run ``stages`` in order with the Trainer's store, runners, adapter and LLM proxy; each later stage
    starts from the latest resources in the store, so ``Chain(APO(...), GRPO(...))`` trains the weights
    with the optimized prompt."""

    def __init__(self, *stages: Algorithm) -> None:
        super().__init__()
        if not stages:
            raise ValueError("Chain needs at least one algorithm")
        for index, stage in enumerate(stages):
            if not isinstance(stage, Algorithm):
                raise TypeError(f"Chain stage {index} must be an Algorithm, got {type(stage).__name__}")
        self.stages: List[Algorithm] = list(stages)

    async def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> None:
        store = self.get_store()
        initial = self.get_initial_resources()
        for index, stage in enumerate(self.stages):
            if self._trainer_ref is not None and self._trainer_ref() is not None:
                stage.set_trainer(self.get_trainer())
            stage.set_store(store)
            if self._adapter_ref is not None:
                stage.set_adapter(self.get_adapter())
            stage.set_llm_proxy(self.get_llm_proxy())
            if index > 0:
                latest = await store.get_latest_resources()
                if latest is not None:
                    initial = {**(initial or {}), **latest.resources}
            stage.set_initial_resources(_copy(initial))
            if stage.is_async():
                await stage.run(train_dataset=train_dataset, val_dataset=val_dataset)  # type: ignore[misc]
            else:
                await asyncio.to_thread(stage.run, train_dataset=train_dataset, val_dataset=val_dataset)


def _copy(resources: Optional[NamedResources]) -> Optional[NamedResources]:
    return dict(resources) if resources is not None else None
