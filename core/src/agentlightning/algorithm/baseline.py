"""``Baseline``: runs every sample once and reports what happened; the default of ``Trainer.dev``."""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Set

from agentlightning.emitter import find_final_reward
from agentlightning.types import Dataset, Rollout, Span

from .base import FastAlgorithm

__all__ = ["Baseline", "RolloutReport"]

logger = logging.getLogger(__name__)


@dataclass
class RolloutReport:
    """What Baseline learned about one finished rollout."""

    rollout: Rollout
    final_reward: Optional[float]
    spans: List[Span] = field(default_factory=list)
    adapted: Any = None


class Baseline(FastAlgorithm):
    """Enqueue each train then val sample ``n_epochs`` times, keep at most ``max_queue_length``
    rollouts in flight, and record every finished rollout in :attr:`reports` (status, final
    reward, spans, and the adapter's output when an adapter is set). Nothing is learned.
    """

    def __init__(
        self,
        *,
        n_epochs: int = 1,
        max_queue_length: int = 4,
        span_verbosity: Literal["keys", "key_values", "none"] = "keys",
        **deprecated: Any,
    ) -> None:
        super().__init__()
        for name in deprecated:
            if name not in ("train_split", "polling_interval"):
                raise TypeError(f"Baseline() got an unexpected keyword argument {name!r}")
            warnings.warn(f"Baseline({name}=...) has no effect and is deprecated", DeprecationWarning, stacklevel=2)
        if n_epochs < 1:
            raise ValueError(f"n_epochs must be >= 1, got {n_epochs!r}")
        if max_queue_length < 1:
            raise ValueError(f"max_queue_length must be >= 1, got {max_queue_length!r}")
        self.n_epochs = n_epochs
        self.max_queue_length = max_queue_length
        self.span_verbosity = span_verbosity
        self.reports: List[RolloutReport] = []

    async def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> None:
        store = self.get_store()
        resources = self.get_initial_resources()
        if resources:
            await store.update_resources("default", resources)
        in_flight: Dict[str, asyncio.Task[List[Rollout]]] = {}
        for _ in range(self.n_epochs):
            for mode, dataset in (("train", train_dataset), ("val", val_dataset)):
                if dataset is None:
                    continue
                for index in range(len(dataset)):
                    while len(in_flight) >= self.max_queue_length:
                        await self._harvest(in_flight, first_only=True)
                    rollout = await store.enqueue_rollout(
                        input=dataset[index], mode="train" if mode == "train" else "val"
                    )
                    in_flight[rollout.rollout_id] = asyncio.ensure_future(
                        store.wait_for_rollouts(rollout_ids=[rollout.rollout_id])
                    )
        while in_flight:
            await self._harvest(in_flight, first_only=False)

    async def _harvest(self, in_flight: Dict[str, "asyncio.Task[List[Rollout]]"], first_only: bool) -> None:
        done: Set[asyncio.Task[List[Rollout]]]
        done, _ = await asyncio.wait(
            in_flight.values(), return_when=asyncio.FIRST_COMPLETED if first_only else asyncio.ALL_COMPLETED
        )
        for rollout_id in [rid for rid, task in in_flight.items() if task in done]:
            finished = in_flight.pop(rollout_id).result()
            if finished:
                await self._report(finished[0])

    async def _report(self, rollout: Rollout) -> None:
        store = self.get_store()
        spans = list(await store.query_spans(rollout.rollout_id, "latest"))
        adapted = None
        adapter = self._adapter_ref() if self._adapter_ref is not None else None
        if adapter is not None:
            try:
                adapted = adapter.adapt(spans)
            except Exception:  # an adapter bug must not stop the run; it is logged with the rollout id
                logger.exception("adapter %r failed on rollout %s", adapter, rollout.rollout_id)
        report = RolloutReport(rollout=rollout, final_reward=find_final_reward(spans), spans=spans, adapted=adapted)
        self.reports.append(report)
        logger.info(
            "rollout %s %s (mode=%s) final reward %s, %d spans",
            rollout.rollout_id,
            rollout.status,
            rollout.mode,
            report.final_reward,
            len(spans),
        )
        if self.span_verbosity != "none":
            for span in spans:
                detail: Any = sorted(span.attributes) if self.span_verbosity == "keys" else span.attributes
                logger.debug("  span #%d %s %s", span.sequence_id, span.name, detail)
